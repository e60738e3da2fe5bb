// Sparse fine-tuning: SHiRA (PEFT's mask, keys and shapes), LT-SFT (top-k of |Δθ|, exact composition,
// sparse files) and SPT (global top-k by sensitivity).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, keep, randint, rand, tensor, zeros, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, type Tensor, type PretrainedModel } from '../src/index.js';
import {
  SparseDiffLayer, Mt19937, torchRandperm, topkPerLayer, topkGlobal, composeSparseDiffs, sparseDiffsOf, SparseDiffSum,
  shiraMask, ltSftScores, sptSensitivity,
} from '../src/adapters/sparse/index.js';

const HF = fileURLToPath(new URL('../../test/fixtures/hf-ref/', import.meta.url));
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-sparse-'));
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const llama = (): PretrainedModel => loadModel(join(HF, 'llama'), { dtype: 'float32' });
const layers = (p: PeftModel) => p.parts().filter(([, l]) => l instanceof SparseDiffLayer) as [string, SparseDiffLayer][];
const data = () => [0, 1].map((i) => keep(randint(0, 96, [2, 8], { seed: 100 + i })));
const ints = (t: Tensor) => Array.from(t.data() as BigInt64Array, Number);

function header(file: string): Record<string, { dtype: string; shape: number[] }> {
  const b = readFileSync(file);
  const n = Number(b.readBigUInt64LE(0));
  const h = JSON.parse(b.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[] }>;
  delete h.__metadata__;
  return h;
}

test('mt19937 replica equals libtorch CPU generator stream (via rand float32 = low 24 bits / 2^24)', () => {
  for (const seed of [0, 42, 123456789]) {
    const r = rand([50], { seed }).data() as Float32Array;
    const g = new Mt19937(seed);
    for (let i = 0; i < 50; i++) assert.equal(Math.round(r[i]! * 2 ** 24), g.next() & 0xffffff, `seed ${seed} value ${i}`);
  }
  const p = torchRandperm(10, 0);
  assert.deepEqual([...p].sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('SHiRA: r*(in+out) trainable entries per layer, PEFT keys and shapes, forward = hand-built dense delta, merge exact', () => {
  const m = llama();
  const x = keep(randint(0, 96, [2, 6], { seed: 5 }));
  try {
    const peft = PeftModel.create(m, { peftType: 'SHIRA', r: 2, randomSeed: 7, initWeights: false }, { seed: 1 });
    const ls = layers(peft);
    assert.ok(ls.length > 0);
    for (const [path, l] of ls) {
      assert.equal(l.valuesOf('default').numel, 2 * (l.inFeatures + l.outFeatures), path);
      const coo = l.cooIndices('default');
      assert.deepEqual(coo.shape, [2, 2 * (l.inFeatures + l.outFeatures)]);
      assert.equal(coo.dtype, 'int32');
      // PEFT's random_mask with the same seed: the same positions.
      const want = shiraMask(l.outFeatures, l.inFeatures, 2, 7);
      assert.deepEqual(ints(l.flatIndices('default')), ints(want));
    }
    const dir = tmp();
    savePeftAdapters(peft, dir);
    const h = header(join(dir, 'adapter_model.safetensors'));
    const [p0, l0] = ls[0]!;
    const n = 2 * (l0.inFeatures + l0.outFeatures);
    assert.deepEqual(h[`base_model.model.${p0}.shira_weight`], { ...h[`base_model.model.${p0}.shira_weight`], dtype: 'F32', shape: [n] });
    assert.deepEqual(h[`base_model.model.${p0}.shira_indices`]!.shape, [2, n]);
    assert.equal(h[`base_model.model.${p0}.shira_indices`]!.dtype, 'I32');
    assert.equal(Object.keys(h).length, 2 * ls.length);
    const cfg = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8'));
    assert.equal(cfg.peft_type, 'SHIRA');
    assert.equal(cfg.r, 2);
    assert.equal(cfg.mask_type, 'random');
    assert.equal(cfg.random_seed, 7);
    // Forward of one layer against the dense delta built by hand from the (row, col) indices.
    noGrad(() => {
      const inp = rand([3, l0.inFeatures], { seed: 9 });
      const vals = l0.valuesOf('default').data() as Float32Array;
      const coo = l0.cooIndices('default').toArray() as number[][];
      const dense = new Float32Array(l0.outFeatures * l0.inFeatures);
      for (let i = 0; i < vals.length; i++) dense[coo[0]![i]! * l0.inFeatures + coo[1]![i]!] += vals[i]!;
      const D = tensor(dense, { shape: [l0.outFeatures, l0.inFeatures] });
      const want = l0.base_layer.forward(inp).add(inp.matmul(D.transpose(0, 1)));
      assert.ok(maxDiff(l0.forward(inp), want) < 1e-5);
    });
    const before = keep(noGrad(() => m.forward({ inputIds: x }).logits));
    const w0 = keep(l0.base_layer.weight.clone());
    peft.merge();
    assert.ok(maxDiff(noGrad(() => m.forward({ inputIds: x }).logits), before) < 1e-4);
    peft.unmerge();
    assert.equal(maxDiff(l0.base_layer.weight, w0), 0);
    // Loading gives the same indices and values.
    const p2 = loadPeftAdapter(llama(), dir);
    const l2 = layers(p2)[0]![1];
    assert.deepEqual(ints(l2.flatIndices('default')), ints(l0.flatIndices('default')));
    assert.equal(maxDiff(l2.valuesOf('default'), l0.valuesOf('default')), 0);
  } finally { x.dispose(); m.dispose(); }
});

test('LT-SFT: top-k per layer of a known |Δθ| table; mask = top-k of the dense phase; weights reset; refuses without data', () => {
  const table = new Map([['a', tensor([[0.1, -0.9, 0.3], [0.5, 0.0, 0.7]]).abs()], ['b', tensor([4, 1, 3, 2]).abs()]]);
  const m1 = topkPerLayer(table, (n) => Math.floor(0.5 * n));
  assert.deepEqual(ints(m1.get('a')!), [1, 3, 5]);  // 0.9, 0.5, 0.7
  assert.deepEqual(ints(m1.get('b')!), [0, 2]);  // 4, 3
  const m = llama();
  const d = data();
  try {
    assert.throws(() => PeftModel.create(m, { peftType: 'LT_SFT' }), /pass data/);
    const peft = PeftModel.create(m, { peftType: 'LT_SFT', targetModules: ['q_proj', 'down_proj'], density: 0.02, fullFtSteps: 2, fullFtLr: 0.05 }, { data: d });
    const paths = layers(peft).map(([p]) => p);
    assert.equal(paths.length, 4);
    // The same dense phase again (the adapters' values are zero, so the model is θ0): the same mask.
    const w0 = keep((peft.model.getSubmodule(paths[0]!) as SparseDiffLayer).base_layer.weight.clone());
    const scores = ltSftScores(m, paths, d, 2, 0.05);
    assert.equal(maxDiff((peft.model.getSubmodule(paths[0]!) as SparseDiffLayer).base_layer.weight, w0), 0, 'θ reset to θ0 exactly');
    assert.ok(tidy(() => scores.get(paths[0]!)!.max().item()) > 0, 'the dense phase moved the weights');
    const want = topkPerLayer(scores, (n) => Math.max(1, Math.floor(0.02 * n)));
    for (const p of paths) {
      const l = peft.model.getSubmodule(p) as SparseDiffLayer;
      assert.deepEqual(ints(l.flatIndices('default')), ints(want.get(p)!), p);
      assert.equal(l.valuesOf('default').numel, Math.floor(0.02 * l.base_layer.weight.numel));
    }
  } finally { d.forEach((t) => t.dispose()); m.dispose(); }
});

test('LT-SFT: diffs compose and A + B − B = A bit for bit; the file is sparse (entries*(8+4) bytes, never dense)', () => {
  const m = llama();
  const d = data();
  try {
    const peft = PeftModel.create(m, { peftType: 'LT_SFT', density: 0.05, fullFtSteps: 1 }, { data: d, seed: 1 });
    peft.addAdapter('b', { peftType: 'LT_SFT', density: 0.05, fullFtSteps: 2, fullFtLr: 0.1 }, { data: [...d].reverse(), seed: 2 });
    noGrad(() => {
      for (const [, l] of layers(peft)) for (const [i, n] of ['default', 'b'].entries()) l.valuesOf(n).add_(rand(l.valuesOf(n).shape, { seed: 30 + i }).sub(0.5));
    });
    const ab = composeSparseDiffs(peft, ['default', 'b']);
    const a = composeSparseDiffs(peft, ['default']);
    const b = sparseDiffsOf(peft, 'b');
    for (const [path, sum] of ab) {
      const w = (peft.model.getSubmodule(path) as SparseDiffLayer).base_layer.weight;
      const back = sum.minus(b.get(path)!);
      assert.equal(back.terms.length, 1);
      const x1 = back.applyTo(w);
      const x2 = a.get(path)!.applyTo(w);
      assert.ok(Buffer.from(x1.bytes()).equals(Buffer.from(x2.bytes())), `${path}: A + B − B = A bitwise`);
      // and equals θ0 + A computed by the layer's own delta
      assert.ok(maxDiff(x2, noGrad(() => w.add((peft.model.getSubmodule(path) as SparseDiffLayer).deltaWeight('default')))) < 1e-7);
    }
    // Both active: forward adds both diffs = the merged composition.
    const x = keep(randint(0, 96, [2, 6], { seed: 5 }));
    peft.setAdapter(['default', 'b'] as never);
    const both = keep(noGrad(() => peft.forward({ inputIds: x }).logits));
    peft.merge(['default', 'b']);
    assert.ok(maxDiff(noGrad(() => m.forward({ inputIds: x }).logits), both) < 1e-4);
    peft.unmerge();
    // Sparse on disk.
    const dir = tmp();
    savePeftAdapters(peft, dir);
    const file = join(dir, 'adapter_model.safetensors');
    const h = header(file);
    let entries = 0;
    let dense = 0;
    for (const [path, l] of layers(peft)) {
      const n = l.valuesOf('default').numel;
      entries += n;
      dense += l.base_layer.weight.numel * 4;
      assert.deepEqual(h[`base_model.model.${path}.sft_indices`], { ...h[`base_model.model.${path}.sft_indices`], dtype: 'I64', shape: [n] });
      assert.deepEqual(h[`base_model.model.${path}.sft_values`]!.shape, [n]);
    }
    const size = statSync(file).size;
    const headerBytes = 8 + Number(readFileSync(file).readBigUInt64LE(0));
    assert.equal(size - Number(headerBytes), entries * 12, 'payload = entries * (8 + 4) bytes');
    assert.ok(size < dense / 4, `file ${size} B is far below the dense ${dense} B`);
    const p2 = loadPeftAdapter(llama(), dir);
    assert.ok(maxDiff(noGrad(() => p2.forward({ inputIds: x }).logits), noGrad(() => { peft.setAdapter('default'); return peft.forward({ inputIds: x }).logits; })) < 1e-5);
    x.dispose();
    void SparseDiffSum; void zeros;
  } finally { d.forEach((t) => t.dispose()); m.dispose(); }
});

test('SPT: the globally top-k sensitive entries of a constructed table; the adapter takes them from g² sensitivities', () => {
  const sens = new Map([['a', tensor([[1, 9], [2, 8]])], ['b', tensor([7, 3, 10])], ['c', tensor([0.5, 0.1])]]);
  const g = topkGlobal(sens, 4);  // 10, 9, 8, 7
  assert.deepEqual(ints(g.get('a')!), [1, 3]);
  assert.deepEqual(ints(g.get('b')!), [0, 2]);
  assert.deepEqual(ints(g.get('c')!), []);
  const m = llama();
  const d = data();
  try {
    assert.throws(() => PeftModel.create(m, { peftType: 'SPT' }), /pass data/);
    const peft = PeftModel.create(m, { peftType: 'SPT', budget: 0.01 }, { data: d });
    const ls = layers(peft);
    const paths = ls.map(([p]) => p);
    const s = sptSensitivity(m, paths, d);
    const total = [...s.values()].reduce((n, t) => n + t.numel, 0);
    const want = topkGlobal(s, Math.floor(0.01 * total));
    let count = 0;
    for (const [p, l] of ls) {
      assert.deepEqual(ints(l.flatIndices('default')), ints(want.get(p)!), p);
      count += l.valuesOf('default').numel;
    }
    assert.equal(count, Math.floor(0.01 * total));
  } finally { d.forEach((t) => t.dispose()); m.dispose(); }
});
