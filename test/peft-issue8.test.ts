// Issue 8, one test per numbered item: PEFT's semantics where adapterkit used to differ silently
// (checked against huggingface/peft's source: tuners/tuners_utils.py, tuners/lora/{layer,model,
// config}.py, utils/{other,save_and_load}.py). Every test here failed before the fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  tidy, noGrad, tensor, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, LoraLayer, addWeightedAdapter,
  type Tensor, type PretrainedModel,
} from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const CONF = join(root, 'test/fixtures/peft-conformance');
const f32 = (name: string) => loadModel(join(HF, name), { dtype: 'float32' });
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-i8-'));
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: PretrainedModel | PeftModel, x: Tensor, names?: (string | null)[]) =>
  noGrad(() => (m instanceof PeftModel ? m.forward({ inputIds: x, adapterNames: names }) : m.forward({ inputIds: x })).logits);
const diff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const json = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
const keys = (dir: string) => [...readSafetensors(join(dir, 'adapter_model.safetensors')).keys()].sort();

/** Moves every trainable tensor a little, as training would. */
function trainALittle(m: PretrainedModel, seed: number): void {
  noGrad(() => m.trainableParameters().forEach((t, i) => t.add_(t.clone().normal_(0, 0.2, seed + i))));
}

test('item 1: bias "all" / "lora_only": trained biases are saved with PEFT keys and loaded back', () => tidy(() => {
  for (const bias of ['all', 'lora_only'] as const) {
    const m = f32('gpt2');
    const peft = PeftModel.create(m, { r: 2, targetModules: ['c_attn'], bias, initLoraWeights: false }, { seed: 1 });
    trainALittle(m, 10);
    const want = logits(m, ids());
    const dir = tmp();
    savePeftAdapters(peft, dir);
    const k = keys(dir);
    assert.ok(k.includes('base_model.model.transformer.h.0.attn.c_attn.base_layer.bias'), `${bias}: wrapped bias under base_layer`);
    assert.equal(k.includes('base_model.model.transformer.h.0.ln_1.bias'), bias === 'all', `${bias}: other biases only with "all"`);
    const fresh = f32('gpt2');
    loadPeftAdapter(fresh, dir);
    assert.ok(diff(logits(fresh, ids()), want) < 1e-5, `${bias}: the reloaded model has the trained biases`);
    peft.dispose();
    fresh.dispose();
  }
}));

test('item 2: modules_to_save ["classifier", "score"] loads (score matches nothing); SEQ_CLS adds both heads as PEFT does', () => tidy(() => {
  const m = f32('bert-seqcls');
  const peft = PeftModel.create(m, { targetModules: ['query'], modulesToSave: ['classifier', 'score'] });
  assert.ok(m.namedParameters().some(([n]) => n === 'classifier.modules_to_save.default.weight'));
  const m2 = f32('bert-seqcls');
  const p2 = PeftModel.create(m2, { targetModules: ['query'], taskType: 'SEQ_CLS' });
  assert.deepEqual(p2.configs.get('default')!.modulesToSave, ['classifier', 'score']);
  assert.ok(m2.getParameter('classifier.modules_to_save.default.weight').requiresGrad, 'the head trains');
  peft.dispose();
  p2.dispose();
}));

test('item 3: lora_bias (saved, merged), exclude_modules honoured; unimplemented fields refused by name', () => tidy(() => {
  const m = f32('qwen2');
  const peft = PeftModel.create(m, { r: 2, targetModules: ['q_proj', 'k_proj', 'o_proj'], excludeModules: ['o_proj', 'model.layers.0.self_attn.k_proj'], loraBias: true, initLoraWeights: false }, { seed: 3 });
  assert.deepEqual(peft.tunerLayers().map(([p]) => p), ['model.layers.0.self_attn.q_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.k_proj']);
  const layer = m.getSubmodule('model.layers.0.self_attn.q_proj') as LoraLayer;
  assert.ok(layer.Bbias('default')!.abs().max().item() > 0);
  const x = ids();
  const un = logits(m, x);
  const noBias = peft.withAdaptersDisabled(() => logits(m, x));
  peft.merge();
  assert.ok(diff(logits(m, x), un) < 1e-5, 'the merge folds lora_B.bias * scaling into the base bias');
  peft.unmerge();
  assert.ok(diff(un, noBias) > 1e-3);
  const dir = tmp();
  savePeftAdapters(peft, dir);
  assert.ok(keys(dir).includes('base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias'));
  assert.equal(json(join(dir, 'adapter_config.json')).lora_bias, true);
  const fresh = f32('qwen2');
  loadPeftAdapter(fresh, dir);
  assert.ok(diff(logits(fresh, x), un) < 1e-5);
  for (const [field, value] of [['alora_invocation_tokens', [5, 6]], ['arrow_config', { top_k: 2 }], ['target_parameters', ['mlp.experts']], ['use_qalora', true], ['kasa_config', { r: 2 }]] as const) {
    const d = tmp();
    cpSync(join(CONF, 'qwen2-lora-bias-exclude'), d, { recursive: true });
    writeFileSync(join(d, 'adapter_config.json'), JSON.stringify({ ...json(join(d, 'adapter_config.json')), [field]: value }));
    assert.throws(() => loadPeftAdapter(f32('qwen2'), d), new RegExp(`"${field}" = .* is not supported`));
  }
  peft.dispose();
  fresh.dispose();
}));

test('item 3: trainable_token_indices: the rows replace the embedding rows, the tied head reads them, they train alone and round-trip', () => tidy(() => {
  const m = f32('gpt2');
  const x = ids();
  const base = logits(m, x);
  const peft = PeftModel.create(m, { targetModules: ['c_attn'], trainableTokenIndices: [61, 5] });
  assert.ok(diff(logits(m, x), base) < 1e-6, 'the rows start at their old values');
  assert.deepEqual(peft.tokenWrappers().map(([p, w]) => [p, w.isTied]), [['transformer.wte', false], ['lm_head', true]]);
  m.train();
  const out = m.forward({ inputIds: x }).logits;
  out.select(2, 61).sum().add(out.select(2, 7).sum()).backward();
  const delta = m.getParameter('transformer.wte.token_adapter.trainable_tokens_delta.default');
  assert.deepEqual(delta.shape, [2, 32]);
  assert.ok(delta.grad!.abs().max().item() > 0, 'the rows train');
  assert.equal(m.getParameter('transformer.wte.token_adapter.base_layer.weight').grad, null, 'the rest of the embedding does not');
  m.eval();
  noGrad(() => delta.add_(delta.clone().normal_(0, 1, 4)));
  const trained = logits(m, x);
  assert.ok(diff(trained, base) > 1e-2);
  // The tied head reads the new rows: a model whose single (tied) embedding holds them gives the same logits.
  const dir = tmp();
  savePeftAdapters(peft, dir);
  assert.ok(keys(dir).includes('base_model.model.transformer.wte.token_adapter.trainable_tokens_delta'));
  assert.ok(!keys(dir).some((k) => k.startsWith('base_model.model.lm_head')), 'the tied head saves nothing');
  const fresh = f32('gpt2');
  const back = loadPeftAdapter(fresh, dir);
  assert.ok(diff(logits(fresh, x), trained) < 1e-5);
  const mixed = logits(back, x, ['default', null]);
  assert.ok(diff(mixed.select(0, 0), trained.select(0, 0)) < 1e-5 && diff(mixed.select(0, 1), base.select(0, 1)) < 1e-5, 'mixed batch: rows per adapter');
  const merged = back.mergeAndUnload();
  assert.ok(merged.getParameter('lm_head.weight') === merged.getParameter('transformer.wte.weight'), 'still tied after unloading');
  assert.ok(diff(logits(merged, x), trained) < 1e-5);
  assert.throws(() => PeftModel.create(f32('llama'), { trainableTokenIndices: { nope: [1] } }), /"nope" matched no embedding/);
  peft.dispose();
  merged.dispose();
}));

test('item 3: layer_replication: shared-weight copies of layers, each with its own LoRA; generation with the cache; merge refused', async () => {
  const m = f32('llama');
  const w0 = m.getParameter('model.layers.0.self_attn.q_proj.weight');
  const peft = PeftModel.create(m, { targetModules: ['q_proj'], layerReplication: [[0, 2], [0, 1]], initLoraWeights: false }, { seed: 5 });
  assert.equal(m.numLayers, 3);
  assert.equal(m.config.num_hidden_layers, 3);
  assert.deepEqual(peft.tunerLayers().map(([p]) => p), ['model.layers.0.self_attn.q_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.2.self_attn.q_proj']);
  const l0 = m.getSubmodule('model.layers.0.self_attn.q_proj') as LoraLayer;
  const l2 = m.getSubmodule('model.layers.2.self_attn.q_proj') as LoraLayer;
  assert.ok(l0.base_layer.weight === w0 && l2.base_layer.weight === w0, 'copies share the base weight');
  assert.ok(diff(l0.A('default'), l2.A('default')) > 0, 'each copy has its own adapter');
  const x = ids();
  const { generate } = await import('../src/models/generate.js');
  const a = await generate(m, x, null, { maxNewTokens: 4 });
  const b = await generate(m, x, null, { maxNewTokens: 4, noCache: true });
  assert.deepEqual(a, b, 'the KV cache has a slot per replicated layer');
  assert.throws(() => peft.merge(), /cannot merge adapters into replicated layers/);
  assert.throws(() => PeftModel.create(f32('gpt2'), { layerReplication: [[0, 2]] }), /layer_replication is not supported for gpt2/);
  assert.throws(() => PeftModel.create(f32('llama'), { layerReplication: [[0, 3]] }), /\[0,3\] is not a range \[start, end\) of this model's 2 layers/);
  const bert = f32('bert-seqcls');
  const pb = PeftModel.create(bert, { targetModules: ['query'], layerReplication: [[1, 2], [0, 2]] });
  assert.deepEqual(pb.tunerLayers().map(([p]) => p).length, 3);
  peft.dispose();
  pb.dispose();
});

test('item 4: every init_lora_weights string PEFT writes loads; olora and pissa_niter_N create adapters that start as the base', () => tidy(() => {
  for (const init of ['pissa_niter_4', 'olora', 'eva', 'loftq', 'orthogonal', 'corda', 'gaussian', 'lora_ga', 'mica']) {
    const d = tmp();
    cpSync(join(CONF, 'llama-layer-int-olora'), d, { recursive: true });
    writeFileSync(join(d, 'adapter_config.json'), JSON.stringify({ ...json(join(d, 'adapter_config.json')), init_lora_weights: init }));
    loadPeftAdapter(f32('llama'), d).dispose();
  }
  for (const init of ['olora', 'pissa_niter_2'] as const) {
    const m = f32('llama');
    const x = ids();
    const before = logits(m, x);
    const w = m.getParameter('model.layers.0.self_attn.q_proj.weight').clone();
    const peft = PeftModel.create(m, { r: 4, initLoraWeights: init, targetModules: ['q_proj'] });
    assert.ok(diff(logits(m, x), before) < 1e-4, `${init}: base + adapter = the original at init`);
    assert.ok(diff((m.getSubmodule('model.layers.0.self_attn.q_proj') as LoraLayer).base_layer.weight, w) > 1e-3, `${init}: the base keeps a residual`);
    peft.dispose();
  }
  assert.throws(() => PeftModel.create(f32('llama'), { initLoraWeights: 'eva' }), /"eva" is not implemented for creating/);
}));

test('item 5: modules_to_save modules never get LoRA; all-linear leaves out the output embedding / SEQ_CLS head only', () => tidy(() => {
  const m = f32('roberta-seqcls');
  const peft = PeftModel.create(m, { targetModules: ['dense'], modulesToSave: ['classifier'] });
  const paths = peft.tunerLayers().map(([p]) => p);
  assert.ok(!paths.some((p) => p.startsWith('classifier')), 'classifier.dense is under modules_to_save');
  assert.equal(paths.length, 6);
  const tok = f32('bert-tokcls');
  const pt = PeftModel.create(tok, { targetModules: 'all-linear' });
  assert.ok(pt.tunerLayers().some(([p]) => p === 'classifier'), 'TOKEN_CLS-less all-linear keeps the classifier, as PEFT');
  const seq = f32('bert-seqcls');
  const ps = PeftModel.create(seq, { targetModules: 'all-linear', taskType: 'SEQ_CLS' });
  assert.ok(!ps.tunerLayers().some(([p]) => p.startsWith('classifier')));
  assert.ok(ps.tunerLayers().some(([p]) => p === 'bert.pooler.dense'), 'the pooler is an ordinary linear layer for PEFT');
  const lm = f32('llama');
  const pl = PeftModel.create(lm, { targetModules: 'all-linear' });
  assert.ok(!pl.tunerLayers().some(([p]) => p === 'lm_head'));
  for (const p of [peft, pt, ps, pl]) p.dispose();
}));

test('item 6: mixed batches route modules_to_save heads per row, accept "__base__", refuse merged adapters and training', () => tidy(() => {
  const m = f32('bert-seqcls');
  const peft = PeftModel.create(m, { targetModules: ['query'], modulesToSave: ['classifier'], initLoraWeights: false }, { seed: 1 });
  peft.addAdapter('b', { targetModules: ['value'], modulesToSave: ['classifier'], initLoraWeights: false }, { seed: 2 });
  noGrad(() => {
    for (const n of ['default', 'b']) {
      const w = m.getParameter(`classifier.modules_to_save.${n}.weight`);
      w.add_(w.clone().normal_(0, 1, n.length));
    }
  });
  m.eval();
  const x = ids();
  const alone = (n: string | null) => (n === null ? peft.withAdaptersDisabled(() => logits(m, x)) : (peft.setAdapter(n), logits(m, x)));
  const a = alone('default');
  const b = alone('b');
  const base = alone(null);
  const mixed = logits(peft, x, ['b', '__base__']);
  assert.ok(diff(mixed.select(0, 0), b.select(0, 0)) < 1e-5, 'row 0: adapter b with its own head');
  assert.ok(diff(mixed.select(0, 1), base.select(0, 1)) < 1e-5, 'row 1: the base and the original head');
  const mixed2 = logits(peft, x, ['default', 'b']);
  assert.ok(diff(mixed2.select(0, 0), a.select(0, 0)) < 1e-5 && diff(mixed2.select(0, 1), b.select(0, 1)) < 1e-5);
  peft.setAdapter('default');
  peft.merge();
  assert.throws(() => logits(peft, x, ['default', 'b']), /merged/);
  peft.unmerge();
  m.train();
  assert.throws(() => logits(peft, x, ['default', 'b']), /training mode/);
  peft.dispose();
}));

test('item 7: layers_pattern as a list, layers_to_transform as an int, list-only rule, written back as PEFT reads it', () => tidy(() => {
  const m = f32('gpt2');
  const peft = PeftModel.create(m, { targetModules: ['c_attn', 'transformer.h.0.mlp.c_fc'], layersToTransform: 1, layersPattern: ['layers', 'h'] });
  assert.deepEqual(peft.tunerLayers().map(([p]) => p), ['transformer.h.0.mlp.c_fc', 'transformer.h.1.attn.c_attn'], 'a target named in full is taken whatever its layer');
  const dir = tmp();
  savePeftAdapters(peft, dir);
  const cfg = json(join(dir, 'adapter_config.json'));
  assert.deepEqual(cfg.layers_pattern, ['layers', 'h']);
  assert.equal(cfg.layers_to_transform, 1);
  const m2 = f32('llama');
  assert.throws(() => PeftModel.create(m2, { targetModules: ['q_proj'], layersPattern: 'layers' }), /layers_to_transform must be set when layers_pattern is set/);
  peft.dispose();
  m2.dispose();
}));

test('item 8: with one active adapter merged and another not, the layer runs its merged base only (as PEFT)', () => tidy(() => {
  const m = f32('llama');
  const peft = PeftModel.create(m, { targetModules: ['q_proj'], initLoraWeights: false }, { seed: 1 });
  peft.addAdapter('b', { targetModules: ['q_proj'], initLoraWeights: false }, { seed: 2 });
  const x = ids();
  const onlyDefault = logits(m, x);
  peft.setAdapter(['default', 'b']);
  const both = logits(m, x);
  peft.merge(['default']);
  const got = logits(m, x);
  assert.ok(diff(got, onlyDefault) < 1e-5, 'the unmerged "b" adds nothing while "default" is merged');
  assert.ok(diff(got, both) > 1e-3);
  peft.dispose();
}));

test('item 9: add_weighted_adapter edge cases as PEFT: one adapter is linear, cat rank = sum of config ranks, svd_clamp, PEFT svd scaling on request', () => tidy(() => {
  const m = f32('llama');
  const peft = PeftModel.create(m, { r: 2, loraAlpha: 8, targetModules: ['q_proj'], initLoraWeights: false }, { seed: 1 });
  peft.addAdapter('b', { r: 3, loraAlpha: 3, targetModules: ['v_proj'], initLoraWeights: false }, { seed: 2 });
  assert.equal(addWeightedAdapter(peft, ['default'], [0.5], 'one', { combination: 'svd', svdRank: 1 }), 2, 'a single adapter combines linearly: its rank, not svdRank');
  assert.equal(addWeightedAdapter(peft, ['default', 'b'], [1, 1], 'cat', { combination: 'cat' }), 5, 'cat: r_a + r_b even where the two never share a layer');
  assert.throws(() => addWeightedAdapter(peft, ['default', 'b'], [1, 1], 'cat'), /"cat" already exists/);
  const q = m.getSubmodule('model.layers.0.self_attn.q_proj') as LoraLayer;
  addWeightedAdapter(peft, ['default'], [1], 'lin');
  addWeightedAdapter(peft, ['default', 'b'], [0.5, 1], 'svd-ours', { combination: 'svd', svdRank: 2 });
  addWeightedAdapter(peft, ['default', 'b'], [0.5, 1], 'svd-peft', { combination: 'svd', svdRank: 2, svdScaling: 'peft' });
  const s = q.scaling('default');  // 8 / 2 = 4
  const want = q.deltaWeight('default');
  assert.ok(diff(q.deltaWeight('svd-ours'), want.mul(0.5)) < 1e-4, 'ours: w ΔW');
  assert.ok(diff(q.deltaWeight('svd-peft'), want.mul(0.5 * s)) < 1e-4, "PEFT's: w s ΔW");
  addWeightedAdapter(peft, ['default', 'b'], [1, 1], 'clamped', { combination: 'svd', svdRank: 2, svdClamp: 0.5 });
  const hi = Math.max(q.A('clamped').abs().max().item(), q.B('clamped').abs().max().item());
  const un = Math.max(q.A('svd-ours').abs().max().item(), q.B('svd-ours').abs().max().item() / 0.5);
  assert.ok(hi < un, 'clamped to the median magnitude');
  peft.dispose();
}));

test('item 10: GPT-2 configs say fan_in_fan_out true; peft_version loads quietly; isTrainable false freezes modules_to_save copies', () => tidy(() => {
  const m = f32('gpt2');
  const peft = PeftModel.create(m, { targetModules: ['c_attn'] });
  const dir = tmp();
  savePeftAdapters(peft, dir);
  assert.equal(json(join(dir, 'adapter_config.json')).fan_in_fan_out, true);
  const warnings: string[] = [];
  const d2 = tmp();
  cpSync(join(CONF, 'roberta-seqcls-classifier-score'), d2, { recursive: true });
  const rm = f32('roberta-seqcls');
  loadPeftAdapter(rm, d2, { warn: (s) => warnings.push(s) });
  assert.deepEqual(warnings, []);
  assert.equal(rm.getParameter('classifier.modules_to_save.default.dense.weight').requiresGrad, false);
  assert.equal(rm.trainableParameters().length, 0);
  const rm2 = f32('roberta-seqcls');
  loadPeftAdapter(rm2, d2, { isTrainable: true });
  assert.equal(rm2.getParameter('classifier.modules_to_save.default.dense.weight').requiresGrad, true);
  for (const x of [peft, rm, rm2]) x.dispose();
}));

test('item 11: typed LoRA options: PEFT spellings are aliases, unknown keys are errors that name the right key', () => tidy(() => {
  const m = f32('llama');
  // @ts-expect-error PEFT's snake_case is not part of the typed options (a compile error) ...
  const peft = PeftModel.create(m, { lora_alpha: 32, target_modules: ['q_proj'] });
  // ... but at run time (YAML, JSON, plain JS) it is an alias, never silently ignored.
  const c = peft.configs.get('default') as unknown as { loraAlpha: number; targetModules: string[] };
  assert.equal(c.loraAlpha, 32);
  assert.deepEqual(c.targetModules, ['q_proj']);
  // @ts-expect-error a misspelt key does not compile
  assert.throws(() => PeftModel.create(f32('llama'), { loraAlhpa: 32 }), /unknown key "loraAlhpa" \(did you mean "loraAlpha"\?\)/);
  assert.throws(() => PeftModel.create(f32('llama'), { rank: 4 } as never), /unknown key "rank" \(did you mean "r"\?\)/);
  assert.throws(() => PeftModel.create(f32('llama'), { loraAlpha: 8, lora_alpha: 16 } as never), /both "lora_alpha" and "loraAlpha"/);
  peft.dispose();
}));
