// LoKr (PEFT's tuners/lokr) and adapterkit's SoKA initialisation: factorization() against hand-worked
// cases, ΔW against a Kronecker product written with plain loops, merge, PEFT's file keys and JSON
// fields, and the Kronecker SVD behind SoKA.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, keep, randint, randn, tensor, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, Linear, type Tensor, type PretrainedModel, type AdapterContext } from '../src/index.js';
import { LokrLayer, resolveLokr, factorization, kronSvd, kronRearrange, energyRank, elbowRank, kron } from '../src/adapters/lokr/index.js';

const HF = fileURLToPath(new URL('../../test/fixtures/hf-ref/', import.meta.url));
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-lokr-'));
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const ids = () => randint(0, 96, [2, 6], { seed: 5 });
const logits = (m: PretrainedModel, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const ctxOf = (): AdapterContext => ({ active: ['a'], disabled: false, rows: null, version: 0, slots: {}, composition: null });
const mat = (t: Tensor) => t.toArray() as number[][];

/** Reads the tensor names of a safetensors file from its JSON header. */
function safetensorKeys(file: string): string[] {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  return Object.keys(JSON.parse(buf.subarray(8, 8 + n).toString('utf8'))).filter((k) => k !== '__metadata__').sort();
}

test('factorization() matches PEFT/LyCORIS on hand-worked cases', () => {
  // The loop walks m up through the divisors of `dimension` while m <= factor (length = dim + 1 never
  // stops it), ending at the first m >= n; the pair is returned smaller first.
  // 768, -1: m = 2,3,4,6,8,12,16,24 (n = 32), then 32 (n = 24) -> m >= n stops -> (24, 32)
  assert.deepEqual(factorization(768, -1), [24, 32]);
  // 512, 8: 8 divides 512 -> (8, 512 / 8) directly
  assert.deepEqual(factorization(512, 8), [8, 64]);
  // 127 is prime: the only divisor > 1 is 127 (n = 1) -> (127, 1) -> swapped (1, 127)
  assert.deepEqual(factorization(127, -1), [1, 127]);
  // 128, -1: 2, 4, 8 (n 16), 16 (n 8) -> (8, 16) (PEFT's docstring)
  assert.deepEqual(factorization(128, -1), [8, 16]);
  // 128, 4: 4 divides -> (4, 32) (PEFT's docstring)
  assert.deepEqual(factorization(128, 4), [4, 32]);
  // 96, -1: 2,3,4,6,8 (n 12), 12 (n 8) -> (8, 12); 32, -1: 2, 4, 8 (n 4) -> (4, 8)
  assert.deepEqual(factorization(96, -1), [8, 12]);
  assert.deepEqual(factorization(32, -1), [4, 8]);
  // 100, 3: 3 does not divide 100 -> search with m <= 3: m = 2 (n 50), next divisor 4 > 3 -> (2, 50)
  assert.deepEqual(factorization(100, 3), [2, 50]);
  // 12, 5: 5 does not divide -> m = 2 (n 6), 3 (n 4), next 4 > 5? no: 4 <= 5 -> (4, 3) -> m >= n -> (3, 4)
  assert.deepEqual(factorization(12, 5), [3, 4]);
});

/** ΔW by hand: Δ[p b + q][s d + t] = scale · w1[p][s] · w2[q][t], with plain loops. */
function handKron(w1: number[][], w2: number[][], scale: number): number[][] {
  const a = w1.length, c = w1[0]!.length, b = w2.length, d = w2[0]!.length;
  const out: number[][] = Array.from({ length: a * b }, () => new Array<number>(c * d).fill(0));
  for (let p = 0; p < a; p++) for (let q = 0; q < b; q++) for (let s = 0; s < c; s++) for (let t = 0; t < d; t++) out[p * b + q]![s * d + t] = scale * w1[p]![s]! * w2[q]![t]!;
  return out;
}
function handMatmul(x: number[][], y: number[][]): number[][] {
  return x.map((row) => y[0]!.map((_, j) => row.reduce((acc, v, k) => acc + v * y[k]![j]!, 0)));
}

for (const decomposeBoth of [false, true]) {
  test(`LoKr ΔW equals a hand-written Kronecker product (decompose_both ${decomposeBoth})`, () => {
    // in 8 -> (c, d) = (2, 4); out 12 -> (a, b) = (3, 4). r = 1: w2 is decomposed (1 < max(4, 4) / 2);
    // w1 is decomposed only with decompose_both (1 < max(3, 2) / 2).
    const layer = new LokrLayer(new Linear(8, 12, { bias: true }), ctxOf());
    noGrad(() => { layer.base_layer.weight.copy_(randn([12, 8], { seed: 1 })); layer.base_layer.bias!.copy_(randn([12], { seed: 2 })); });
    layer.addAdapter('a', resolveLokr({ r: 1, alpha: 3, decomposeBoth, initWeights: false }), 'x', { seed: 7 });
    const keys = [...layer.adapterState('a').keys()].sort();
    assert.deepEqual(keys, decomposeBoth ? ['lokr_w1_a', 'lokr_w1_b', 'lokr_w2_a', 'lokr_w2_b'] : ['lokr_w1', 'lokr_w2_a', 'lokr_w2_b']);
    const st = layer.adapterState('a');
    const w1 = decomposeBoth ? handMatmul(mat(st.get('lokr_w1_a')!), mat(st.get('lokr_w1_b')!)) : mat(st.get('lokr_w1')!);
    const w2 = handMatmul(mat(st.get('lokr_w2_a')!), mat(st.get('lokr_w2_b')!));
    assert.deepEqual([w1.length, w1[0]!.length, w2.length, w2[0]!.length], [3, 2, 4, 4]);
    const want = handKron(w1, w2, 3 / 1);
    const got = mat(layer.deltaWeight('a'));
    for (let i = 0; i < 12; i++) for (let j = 0; j < 8; j++) assert.ok(Math.abs(got[i]![j]! - want[i]![j]!) < 1e-5, `ΔW[${i}][${j}]`);
    // forward adds x ΔWᵀ to the base output
    layer.eval();
    const x = randn([2, 3, 8], { seed: 3 });
    const y = noGrad(() => layer.forward(x).sub(layer.base_layer.forward(x)));
    const wantY = noGrad(() => x.matmul(tensor(want).transpose(0, 1)));
    assert.ok(maxDiff(y, wantY) < 1e-5);
    // merge equals unmerged, unmerge restores the base exactly
    const w0 = keep(layer.base_layer.weight.clone());
    layer.merge(['a']);
    assert.ok(maxDiff(noGrad(() => layer.forward(x)), noGrad(() => layer.base_layer.forward(x).sub(0))) < 1e-6);
    const merged = noGrad(() => layer.forward(x));
    layer.unmerge();
    assert.ok(maxDiff(noGrad(() => layer.forward(x)), merged) < 1e-5);
    assert.equal(maxDiff(layer.base_layer.weight, w0), 0);
  });
}

test('LoKr init: true zeroes w1 (starts as the base), "lycoris" zeroes w2, false is random', () => {
  const mk = (initWeights: boolean | 'lycoris') => {
    const layer = new LokrLayer(new Linear(8, 12), ctxOf());
    layer.addAdapter('a', resolveLokr({ r: 1, alpha: 1, initWeights }), 'x', { seed: 7 });
    return layer;
  };
  const t = mk(true).adapterState('a');
  assert.equal(tidy(() => t.get('lokr_w1')!.abs().sum().item()), 0);
  assert.ok(tidy(() => t.get('lokr_w2_b')!.abs().sum().item()) > 0);
  const l = mk('lycoris').adapterState('a');
  assert.equal(tidy(() => l.get('lokr_w2_b')!.abs().sum().item()), 0);
  assert.ok(tidy(() => mk(false).deltaWeight('a').abs().sum().item()) > 0);
  assert.throws(() => resolveLokr({ initWeights: 'pissa' as never }), /init_weights/);
  assert.throws(() => resolveLokr({ r: 0 }), /r must be a positive integer/);
});

test('LoKr on gpt2: PEFT key names and JSON fields, save -> load identical, merge equals unmerged, rank_pattern', () => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const x = keep(ids());
  const peft = PeftModel.create(m, { peftType: 'LOKR', r: 2, alpha: 4, decomposeBoth: true, rankPattern: { 'h.0.attn.c_attn': 1 }, initWeights: false }, { seed: 3 });
  m.eval();
  // rank_pattern: r 1 on h.0 (w1 (8, 4) = w1_a (8, 1) @ w1_b (1, 4)), r 2 elsewhere.
  const parts = new Map(peft.parts());
  assert.deepEqual(parts.get('transformer.h.0.attn.c_attn')!.adapterState('default').get('lokr_w1_a')!.shape, [8, 1]);
  assert.deepEqual(parts.get('transformer.h.1.attn.c_attn')!.adapterState('default').get('lokr_w1_a')!.shape, [8, 2]);
  assert.deepEqual(parts.get('transformer.h.1.attn.c_attn')!.adapterState('default').get('lokr_w2_b')!.shape, [2, 8]);
  const tuned = keep(logits(m, x));
  const dir = tmp();
  savePeftAdapters(peft, dir);
  const json = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(json.peft_type, 'LOKR');
  for (const f of ['r', 'alpha', 'rank_dropout', 'module_dropout', 'use_effective_conv2d', 'decompose_both', 'decompose_factor', 'rank_dropout_scale', 'init_weights', 'rank_pattern', 'alpha_pattern', 'target_modules']) assert.ok(f in json, f);
  assert.equal(json.adapterkit, undefined);
  const file = readdirSync(dir).find((f) => f.endsWith('.safetensors'))!;
  const keys = safetensorKeys(join(dir, file));
  // c_attn: in 32 -> (4, 8), out 96 -> (8, 12); r 2 decomposes w1 (2 < 8/2) and w2 (2 < 12/2); r 1 on h.0 too.
  assert.ok(keys.includes('base_model.model.transformer.h.0.attn.c_attn.lokr_w1_a'), keys.join(' '));
  assert.ok(keys.every((k) => /\.lokr_w[12]_[ab]$/.test(k)), keys.join(' '));
  const p2 = loadPeftAdapter(loadModel(join(HF, 'gpt2'), { dtype: 'float32' }), dir, { warn: (w) => assert.fail(w) });
  p2.model.eval();
  assert.ok(maxDiff(logits(p2.model, x), tuned) < 1e-5);
  peft.merge();
  assert.ok(maxDiff(logits(m, x), tuned) < 1e-4);
  peft.unmerge();
  assert.ok(maxDiff(logits(m, x), tuned) < 1e-6);
});

test('Kronecker SVD: an exactly Kronecker-structured W is rank 1 and is rebuilt from its first component', () => {
  const A = randn([3, 2], { seed: 1 });
  const B = randn([4, 5], { seed: 2 });
  const W = kron(A, B);  // (12, 10): o1 3, o2 4, i1 2, i2 5
  // The rearrangement maps A ⊗ B to vec(A) vec(B)ᵀ, by hand on one entry: R[p i1 + s][q i2 + t] = A[p][s] B[q][t].
  const R = mat(kronRearrange(W, 3, 4, 2, 5));
  const a = mat(A), b = mat(B);
  for (let p = 0; p < 3; p++) for (let s = 0; s < 2; s++) for (let q = 0; q < 4; q++) for (let t = 0; t < 5; t++) assert.ok(Math.abs(R[p * 2 + s]![q * 5 + t]! - a[p]![s]! * b[q]![t]!) < 1e-5);
  const { S, A: As, B: Bs } = kronSvd(W, 3, 4, 2, 5);
  const sig = Array.from(S.data() as Float32Array);
  assert.ok(sig[1]! < 1e-5 * sig[0]!, `second singular value ${sig[1]} vs ${sig[0]}`);
  assert.equal(energyRank(sig, 0.9), 1);
  const rebuilt = kron(As.select(0, 0), Bs.select(0, 0)).mul(sig[0]!);
  assert.ok(maxDiff(rebuilt, W) < 1e-4);
});

test('SoKA rank rules: the energy threshold and the elbow on constructed spectra', () => {
  // σ = 3, 2, 1, 0.5: σ² = 9, 4, 1, 0.25 (total 14.25); cumulative 9, 13, 14, 14.25
  assert.equal(energyRank([3, 2, 1, 0.5], 0.9), 2);  // 0.9 · 14.25 = 12.825 -> 13 at k = 2
  assert.equal(energyRank([3, 2, 1, 0.5], 0.6), 1);  // 8.55 -> 9 at k = 1
  assert.equal(energyRank([3, 2, 1, 0.5], 0.95), 3);  // 13.5375 -> 14 at k = 3
  assert.equal(energyRank([3, 2, 1, 0.5], 1), 4);
  // A sharp knee after one (two) dominant components.
  assert.equal(elbowRank([1, 0.1, 0.09, 0.08, 0.07]), 1);
  assert.equal(elbowRank([1, 0.95, 0.1, 0.09, 0.08, 0.07]), 2);
  // A W built as 3 A1⊗B1 + 2 A2⊗B2 + 0.1 A3⊗B3 with orthonormal rearranged factors: energy 0.9 picks 2.
  const svals = [3, 2, 0.1];
  const W = tidy(() => {
    let w = kron(randn([2, 2], { seed: 0 }), randn([3, 3], { seed: 0 })).mul(0);
    // orthonormal vec(A_k) / vec(B_k): unit basis matrices
    for (let k = 0; k < 3; k++) {
      const Ak = Array.from({ length: 2 }, (_, i) => [0, 1].map((j) => (i * 2 + j === k ? 1 : 0)));
      const Bk = Array.from({ length: 3 }, (_, i) => [0, 1, 2].map((j) => (i * 3 + j === k ? 1 : 0)));
      w = w.add(kron(tensor(Ak), tensor(Bk)).mul(svals[k]!));
    }
    return w;
  });
  const { S } = kronSvd(W, 2, 3, 2, 3);
  const sig = Array.from(S.data() as Float32Array);
  assert.ok(Math.abs(sig[0]! - 3) < 1e-5 && Math.abs(sig[1]! - 2) < 1e-5 && Math.abs(sig[2]! - 0.1) < 1e-5, sig.join(' '));
  assert.equal(energyRank(sig, 0.9), 2);  // 9 / 13.01 = 0.69 < 0.9 <= 13 / 13.01
  // The layer takes those two components and leaves 0.1 A3⊗B3 in the base.
  const layer = new LokrLayer(new Linear(6, 4), ctxOf());
  // out 4 -> (a, b) = (2, 2), in 6 -> (c, d) = (2, 3): the same three components in that layout
  const W2 = tidy(() => kron(tensor([[1, 0], [0, 0]]), tensor([[1, 0, 0], [0, 0, 0]])).mul(3).add(kron(tensor([[0, 1], [0, 0]]), tensor([[0, 1, 0], [0, 0, 0]])).mul(2)).add(kron(tensor([[0, 0], [1, 0]]), tensor([[0, 0, 1], [0, 0, 0]])).mul(0.1)));
  noGrad(() => layer.base_layer.weight.copy_(W2));
  const w0 = keep(layer.base_layer.weight.clone());
  layer.addAdapter('a', resolveLokr({ r: 4, alpha: 2, initWeights: 'soka' }), 'x', { seed: 1 });
  assert.equal(layer.sokaTerms.get('a'), 2);
  assert.deepEqual(layer.adapterState('a').get('lokr_w1')!.shape, [2, 2, 2]);
  // base + ΔW is the original W; the residual is the third component
  assert.ok(maxDiff(noGrad(() => layer.base_layer.weight.add(layer.deltaWeight('a'))), w0) < 1e-5);
  assert.ok(Math.abs(tidy(() => layer.base_layer.weight.abs().sum().item()) - 0.1) < 1e-5);
  // the rank cap: r = 1 keeps one component (2-D factors, PEFT's lokr_w1 / lokr_w2 shapes)
  const l1 = new LokrLayer(new Linear(6, 4), ctxOf());
  noGrad(() => l1.base_layer.weight.copy_(W2));
  l1.addAdapter('a', resolveLokr({ r: 1, alpha: 1, initWeights: 'soka' }), 'x', { seed: 1 });
  assert.deepEqual(l1.adapterState('a').get('lokr_w1')!.shape, [2, 2]);
  assert.deepEqual(l1.adapterState('a').get('lokr_w2')!.shape, [2, 3]);
  l1.addAdapter('b', resolveLokr({ r: 4, alpha: 1, initWeights: 'soka', sokaRank: 'elbow' }), 'x', { seed: 1 });
  assert.equal(l1.sokaTerms.get('b'), 1);
});

test('SoKA on gpt2: the output is unchanged at init; the file records the residual base and loads onto the original base', () => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const x = keep(ids());
  m.eval();
  const base = keep(logits(m, x));
  const peft = PeftModel.create(m, { peftType: 'LOKR', r: 4, alpha: 4, initWeights: 'soka', sokaEnergy: 0.5 }, { seed: 3 });
  m.eval();
  assert.ok(maxDiff(logits(m, x), base) < 1e-4, 'unchanged at init');
  assert.ok(maxDiff(peft.withAdaptersDisabled(() => logits(m, x)), base) > 1e-4, 'the base holds the residual');
  noGrad(() => peft.parts().flatMap(([, p]) => p.adapterParameters('default')).forEach((t, i) => t.add_(randn(t.shape, { seed: i }).mul(0.05))));
  const tuned = keep(logits(m, x));
  const dir = tmp();
  savePeftAdapters(peft, dir);
  const json = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(json.init_weights, 'soka');
  assert.equal((json.adapterkit as Record<string, unknown>).base_modified, 'soka_residual');
  const p2 = loadPeftAdapter(loadModel(join(HF, 'gpt2'), { dtype: 'float32' }), dir, { warn: (w) => assert.fail(w) });
  p2.model.eval();
  assert.ok(maxDiff(logits(p2.model, x), tuned) < 1e-4);
});

test('LoKr rank_dropout drops whole rows of ΔW in training (rescaled with rank_dropout_scale); module_dropout skips the adapter', () => {
  const ctx: AdapterContext = { active: ['a'], disabled: false, rows: null, version: 0, slots: {}, composition: null };
  const layer = new LokrLayer(new Linear(8, 12), ctx);
  layer.addAdapter('a', resolveLokr({ r: 8, alpha: 8, initWeights: false, rankDropout: 0.5, rankDropoutScale: true }), 'x', { seed: 7 });
  layer.eval();
  const full = mat(layer.deltaWeight('a'));
  layer.train();
  const dropped = mat(layer.deltaWeight('a'));
  const kept = dropped.filter((row) => row.some((v) => v !== 0)).length;
  assert.ok(kept > 0 && kept < 12, `kept ${kept} of 12 rows`);
  for (let i = 0; i < 12; i++) {
    if (dropped[i]!.every((v) => v === 0)) continue;
    const f = dropped[i]![0]! / full[i]![0]!;
    assert.ok(Math.abs(f - 12 / kept) < 1e-4, `row ${i} scaled by ${f}, want ${12 / kept}`);
  }
  layer.addAdapter('m', resolveLokr({ r: 8, initWeights: false, moduleDropout: 0.9999 }), 'x', { seed: 7 });
  ctx.active = ['m'];
  const x = randn([2, 8], { seed: 1 });
  assert.ok(maxDiff(noGrad(() => layer.forward(x)), noGrad(() => layer.base_layer.forward(x))) === 0);
});
