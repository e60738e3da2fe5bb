// PaCA: the layer computes with W whose chosen columns are P (Linear and Conv1D), a training step moves
// only those columns, merge writes P into them exactly and unmerge restores, the file keys, save -> load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, keep, tensor, randn, crossEntropy, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, type Tensor, type AdapterContext } from '../src/index.js';
import { Linear, Conv1D } from '../src/nn/layers.js';
import { PacaLayer, resolvePaca, seededColumns } from '../src/adapters/paca/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const ctxOf = (active: string[]): AdapterContext => ({ active, disabled: false, rows: null, version: 0, slots: {}, composition: null });
const arr = (t: Tensor) => [...t.to('float32', 'cpu').data()].map(Number);

test('seeded columns: distinct, sorted, reproducible, r checked', () => {
  const a = seededColumns(10, 4, 7);
  assert.deepEqual(a, seededColumns(10, 4, 7));
  assert.equal(new Set(a).size, 4);
  assert.deepEqual(a, [...a].sort((x, y) => x - y));
  assert.ok(a.every((c) => c >= 0 && c < 10));
  assert.notDeepEqual(seededColumns(100, 4, 7), seededColumns(100, 4, 8));
  assert.throws(() => seededColumns(3, 4, 0), /cannot choose 4 of 3 columns/);
  assert.throws(() => resolvePaca({ peftType: 'PACA', r: 0 }), /r must be a positive integer, got 0/);
});

test('forward = the base with columns S replaced by P (Linear and Conv1D); merge writes P exactly; unmerge restores', () => tidy(() => {
  for (const kind of ['linear', 'conv1d'] as const) {
    const W = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];  // (O=3, I=4)
    const base = kind === 'linear' ? new Linear(4, 3) : new Conv1D(4, 3);
    noGrad(() => {
      base.setParameter('weight', kind === 'linear' ? tensor(W) : tensor(W).transpose(0, 1).contiguous(), false);
      base.setParameter('bias', tensor([0.5, -1, 2]), false);
    });
    const layer = new PacaLayer(base, ctxOf(['a']));
    layer.addAdapter('a', resolvePaca({ peftType: 'PACA', r: 2 }), 'fc', { seed: 1 });
    const S = layer.indices('a');
    assert.equal(S.length, 2);
    // P starts as W[:, S]: the layer starts as the base.
    assert.deepEqual(arr(layer.block('a')), W.flatMap((row) => S.map((c) => row[c]!)));
    const x = tensor([[1, -1, 2, 0.5]]);
    assert.ok(maxDiff(layer.forward(x), base.forward(x)) < 1e-6);
    // P = [[10, 20], [30, 40], [50, 60]]: y = W' x + b with W'[:, S] = P.
    noGrad(() => layer.block('a').copy_(tensor([[10, 20], [30, 40], [50, 60]])));
    const Wp = W.map((row, o) => row.map((v, i) => (S.includes(i) ? [[10, 20], [30, 40], [50, 60]][o]![S.indexOf(i)]! : v)));
    const xs = [1, -1, 2, 0.5];
    const want = Wp.map((row, o) => row.reduce((s, v, i) => s + v * xs[i]!, 0) + [0.5, -1, 2][o]!);
    const got = arr(layer.forward(x));
    got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) < 1e-4, `${kind}: ${got} vs ${want}`));
    const before = arr(base.weight);
    layer.merge(['a']);
    const wm = kind === 'linear' ? base.weight : base.weight.transpose(0, 1);
    assert.deepEqual(arr(wm), Wp.flat(), `${kind}: merge writes P into the columns exactly`);
    assert.ok(maxDiff(layer.forward(x), tensor([want])) < 1e-4);
    layer.unmerge();
    assert.deepEqual(arr(base.weight), before, 'unmerge restores the base exactly');
  }
}));

test('a training step changes only the chosen columns; merge equals unmerged; file keys; save -> load', () => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const x = keep(ids());
  try {
    const orig = new Map(m.namedParameters().filter(([n]) => n.endsWith('c_attn.weight')).map(([n, t]) => [n, keep(t.clone())]));
    const peft = PeftModel.create(m, { peftType: 'PACA', r: 3, targetModules: ['c_attn'] }, { seed: 4 });
    const layers = peft.parts().map(([p, l]) => [p, l as PacaLayer] as const);
    assert.deepEqual(layers.map(([p]) => p), ['transformer.h.0.attn.c_attn', 'transformer.h.1.attn.c_attn']);
    assert.notDeepEqual(layers[0]![1].indices('default'), layers[1]![1].indices('default'), 'seeded per path');
    tidy(() => {
      const lg = peft.forward({ inputIds: x }).logits;
      crossEntropy(lg.narrow(1, 0, 6).reshape(-1, lg.shape[2]!), x.narrow(1, 1, 6).reshape(-1)).backward();
    });
    noGrad(() => { for (const [, l] of layers) { const p = l.block('default'); p.sub_(p.grad!.mul(0.5)); } });
    const tuned = keep(logits(m, x));
    peft.merge();
    assert.ok(maxDiff(logits(m, x), tuned) < 1e-4, 'merged equals unmerged');
    for (const [path, l] of layers) {
      const S = l.indices('default');
      const w0 = orig.get(`${path}.base_layer.weight`) ?? orig.get(`${path}.weight`)!;
      const w = l.base_layer.weight;  // Conv1D [in, out]: column i of W is row i here
      const I = w.shape[0]!;
      let changed = 0;
      for (let i = 0; i < I; i++) {
        const same = maxDiff(w.narrow(0, i, 1), w0.narrow(0, i, 1)) === 0;
        if (S.includes(i)) { assert.ok(!same, `column ${i} was trained`); changed++; } else assert.ok(same, `column ${i} is not in S = ${S} but changed`);
      }
      assert.equal(changed, 3);
      assert.deepEqual(arr(w.indexSelect(0, tensor(S, { dtype: 'int64' })).transpose(0, 1)), arr(l.block('default')), 'merge wrote P exactly');
    }
    peft.unmerge();
    for (const [path, l] of layers) assert.equal(maxDiff(l.base_layer.weight, orig.get(`${path}.weight`)!), 0);
    const dir = mkdtempSync(join(tmpdir(), 'paca-'));
    savePeftAdapters(peft, dir);
    const file = readSafetensors(join(dir, 'adapter_model.safetensors'));
    const k = 'base_model.model.transformer.h.0.attn.c_attn';
    assert.equal(file.get(`${k}.paca_indices`)!.dtype, 'int64');
    assert.deepEqual(arr(file.get(`${k}.paca_indices`)!), layers[0]![1].indices('default'));
    assert.deepEqual(file.get(`${k}.paca_weight`)!.shape, [96, 3]);
    const m2 = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
    loadPeftAdapter(m2, dir);
    assert.ok(maxDiff(logits(m2, x), tuned) < 1e-6, 'loaded = trained');
    m2.dispose();
    orig.forEach((t) => t.dispose());
    tuned.dispose();
  } finally {
    x.dispose();
    m.dispose();
  }
});

test('mixed batch: two adapters with different columns and the base in one pass', () => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const x = keep(ids());
  try {
    const peft = PeftModel.create(m, { peftType: 'PACA', r: 4 }, { seed: 1 });
    peft.addAdapter('b', { peftType: 'PACA', r: 2 }, { seed: 2 });
    noGrad(() => peft.parts().forEach(([, l], i) => ['default', 'b'].forEach((n, j) => { const p = (l as PacaLayer).block(n); p.add_(randn(p.shape, { seed: 10 * i + j }).mul(0.1)); })));
    const one = (n: string) => { peft.setAdapter(n); return keep(logits(m, x)); };
    const a = one('default');
    const b = one('b');
    const base = keep(peft.withAdaptersDisabled(() => logits(m, x)));
    const mixed = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['b', '__base__'] }).logits);
    assert.ok(maxDiff(mixed.narrow(0, 0, 1), b.narrow(0, 0, 1)) < 1e-5);
    assert.ok(maxDiff(mixed.narrow(0, 1, 1), base.narrow(0, 1, 1)) < 1e-5);
    const mixed2 = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['default', 'b'] }).logits);
    assert.ok(maxDiff(mixed2.narrow(0, 0, 1), a.narrow(0, 0, 1)) < 1e-5);
    assert.ok(maxDiff(mixed2.narrow(0, 1, 1), b.narrow(0, 1, 1)) < 1e-5);
    [a, b, base, mixed, mixed2].forEach((t) => t.dispose());
  } finally {
    x.dispose();
    m.dispose();
  }
});
