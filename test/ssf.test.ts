// SSF: hand-computed values on a tiny Linear and LayerNorm, the paper's init, merge (refused without
// a bias) and exact unmerge, a mixed batch, gradients, save -> load, on the tiny HF fixtures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, tensor, crossEntropy, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, type Tensor, type AdapterContext } from '../src/index.js';
import { Linear, LayerNorm } from '../src/nn/layers.js';
import { SsfLayer, resolveSsf } from '../src/adapters/ssf/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const ctxOf = (active: string[]): AdapterContext => ({ active, disabled: false, rows: null, version: 0, slots: {}, composition: null });
const near = (t: Tensor, want: number[]) => { const got = [...t.data()].map(Number); got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) < 1e-5, `${got} vs ${want}`)); };
const state = (scale: number[], shift: number[]) => new Map([['ssf_scale', tensor(scale)], ['ssf_shift', tensor(shift)]]);
const identity = resolveSsf({ peftType: 'SSF', initSsfWeights: 'identity' });

test('hand-computed forward and merge: Linear (two adapters in order) and LayerNorm', () => tidy(() => {
  // W = [[1, 2, 3], [4, 5, 6]], b = [0.5, -1], x = [1, 0, -1]: W x + b = [-1.5, -3].
  const lin = new Linear(3, 2);
  noGrad(() => { lin.setParameter('weight', tensor([[1, 2, 3], [4, 5, 6]]), false); lin.setParameter('bias', tensor([0.5, -1]), false); });
  const ctx = ctxOf(['a']);
  const layer = new SsfLayer(lin, ctx);
  layer.addAdapter('a', identity, 'fc', { seed: 0 });
  const x = tensor([[1, 0, -1]]);
  near(layer.forward(x), [-1.5, -3]);  // identity init: the base
  // γ = [2, 0.5], β = [1, -1]: [-1.5 * 2 + 1, -3 * 0.5 - 1] = [-2, -2.5].
  layer.loadAdapterState('a', state([2, 0.5], [1, -1]), 'fc');
  near(layer.forward(x), [-2, -2.5]);
  // Then γ₂ = [1, 2], β₂ = [0, 1]: [-2, -2.5 * 2 + 1] = [-2, -4].
  layer.addAdapter('b', identity, 'fc', { seed: 0 });
  layer.loadAdapterState('b', state([1, 2], [0, 1]), 'fc');
  ctx.active = ['a', 'b'];
  near(layer.forward(x), [-2, -4]);
  // Merge a then b: W' = diag(γ₂ γ₁) W = [[2, 4, 6], [4, 5, 6]]; b' = γ₂ (γ₁ b + β₁) + β₂ = [2, -2].
  layer.merge(['a', 'b']);
  near(lin.weight, [2, 4, 6, 4, 5, 6]);
  near(lin.bias!, [2, -2]);
  near(layer.forward(x), [-2, -4]);
  layer.unmerge();
  near(lin.weight, [1, 2, 3, 4, 5, 6]);
  near(lin.bias!, [0.5, -1]);
  // LayerNorm (eps 0) of [1, 3] is [-1, 1]; weight [2, 1], bias [0.5, 0]: [-1.5, 1]; γ = [2, 3], β = [1, 1]: [-2, 4].
  const ln = new LayerNorm(2, 0);
  noGrad(() => { ln.setParameter('weight', tensor([2, 1]), false); ln.setParameter('bias', tensor([0.5, 0]), false); });
  const nl = new SsfLayer(ln, ctxOf(['a']));
  nl.addAdapter('a', identity, 'ln', { seed: 0 });
  nl.loadAdapterState('a', state([2, 3], [1, 1]), 'ln');
  near(nl.forward(tensor([[1, 3]])), [-2, 4]);
  nl.merge(['a']);  // w' = γ w = [4, 3], b' = γ b + β = [2, 1]
  near(ln.weight, [4, 3]);
  near(ln.bias!, [2, 1]);
  assert.throws(() => nl.loadAdapterState('a', state([1, 2, 3], [0, 0, 0]), 'ln'), /ln\.ssf_scale: the adapter has shape \[3\] but this model needs \[2\]/);
  // A bias-free Linear cannot take the shift.
  const nb = new SsfLayer(new Linear(3, 2, { bias: false }), ctxOf(['a']));
  nb.addAdapter('a', identity, 'model.q_proj', { seed: 0 });
  assert.throws(() => nb.merge(['a']), /cannot merge SSF adapter "a" into model\.q_proj: its Linear has no bias/);
  for (const m of [layer, nl, nb]) m.dispose();
}));

test("the paper's init: scale ~ N(1, 0.02), shift ~ N(0, 0.02), seeded by seed and path; default targets; JSON", () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const peft = PeftModel.create(m, { peftType: 'SSF' }, { seed: 5 });
  assert.deepEqual(peft.tunerLayers().map(([p]) => p).filter((p) => p.includes('h.0.')), ['transformer.h.0.attn.c_attn', 'transformer.h.0.attn.c_proj', 'transformer.h.0.mlp.c_fc', 'transformer.h.0.mlp.c_proj']);
  const l0 = m.getSubmodule('transformer.h.0.mlp.c_fc') as SsfLayer;  // 128 features
  const s = l0.scale('default');
  const mean = s.mean().item();
  const std = s.sub(mean).square().mean().sqrt().item();
  assert.ok(Math.abs(mean - 1) < 0.01 && std > 0.012 && std < 0.03, `scale mean ${mean} std ${std}`);
  const b = l0.shift('default');
  assert.ok(Math.abs(b.mean().item()) < 0.01 && b.abs().max().item() < 0.12);
  const l1 = m.getSubmodule('transformer.h.1.mlp.c_fc') as SsfLayer;
  assert.ok(maxDiff(l1.scale('default'), s) > 1e-3, 'another path draws other values');
  const again = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  PeftModel.create(again, { peftType: 'SSF' }, { seed: 5 });
  assert.equal(maxDiff((again.getSubmodule('transformer.h.0.mlp.c_fc') as SsfLayer).scale('default'), s), 0, 'same seed, same values');
  const dir = mkdtempSync(join(tmpdir(), 'ak-ssf-'));
  savePeftAdapters(peft, dir);
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg.peft_type, 'SSF');
  assert.equal(cfg.init_ssf_weights, 'normal');
  for (const f of ['target_modules', 'exclude_modules', 'layers_to_transform', 'modules_to_save', 'inference_mode']) assert.ok(f in cfg, f);
  const file = readSafetensors(join(dir, 'adapter_model.safetensors'));
  assert.deepEqual(file.get('base_model.model.transformer.h.0.attn.c_attn.ssf_scale')?.shape, [96]);
  assert.deepEqual(file.get('base_model.model.transformer.h.0.attn.c_attn.ssf_shift')?.shape, [96]);
  assert.throws(() => resolveSsf({ peftType: 'SSF', initSsfWeights: 'zeros' as never }), /init_ssf_weights must be "normal" or "identity"/);
  peft.dispose();
  again.dispose();
}));

test('merge equals unmerged (linears and LayerNorms); unmerge exact; bias-free refused; mixed batch; gradients; save -> load', () => tidy(() => {
  for (const [fix, targets] of [['gpt2', null], ['gpt2', ['c_attn', 'ln_1', 'ln_f']], ['bert-seqcls', null], ['llama', ['q_proj', 'input_layernorm', 'norm']]] as const) {
    const m = loadModel(join(HF, fix), { dtype: 'float32' });
    const x = ids();
    const base = logits(m, x);
    const w0 = m.namedParameters().map(([n, t]) => [n, t.clone()] as const);
    const peft = PeftModel.create(m, { peftType: 'SSF', targetModules: targets === null ? null : [...targets] }, { seed: 3 });
    peft.addAdapter('two', { peftType: 'SSF', targetModules: targets === null ? null : [...targets] }, { seed: 4 });
    m.eval();
    const one = logits(m, x);
    assert.ok(maxDiff(one, base) > 1e-3, fix);
    if (fix === 'llama') {
      assert.throws(() => peft.merge(), /has no bias to take the shift/);
      peft.unmerge();
    } else {
      peft.merge();
      assert.ok(maxDiff(logits(m, x), one) < 1e-4, fix);
      peft.unmerge();
    }
    const now = new Map(m.namedParameters());
    for (const [n, t] of w0) if (now.has(n)) assert.equal(maxDiff(now.get(n)!, t), 0, `${fix} ${n}`);
    assert.ok(maxDiff(logits(m, x), one) < 1e-6);
    peft.setAdapter('two');
    const two = logits(m, x);
    const mixed = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['two', null] }).logits);
    assert.ok(maxDiff(mixed.select(0, 0), two.select(0, 0)) < 1e-5);
    assert.ok(maxDiff(mixed.select(0, 1), base.select(0, 1)) < 1e-5);
    const mixed2 = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['default', 'two'] }).logits);
    assert.ok(maxDiff(mixed2.select(0, 0), one.select(0, 0)) < 1e-5);
    assert.ok(maxDiff(mixed2.select(0, 1), two.select(0, 1)) < 1e-5);
    peft.setAdapter('default');
    if (fix !== 'bert-seqcls') {
      m.train();
      crossEntropy(m.forward({ inputIds: x }).logits.reshape(-1, 96), x.reshape(-1)).backward();
      for (const [n, t] of m.namedParameters()) {
        const mine = /\.ssf_(scale|shift)\.default$/.test(n);
        assert.equal(t.requiresGrad, mine, n);
        if (mine) assert.ok(t.grad !== null && t.grad.abs().max().item() > 0, n);
        else assert.equal(t.grad, null, n);
      }
      m.eval();
    }
    const dir = mkdtempSync(join(tmpdir(), 'ak-ssf-'));
    savePeftAdapters(peft, dir);
    const fresh = loadModel(join(HF, fix), { dtype: 'float32' });
    const back = loadPeftAdapter(fresh, dir);
    assert.equal(maxDiff(logits(fresh, x), one), 0, `${fix}: loaded == saved`);
    peft.dispose();
    back.dispose();
  }
}));

test('bf16 base: float32 scale/shift, output in the base dtype, merge close to unmerged', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'bfloat16' });
  const peft = PeftModel.create(m, { peftType: 'SSF' }, { seed: 2 });
  m.eval();
  const l = m.getSubmodule('transformer.h.0.attn.c_attn') as SsfLayer;
  assert.equal(l.scale('default').dtype, 'float32');
  const x = ids();
  const y = logits(m, x);
  assert.equal(y.dtype, 'bfloat16');
  peft.merge();
  assert.equal(l.base_layer.weight.dtype, 'bfloat16');
  assert.ok(maxDiff(logits(m, x).to('float32'), y.to('float32')) < 0.1);
  peft.dispose();
}));
