// PEFT core: injection, LoRA semantics, many adapters, merging, and the PEFT format both ways,
// against PEFT-format adapters and merged-weight results written by scripts/make_peft_fixtures.py.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  tidy, noGrad, tensor, randint, crossEntropy, loadModel, score, PeftModel, savePeftAdapters, loadPeftAdapter, LoraLayer,
  readSafetensors, writeSafetensors, type Tensor, type PretrainedModel,
} from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const PEFT = join(root, 'test/fixtures/peft-ref');
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-peft-'));
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const json = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;

test('injection: default targets, HF/PEFT module paths, frozen base, trainable count', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const base = m.numParameters();
  const peft = PeftModel.create(m, { r: 4, loraAlpha: 8 });
  const paths = peft.tunerLayers().map(([p]) => p);
  assert.deepEqual(paths, ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
  const names = m.namedParameters().map(([n]) => n);
  assert.ok(names.includes('model.layers.0.self_attn.q_proj.lora_A.default.weight'));
  assert.ok(names.includes('model.layers.0.self_attn.q_proj.base_layer.weight'));
  // q_proj 32->32 and v_proj 32->16 (GQA): r(in + out) each.
  const trainable = 2 * (4 * (32 + 32) + 4 * (32 + 16));
  assert.equal(m.numParameters({ trainableOnly: true }), trainable);
  assert.equal(peft.printTrainableParameters(() => {}), `trainable params: ${trainable.toLocaleString("en-US")} || all params: ${(base + trainable).toLocaleString("en-US")} || trainable%: ${((100 * trainable) / (base + trainable)).toFixed(4)}`);
  // Regex, all-linear, layers_to_transform.
  const m2 = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const p2 = PeftModel.create(m2, { targetModules: ['k_proj', 'o_proj'], layersToTransform: [1] });
  assert.deepEqual(p2.tunerLayers().map(([p]) => p), ['model.layers.1.self_attn.k_proj', 'model.layers.1.self_attn.o_proj']);
  // PEFT's LoraConfig refuses layers_to_transform with a regex target (the regex must select layers itself).
  assert.throws(() => PeftModel.create(loadModel(join(HF, 'llama'), { dtype: 'float32' }), { targetModules: '.*\\.(k|o)_proj', layersToTransform: [1] }), /layers_to_transform must be null when target_modules is a string/);
  const m3 = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const p3 = PeftModel.create(m3, { targetModules: 'all-linear' });
  assert.equal(p3.tunerLayers().length, 8);  // c_attn, c_proj, c_fc, c_proj x 2 layers; lm_head excluded
  assert.throws(() => PeftModel.create(loadModel(join(HF, 'llama'), { dtype: 'float32' }), { targetModules: ['nope_proj'] }), /matched no module.*q_proj/);
  assert.throws(() => PeftModel.create(loadModel(join(HF, 'llama'), { dtype: 'float32' }), { r: 0 }), /r must be a positive integer/);
  for (const x of [m, m2, m3]) x.dispose();
}));

test('with B = 0 the output equals the base exactly; kaiming-uniform A bound 1/sqrt(in)', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const x = ids();
  const before = logits(m, x);
  const peft = PeftModel.create(m, { r: 4, targetModules: ['c_attn', 'c_fc'] });
  assert.equal(maxDiff(logits(m, x), before), 0);
  const layer = m.getSubmodule('transformer.h.0.attn.c_attn') as LoraLayer;
  const A = layer.A('default');
  assert.ok(A.abs().max().item() <= 1 / Math.sqrt(32));
  assert.ok(A.abs().max().item() > 0.5 / Math.sqrt(32));
  assert.equal(layer.B('default').abs().max().item(), 0);
  peft.dispose();
}));

function randomized(model: PretrainedModel, config: Record<string, unknown>): PeftModel {
  return PeftModel.create(model, { r: 4, loraAlpha: 8, initLoraWeights: false, ...config }, { seed: 7 });
}

test('merge equals unmerged within 1e-5; unmerge restores the base bit for bit; bf16 merges', () => tidy(() => {
  for (const fix of ['gpt2', 'llama']) {
    const m = loadModel(join(HF, fix), { dtype: 'float32' });
    const x = ids();
    const base = logits(m, x);
    const w0 = m.namedParameters().map(([n, t]) => [n, t.clone()] as const);
    const peft = randomized(m, { targetModules: 'all-linear' });
    const unmerged = logits(m, x);
    assert.ok(maxDiff(unmerged, base) > 1e-2, 'the adapter changes the output');
    peft.merge();
    assert.ok(maxDiff(logits(m, x), unmerged) < 1e-5);
    peft.unmerge();
    for (const [n, t] of w0) {
      const now = m.namedParameters().find(([k]) => k === n || k === n.replace(/\.(weight|bias)$/, '.base_layer.$1'));
      assert.ok(now, n);
      assert.deepEqual(now[1].data(), t.data(), `${n} restored exactly`);
    }
    assert.equal(maxDiff(logits(m, x), unmerged), 0);
    peft.dispose();
  }
  const bf = loadModel(join(HF, 'llama'), { dtype: 'bfloat16' });
  const x = ids();
  const pb = randomized(bf, {});
  const un = logits(bf, x).to('float32');
  pb.merge();
  assert.ok(maxDiff(logits(bf, x).to('float32'), un) < 0.15, 'bf16 merge is close (bf16 rounding)');
  pb.dispose();
}));

test('gradients reach only adapter parameters', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  randomized(m, { targetModules: ['c_attn'], modulesToSave: null, bias: 'none' });
  m.train();
  const x = ids();
  const out = m.forward({ inputIds: x }).logits;
  crossEntropy(out.reshape(-1, 96), x.reshape(-1)).backward();
  for (const [n, t] of m.namedParameters()) {
    const isLora = /lora_[AB]\.default\.weight$/.test(n);
    assert.equal(t.requiresGrad, isLora, n);
    const g = t.grad;
    if (isLora) assert.ok(g !== null && g.abs().max().item() > 0, `${n} has a gradient`);
    else assert.equal(g, null, `${n} has no gradient`);
  }
  m.dispose();
}));

test('many adapters: set, disable, delete, and a mixed batch equals each row alone', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const peft = randomized(m, { targetModules: ['q_proj', 'v_proj', 'down_proj'] });
  peft.addAdapter('two', { r: 2, loraAlpha: 4, initLoraWeights: false, targetModules: ['q_proj', 'o_proj'] }, { seed: 9 });
  const x = ids();
  const base = peft.withAdaptersDisabled(() => logits(m, x));
  const one = logits(m, x);
  peft.setAdapter('two');
  const two = logits(m, x);
  assert.ok(maxDiff(one, two) > 1e-2 && maxDiff(base, two) > 1e-2);
  const names: (string | null)[] = ['two', null];
  const mixed = noGrad(() => peft.forward({ inputIds: x, adapterNames: names }).logits);
  assert.ok(maxDiff(mixed.select(0, 0), two.select(0, 0)) < 1e-5);
  assert.ok(maxDiff(mixed.select(0, 1), base.select(0, 1)) < 1e-5);
  const mixed2 = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['default', 'two'] }).logits);
  assert.ok(maxDiff(mixed2.select(0, 0), one.select(0, 0)) < 1e-5);
  assert.ok(maxDiff(mixed2.select(0, 1), two.select(0, 1)) < 1e-5);
  assert.throws(() => peft.forward({ inputIds: x, adapterNames: ['nope', null] }), /no adapter "nope"/);
  assert.throws(() => peft.forward({ inputIds: x, adapterNames: ['two'] }), /1 entries for a batch of 2/);
  peft.setAdapter(['default', 'two']);
  const both = logits(m, x);
  assert.ok(maxDiff(both, one) > 1e-3);
  peft.deleteAdapter('two');
  assert.ok(maxDiff(logits(m, x), one) < 1e-6);
  assert.ok(!m.namedParameters().some(([n]) => n.includes('o_proj.lora')), 'o_proj had only "two": unwrapped again');
  peft.dispose();
}));

test('save -> load is exact; PEFT keys and config fields; non-default adapters in a subfolder', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const peft = randomized(m, { useDora: false, rankPattern: { down_proj: 2 }, targetModules: ['q_proj', 'down_proj'] });
  peft.addAdapter('other', { r: 3, initLoraWeights: false, targetModules: ['v_proj'] }, { seed: 3 });
  const x = ids();
  const want = logits(m, x);
  const dir = tmp();
  savePeftAdapters(peft, dir);
  const cfg = json(join(dir, 'adapter_config.json'));
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.r, 4);
  assert.deepEqual(cfg.rank_pattern, { down_proj: 2 });
  const keys = [...readSafetensors(join(dir, 'adapter_model.safetensors')).keys()].sort();
  assert.ok(keys.includes('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'));
  assert.ok(keys.every((k) => !k.includes('default')));
  assert.deepEqual(readSafetensors(join(dir, 'adapter_model.safetensors')).get('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight')!.shape, [32, 2]);
  assert.ok(json(join(dir, 'other', 'adapter_config.json')).r === 3);
  const fresh = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const back = loadPeftAdapter(fresh, dir);
  assert.equal(maxDiff(logits(fresh, x), want), 0);
  loadPeftAdapter(back, join(dir, 'other'), { adapterName: 'other' });
  assert.deepEqual(back.adapterNames(), ['default', 'other']);
  peft.dispose();
  back.dispose();
}));

for (const c of ['gpt2-lora', 'llama-lora-rslora-pattern', 'llama-dora']) {
  test(`${c}: an independently written PEFT adapter scores like that script's merged weights`, () => {
    const exp = json(join(PEFT, c, 'expected.json'));
    const idsRow = (exp.input_ids as number[][])[0]!;
    const want = exp.merged_logprobs as number[];
    const base = join(root, 'test/fixtures', exp.base_case as string);
    const r = spawnSync(process.execPath, [join(root, 'bin/adapterkit.js'), 'score', '--model', base, '--ids', idsRow.join(','), '--adapter', join(PEFT, c), '--json', '--dtype', 'float32'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout.trim().split('\n').pop()!) as { logprobs: number[]; nll: number };
    got.logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - want[i]!) < 1e-4, `${c} logprob ${i}: ${lp} vs ${want[i]}`));
    assert.ok(Math.abs(got.nll - (exp.merged_nll as number)) < 1e-4);
    // Library path, merged, agrees as well.
    const m = loadModel(base, { dtype: 'float32' });
    const peft = loadPeftAdapter(m, join(PEFT, c));
    peft.merge();
    score(m, idsRow).logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - want[i]!) < 1e-4));
    m.dispose();
  });
}

test('bert-seqcls-lora: modules_to_save classifier from a PEFT file', () => tidy(() => {
  const exp = json(join(PEFT, 'bert-seqcls-lora', 'expected.json'));
  const m = loadModel(join(HF, 'bert-seqcls'), { dtype: 'float32' });
  loadPeftAdapter(m, join(PEFT, 'bert-seqcls-lora'));
  const x = tensor(exp.input_ids as number[][], { dtype: 'int64' });
  const am = exp.attention_mask ? tensor(exp.attention_mask as number[][], { dtype: 'int64' }) : null;
  const tt = exp.token_type_ids ? tensor(exp.token_type_ids as number[][], { dtype: 'int64' }) : null;
  const got = noGrad(() => m.forward({ inputIds: x, attentionMask: am, tokenTypeIds: tt }).logits.select(0, 0));
  const want = tensor(exp.merged_logits as number[]);
  assert.ok(maxDiff(got, want) < 1e-4, `max diff ${maxDiff(got, want)}`);
  m.dispose();
}));

test('adapters made for another base, and malformed adapter folders, are clear errors', () => {
  const gpt = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  assert.throws(() => loadPeftAdapter(gpt, join(PEFT, 'llama-dora')), /matched no module/);
  gpt.dispose();
  // Same module names, other sizes: a shape mismatch names the key.
  const dir = tmp();
  cpSync(join(PEFT, 'gpt2-lora'), dir, { recursive: true });
  const w = readSafetensors(join(dir, 'adapter_model.safetensors'));
  w.set('base_model.model.transformer.h.1.attn.c_attn.lora_A.weight', randint(0, 3, [4, 31]).to('float32'));
  writeSafetensors(join(dir, 'adapter_model.safetensors'), w);
  const g2 = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  assert.throws(() => loadPeftAdapter(g2, dir), /transformer\.h\.1\.attn\.c_attn\.lora_A\.weight: the adapter has shape \[4, 31\] but this model needs \[4, 32\]/);
  assert.equal(g2.namedParameters().filter(([n]) => n.includes('lora')).length, 0, 'a failed load leaves the model as it was');
  const cfg = json(join(dir, 'adapter_config.json'));
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, peft_type: 'PROMPT_TUNING_X' }));
  assert.throws(() => loadPeftAdapter(g2, dir), /unsupported peft_type "PROMPT_TUNING_X"/);
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, lora_dropout: 2 }));
  assert.throws(() => loadPeftAdapter(g2, dir), /lora_dropout must be in \[0, 1\)/);
  const warned: string[] = [];
  writeFileSync(join(dir, 'adapter_config.json'), JSON.stringify({ ...cfg, brand_new_field: 3 }));
  cpSync(join(PEFT, 'gpt2-lora', 'adapter_model.safetensors'), join(dir, 'adapter_model.safetensors'));
  loadPeftAdapter(g2, dir, { warn: (s) => warned.push(s) });
  assert.ok(warned.some((s) => /brand_new_field/.test(s)), 'newer fields are tolerated with a warning');
  g2.dispose();
});

