// Hydra: hand-computed values on a tiny layer (both branches, merge), the LoRA-like init, merge and
// exact unmerge, a mixed batch, gradients, file keys and save -> load, on the tiny HF fixtures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, tensor, crossEntropy, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, type Tensor, type AdapterContext } from '../src/index.js';
import { Linear, Conv1D } from '../src/nn/layers.js';
import { HydraLayer, resolveHydra } from '../src/adapters/hydra/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const ctxOf = (active: string[]): AdapterContext => ({ active, disabled: false, rows: null, version: 0, slots: {}, composition: null });
const near = (t: Tensor, want: number[]) => { const got = [...t.data()].map(Number); got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) < 1e-5, `${got} vs ${want}`)); };

test('hand-computed forward and merge of both branches (Linear and Conv1D)', () => tidy(() => {
  for (const kind of ['linear', 'conv1d'] as const) {
    // W = [[1, 2, 3], [4, 5, 6]], b = [0.5, -1], x = [1, 0, -1]: base = W x + b = [-1.5, -3].
    const base = kind === 'linear' ? new Linear(3, 2) : new Conv1D(3, 2);
    noGrad(() => {
      base.setParameter('weight', kind === 'linear' ? tensor([[1, 2, 3], [4, 5, 6]]) : tensor([[1, 4], [2, 5], [3, 6]]), false);
      base.setParameter('bias', tensor([0.5, -1]), false);
    });
    const layer = new HydraLayer(base, ctxOf(['a']));
    layer.addAdapter('a', resolveHydra({ peftType: 'HYDRA', r: 1, hydraAlpha: 2 }), 'fc', { seed: 0 });
    const x = tensor([[1, 0, -1]]);
    near(layer.forward(x), [-1.5, -3]);  // B = 0: the base
    // A_p = [1, 0, 0], B_p = [2, 3]ᵀ: par = B_p (A_p x) = [2, 3]. A_s = [1, -1], B_s = [1, 0]ᵀ:
    // seq = B_s (A_s base) = B_s (-1.5 + 3) = [1.5, 0]. s = 2 / 1: y = base + 2 (par + seq) = [5.5, 3].
    layer.loadAdapterState('a', new Map([
      ['hydra_par_A.weight', tensor([[1, 0, 0]])], ['hydra_par_B.weight', tensor([[2], [3]])],
      ['hydra_seq_A.weight', tensor([[1, -1]])], ['hydra_seq_B.weight', tensor([[1], [0]])],
    ]), 'fc');
    near(layer.forward(x), [5.5, 3]);
    // W' = W + 2 B_p A_p + 2 B_s (A_s W) with A_s W = [-3, -3, -3]: [[-1, -4, -3], [10, 5, 6]];
    // b' = b + 2 B_s (A_s b) = [0.5 + 3, -1] = [3.5, -1].
    layer.merge(['a']);
    near(kind === 'linear' ? base.weight : base.weight.transpose(0, 1).contiguous(), [-1, -4, -3, 10, 5, 6]);
    near(base.bias!, [3.5, -1]);
    near(layer.forward(x), [5.5, 3]);
    layer.unmerge();
    near(base.bias!, [0.5, -1]);
    assert.throws(() => layer.loadAdapterState('a', new Map([['hydra_par_A.weight', tensor([[1, 0]])]]), 'fc'), /fc\.hydra_par_A\.weight: the adapter has shape \[1, 2\] but this model needs \[1, 3\]/);
    layer.dispose();
  }
}));

test('init (kaiming-uniform A, zero B: the base), file keys and shapes, JSON field names', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const x = ids();
  const base = logits(m, x);
  const peft = PeftModel.create(m, { peftType: 'HYDRA', r: 4, hydraAlpha: 8 });
  assert.deepEqual(peft.tunerLayers().map(([p]) => p), ['model.layers.0.self_attn.q_proj', 'model.layers.0.self_attn.v_proj', 'model.layers.1.self_attn.q_proj', 'model.layers.1.self_attn.v_proj']);
  assert.equal(maxDiff(logits(m, x), base), 0);
  const v = m.getSubmodule('model.layers.0.self_attn.v_proj') as HydraLayer;  // 32 -> 16
  const { Ap, Bp, As, Bs } = v.weights('default');
  assert.ok(Ap.abs().max().item() <= 1 / Math.sqrt(32) && Ap.abs().max().item() > 0.5 / Math.sqrt(32));
  assert.ok(As.abs().max().item() <= 1 / Math.sqrt(16) && As.abs().max().item() > 0.5 / Math.sqrt(16));
  assert.equal(Bp.abs().max().item() + Bs.abs().max().item(), 0);
  const dir = mkdtempSync(join(tmpdir(), 'ak-hydra-'));
  savePeftAdapters(peft, dir);
  const file = readSafetensors(join(dir, 'adapter_model.safetensors'));
  const p = 'base_model.model.model.layers.0.self_attn.v_proj.';
  assert.deepEqual([file.get(p + 'hydra_par_A.weight')?.shape, file.get(p + 'hydra_par_B.weight')?.shape, file.get(p + 'hydra_seq_A.weight')?.shape, file.get(p + 'hydra_seq_B.weight')?.shape], [[4, 32], [16, 4], [4, 16], [16, 4]]);
  assert.equal(file.size, 16);
  const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual([cfg.peft_type, cfg.r, cfg.hydra_alpha, cfg.hydra_dropout, cfg.init_hydra_weights], ['HYDRA', 4, 8, 0, true]);
  assert.throws(() => resolveHydra({ peftType: 'HYDRA', r: 0 }), /r must be a positive integer, got 0/);
  assert.throws(() => resolveHydra({ peftType: 'HYDRA', alpha: 3 } as never), /did you mean "hydraAlpha"/);
  peft.dispose();
}));

test('merge equals unmerged; unmerge exact; mixed batch; gradients only on hydra weights; save -> load exact', () => tidy(() => {
  for (const fix of ['gpt2', 'llama']) {
    const m = loadModel(join(HF, fix), { dtype: 'float32' });
    const x = ids();
    const base = logits(m, x);
    const w0 = m.namedParameters().map(([n, t]) => [n, t.clone()] as const);
    const peft = PeftModel.create(m, { peftType: 'HYDRA', r: 4, hydraAlpha: 8, initHydraWeights: false, targetModules: 'all-linear' }, { seed: 3 });
    peft.addAdapter('two', { peftType: 'HYDRA', r: 2, initHydraWeights: false }, { seed: 4 });
    m.eval();
    const one = logits(m, x);
    assert.ok(maxDiff(one, base) > 1e-2);
    peft.setAdapter(['default', 'two']);
    const both = logits(m, x);
    peft.merge();
    assert.ok(maxDiff(logits(m, x), both) < 1e-4, `${fix}: merging two adapters gives their unmerged sum`);
    peft.unmerge();
    const now = new Map(m.namedParameters());
    for (const [n, t] of w0) if (now.has(n)) assert.equal(maxDiff(now.get(n)!, t), 0, n);
    peft.setAdapter('two');
    const two = logits(m, x);
    const mixed = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['two', null] }).logits);
    assert.ok(maxDiff(mixed.select(0, 0), two.select(0, 0)) < 1e-5);
    assert.ok(maxDiff(mixed.select(0, 1), base.select(0, 1)) < 1e-5);
    const mixed2 = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['default', 'two'] }).logits);
    assert.ok(maxDiff(mixed2.select(0, 0), one.select(0, 0)) < 1e-5);
    assert.ok(maxDiff(mixed2.select(0, 1), two.select(0, 1)) < 1e-5);
    peft.setAdapter('default');
    m.train();
    crossEntropy(m.forward({ inputIds: x }).logits.reshape(-1, 96), x.reshape(-1)).backward();
    for (const [n, t] of m.namedParameters()) {
      const mine = /\.hydra_(par|seq)_[AB]\.default\.weight$/.test(n);
      assert.equal(t.requiresGrad, mine, n);
      if (mine) assert.ok(t.grad !== null && t.grad.abs().max().item() > 0, n);
      else assert.equal(t.grad, null, n);
    }
    m.eval();
    const dir = mkdtempSync(join(tmpdir(), 'ak-hydra-'));
    savePeftAdapters(peft, dir);
    const fresh = loadModel(join(HF, fix), { dtype: 'float32' });
    const back = loadPeftAdapter(fresh, dir);
    assert.equal(maxDiff(logits(fresh, x), one), 0, `${fix}: loaded == saved`);
    peft.dispose();
    back.dispose();
  }
}));

test('bf16 base: float32 branches, output in the base dtype, merge close to unmerged', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'bfloat16' });
  const peft = PeftModel.create(m, { peftType: 'HYDRA', r: 2, initHydraWeights: false }, { seed: 2 });
  m.eval();
  const l = m.getSubmodule('transformer.h.0.attn.c_attn') as HydraLayer;
  assert.equal(l.weights('default').As.dtype, 'float32');
  const x = ids();
  const y = logits(m, x);
  assert.equal(y.dtype, 'bfloat16');
  peft.merge();
  assert.equal(l.base_layer.weight.dtype, 'bfloat16');
  assert.ok(maxDiff(logits(m, x).to('float32'), y.to('float32')) < 0.1);
  peft.dispose();
}));
