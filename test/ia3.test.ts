// (IA)³: hand-computed values on a tiny layer, PEFT's default targets / shapes / file keys / JSON,
// merge and exact unmerge, a mixed batch, gradients, and save -> load, on the tiny HF fixtures.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, tensor, crossEntropy, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, type Tensor, type AdapterContext } from '../src/index.js';
import { Linear, Conv1D } from '../src/nn/layers.js';
import { Ia3Layer, resolveIa3 } from '../src/adapters/ia3/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const ctxOf = (active: string[]): AdapterContext => ({ active, disabled: false, rows: null, version: 0, slots: {}, composition: null });
const near = (t: Tensor, want: number[]) => { const got = [...t.data()].map(Number); got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) < 1e-6, `${got} vs ${want}`)); };

// W = [[1, 2, 3], [4, 5, 6]] (out 2, in 3), b = [0.5, -1], x = [1, 0, -1]: W x + b = [-1.5, -3] by hand.
function tiny(kind: 'linear' | 'conv1d') {
  const W = [[1, 2, 3], [4, 5, 6]];
  if (kind === 'linear') {
    const l = new Linear(3, 2);
    noGrad(() => { l.setParameter('weight', tensor(W), false); l.setParameter('bias', tensor([0.5, -1]), false); });
    return l;
  }
  const c = new Conv1D(3, 2);  // weight [in, out] = W transposed
  noGrad(() => { c.setParameter('weight', tensor([[1, 4], [2, 5], [3, 6]]), false); c.setParameter('bias', tensor([0.5, -1]), false); });
  return c;
}

test('hand-computed forward: output scaling (incl. bias), input scaling, two adapters multiply; Linear and Conv1D', () => tidy(() => {
  for (const kind of ['linear', 'conv1d'] as const) {
    const x = tensor([[1, 0, -1]]);
    // Non-feedforward, l = [2, 0.5]: [-1.5 * 2, -3 * 0.5] = [-3, -1.5].
    const ctx = ctxOf(['a']);
    const layer = new Ia3Layer(tiny(kind), ctx);
    layer.addAdapter('a', resolveIa3({ peftType: 'IA3', feedforwardModules: ['mlp.fc'] }), 'attn.k', { seed: 0 });
    assert.deepEqual(layer.vector('a').shape, [2, 1]);
    near(layer.forward(x), [-1.5, -3]);  // init ones: the base
    layer.loadAdapterState('a', new Map([['ia3_l', tensor([[2], [0.5]])]]), 'attn.k');
    near(layer.forward(x), [-3, -1.5]);
    // A second adapter l = [3, 1] multiplies: [-1.5 * 6, -3 * 0.5] = [-9, -1.5].
    layer.addAdapter('b', resolveIa3({ peftType: 'IA3', feedforwardModules: [] }), 'attn.k', { seed: 0 });
    layer.loadAdapterState('b', new Map([['ia3_l', tensor([[3], [1]])]]), 'attn.k');
    ctx.active = ['a', 'b'];
    near(layer.forward(x), [-9, -1.5]);
    // Merge: W' = diag(l) W, b' = l b for the product l = [6, 0.5]: rows [6, 12, 18], [2, 2.5, 3]; b' = [3, -0.5].
    layer.merge(['a', 'b']);
    const w = layer.base_layer.weight;
    near((kind === 'linear' ? w : w.transpose(0, 1).contiguous()), [6, 12, 18, 2, 2.5, 3]);
    near(layer.base_layer.bias!, [3, -0.5]);
    near(layer.forward(x), [-9, -1.5]);
    layer.unmerge();
    near(layer.base_layer.bias!, [0.5, -1]);
    // Feedforward (path ends with "mlp.fc"), l = [1, 2, 3] on the input: x ⊙ l = [1, 0, -3];
    // W (x ⊙ l) + b = [1 - 9 + 0.5, 4 - 18 - 1] = [-7.5, -15] (the bias is not scaled).
    const ff = new Ia3Layer(tiny(kind), ctxOf(['a']));
    ff.addAdapter('a', resolveIa3({ peftType: 'IA3', feedforwardModules: ['mlp.fc'] }), 'h.0.mlp.fc', { seed: 0 });
    assert.deepEqual(ff.vector('a').shape, [1, 3]);
    ff.loadAdapterState('a', new Map([['ia3_l', tensor([[1, 2, 3]])]]), 'h.0.mlp.fc');
    near(ff.forward(x), [-7.5, -15]);
    ff.merge(['a']);  // W' = W diag(l): [[1, 4, 9], [4, 10, 18]], bias unchanged
    near((kind === 'linear' ? ff.base_layer.weight : ff.base_layer.weight.transpose(0, 1).contiguous()), [1, 4, 9, 4, 10, 18]);
    near(ff.base_layer.bias!, [0.5, -1]);
    assert.throws(() => ff.loadAdapterState('a', new Map([['ia3_l', tensor([[1], [2], [3]])]]), 'h.0.mlp.fc'), /h\.0\.mlp\.fc\.ia3_l: the adapter has shape \[3, 1\] but this model needs \[1, 3\]/);
    layer.dispose();
    ff.dispose();
  }
}));

test('PEFT defaults: targets, feedforward, shapes and file keys (gpt2, llama, bert); JSON field names', () => tidy(() => {
  const cases: [string, Record<string, number[]>][] = [
    ['gpt2', { 'transformer.h.0.attn.c_attn': [96, 1], 'transformer.h.0.mlp.c_proj': [1, 128], 'transformer.h.1.attn.c_attn': [96, 1], 'transformer.h.1.mlp.c_proj': [1, 128] }],
    ['llama', { 'model.layers.0.self_attn.k_proj': [16, 1], 'model.layers.0.self_attn.v_proj': [16, 1], 'model.layers.0.mlp.down_proj': [1, 64] }],
    // "output.dense" is a plain suffix in PEFT's feedforward check: the attention output is feedforward too.
    ['bert-seqcls', { 'bert.encoder.layer.0.attention.self.key': [32, 1], 'bert.encoder.layer.0.attention.self.value': [32, 1], 'bert.encoder.layer.0.attention.output.dense': [1, 32], 'bert.encoder.layer.0.output.dense': [1, 64] }],
  ];
  for (const [fix, want] of cases) {
    const m = loadModel(join(HF, fix), { dtype: 'float32' });
    const x = ids();
    const base = logits(m, x);
    const peft = PeftModel.create(m, { peftType: 'IA3' });
    assert.equal(maxDiff(logits(m, x), base), 0, `${fix}: ones start as the base`);
    const dir = mkdtempSync(join(tmpdir(), 'ak-ia3-'));
    savePeftAdapters(peft, dir);
    const file = readSafetensors(join(dir, 'adapter_model.safetensors'));
    for (const [path, shape] of Object.entries(want)) assert.deepEqual(file.get(`base_model.model.${path}.ia3_l`)?.shape, shape, `${fix} ${path}`);
    assert.ok([...file.keys()].every((k) => /^base_model\.model\..*\.ia3_l$/.test(k)), [...file.keys()].join());
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(cfg.peft_type, 'IA3');
    for (const f of ['target_modules', 'feedforward_modules', 'fan_in_fan_out', 'init_ia3_weights', 'exclude_modules', 'modules_to_save', 'inference_mode']) assert.ok(f in cfg, f);
    assert.equal(cfg.fan_in_fan_out, fix === 'gpt2');
    if (fix === 'gpt2') assert.deepEqual([cfg.target_modules, cfg.feedforward_modules], [['c_attn', 'mlp.c_proj'], ['mlp.c_proj']]);
    peft.dispose();
  }
  assert.throws(() => resolveIa3({ peftType: 'IA3', targetModules: ['k_proj'], feedforwardModules: ['down_proj'] }), /feedforward_modules must be a subset of target_modules/);
}));

test('merge equals unmerged; unmerge restores bit for bit; mixed batch; gradients only on ia3_l; save -> load exact', () => tidy(() => {
  for (const fix of ['gpt2', 'llama']) {
    const m = loadModel(join(HF, fix), { dtype: 'float32' });
    const x = ids();
    const base = logits(m, x);
    const w0 = m.namedParameters().map(([n, t]) => [n, t.clone()] as const);
    const peft = PeftModel.create(m, { peftType: 'IA3', initIa3Weights: false }, { seed: 3 });
    peft.addAdapter('two', { peftType: 'IA3', initIa3Weights: false }, { seed: 4 });
    m.eval();
    const one = logits(m, x);
    assert.ok(maxDiff(one, base) > 1e-2);
    peft.merge();
    assert.ok(maxDiff(logits(m, x), one) < 1e-4, fix);
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
    // Gradients: only the active adapter's vectors.
    peft.setAdapter('default');
    m.train();
    crossEntropy(m.forward({ inputIds: x }).logits.reshape(-1, 96), x.reshape(-1)).backward();
    for (const [n, t] of m.namedParameters()) {
      const mine = /\.ia3_l\.default$/.test(n);
      assert.equal(t.requiresGrad, mine, n);
      if (mine) assert.ok(t.grad !== null && t.grad.abs().max().item() > 0, n);
      else assert.equal(t.grad, null, n);
    }
    m.eval();
    const dir = mkdtempSync(join(tmpdir(), 'ak-ia3-'));
    savePeftAdapters(peft, dir);
    const fresh = loadModel(join(HF, fix), { dtype: 'float32' });
    const back = loadPeftAdapter(fresh, dir);
    assert.equal(maxDiff(logits(fresh, x), one), 0, `${fix}: loaded == saved`);
    peft.dispose();
    back.dispose();
  }
}));

test('bf16 base: float32 vectors, output in the base dtype', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'bfloat16' });
  PeftModel.create(m, { peftType: 'IA3', initIa3Weights: false }, { seed: 1 });
  const l = m.getSubmodule('model.layers.0.mlp.down_proj') as Ia3Layer;
  assert.equal(l.vector('default').dtype, 'float32');
  assert.equal(l.base_layer.weight.dtype, 'bfloat16');
  const y = noGrad(() => l.forward(tensor([[[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3, 3.1, 3.2, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 1.9, 2, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3, 3.1, 3.2]]]).to('bfloat16')));
  assert.equal(y.dtype, 'bfloat16');
  m.dispose();
}));
