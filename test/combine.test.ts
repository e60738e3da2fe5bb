// Weighted adapter combination (PEFT's LoraModel.add_weighted_adapter) and the task-vector merge
// utilities (PEFT utils/merge_utils.py), checked against values computed by hand: tiny literal
// tensors for the merge functions, and LoRA adapters with hand-set sparse A and B on the tiny llama
// fixture for every combination type. Expected values are written out as literals, not recomputed
// with the library.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  tidy, noGrad, tensor, loadModel, PeftModel, LoraLayer, addWeightedAdapter,
  type Tensor, type LoraConfig, type CombineOptions,
} from '../src/index.js';
import {
  magnitudePrune, randomPrune, taskArithmetic, ties, dareLinear, dareTies, magnitudePruneMerge,
} from '../src/adapters/merge-utils.js';

// The repository root: the first folder above this file that holds the fixtures (works from any outDir).
const root = (() => {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'test/fixtures/hf-ref'))) {
    const up = dirname(d);
    if (up === d) throw new Error('test/fixtures/hf-ref not found above ' + fileURLToPath(import.meta.url));
    d = up;
  }
  return d;
})();
const HF = join(root, 'test/fixtures/hf-ref');

const f64 = (v: number[]) => tensor(v, { dtype: 'float64' });
const flat = (x: number[] | number[][]): number[] => (x as (number | number[])[]).flat() as number[];
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());

/** Asserts t (any shape) equals `want` elementwise within tol, naming the first mismatch. */
function close(t: Tensor, want: number[] | number[][], tol: number, msg: string): void {
  const got = Array.from(t.data() as Float32Array | Float64Array, Number);
  const w = flat(want);
  assert.equal(got.length, w.length, `${msg}: ${got.length} values, want ${w.length}`);
  for (let i = 0; i < w.length; i++) {
    assert.ok(Math.abs(got[i]! - w[i]!) <= tol, `${msg}: entry ${i} (of shape [${t.shape.join(', ')}]) is ${got[i]}, want ${w[i]}`);
  }
}

/** A rows x cols matrix of zeros with the given [row, col, value] entries. */
function dense(rows: number, cols: number, entries: [number, number, number][]): number[][] {
  const m = Array.from({ length: rows }, () => new Array<number>(cols).fill(0));
  for (const [i, j, v] of entries) m[i]![j] = v;
  return m;
}

// ---------------------------------------------------------------------------------------------
// (1) merge utilities on literal tensors
// ---------------------------------------------------------------------------------------------

test('magnitudePrune keeps the floor(density * numel) largest |values|, shape kept', () => tidy(() => {
  // 4 entries, density 0.5 -> k = 2: |-4| and |3| survive.
  close(magnitudePrune(f64([3, -1, 0.5, -4]), 0.5), [3, 0, 0, -4], 0, '1-D');
  // 2x3, k = 3: -5, 4, -3 survive, in place.
  const m = magnitudePrune(tensor([[1, -5, 2], [0.5, -3, 4]], { dtype: 'float64' }), 0.5);
  assert.deepEqual(m.shape, [2, 3]);
  close(m, [[0, -5, 0], [0, -3, 4]], 0, '2-D');
  // 5 entries, density 0.5 -> k = floor(2.5) = 2 (not 3): 5 and -4.
  close(magnitudePrune(f64([1, -2, 3, -4, 5]), 0.5), [0, 0, 0, -4, 5], 0, 'floor');
  // density 1 keeps everything.
  close(magnitudePrune(f64([1, -2, 3]), 1), [1, -2, 3], 0, 'density 1');
}));

test('task arithmetic with negative weights', () => tidy(() => {
  // 2*[1, 2, -3] - 1.5*[0.5, -1, 4] = [1.25, 5.5, -12]
  close(taskArithmetic([f64([1, 2, -3]), f64([0.5, -1, 4])], [2, -1.5]), [1.25, 5.5, -12], 1e-12, 'task arithmetic');
}));

test('TIES "total": sign from the sum of the UNWEIGHTED pruned tensors, ties go to +, disjoint mean', () => tidy(() => {
  const t1 = f64([1, -2, 3, 0.5]);
  const t2 = f64([-3, 1, 1, -0.5]);
  // entry 0: 1 + -3 = -2 -> -, only t2 agrees: 2*-3 / 1 = -6
  // entry 1: -2 + 1 = -1 -> -, only t1: 1*-2 = -2. (The WEIGHTED sum -2 + 2 = 0 would elect + and give 2.)
  // entry 2: both +: (1*3 + 2*1) / 2 = 2.5
  // entry 3: 0.5 - 0.5 = 0 -> tie -> +, only t1: 0.5
  close(ties([t1, t2], [1, 2], 1, 'total'), [-6, -2, 2.5, 0.5], 1e-12, 'ties total');
}));

test('TIES "total" vs "frequency" on three tensors, with a conflict and a tie', () => tidy(() => {
  const ts = [f64([5, -1, 2, 1]), f64([-1, 2, -3, -1]), f64([-1, 3, 0, 0])];
  const w = [1, 0.5, 2];
  // entry 0: values 5, -1, -1. total 3 -> + -> 5*1 = 5. frequency +1-1-1 = -1 -> - -> (0.5*-1 + 2*-1)/2 = -1.25
  // entry 1: -1, 2, 3. both methods + -> (0.5*2 + 2*3)/2 = 3.5
  // entry 2: 2, -3, 0. total -1 -> - -> 0.5*-3 = -1.5. frequency 1-1+0 = 0 -> tie -> + -> 1*2 = 2
  // entry 3: 1, -1, 0. both 0 -> tie -> + -> 1*1 = 1
  close(ties(ts, w, 1, 'total'), [5, 3.5, -1.5, 1], 1e-12, 'ties total');
  close(ties(ts, w, 1, 'frequency'), [-1.25, 3.5, 2, 1], 1e-12, 'ties frequency');
}));

test('TIES with density 0.5 trims each tensor before the election', () => tidy(() => {
  // 5 entries -> k = 2. t1 keeps 4, -3 -> [4,0,0,-3,0]; t2 keeps 5, -2 -> [0,5,-2,0,0].
  const t1 = f64([4, -1, 2, -3, 0.5]);
  const t2 = f64([-1, 5, -2, 0.5, 1]);
  // weights [2, 1]: [2*4, 5, -2, 2*-3, 0 (nothing survives: 0 / max(1, 0))].
  // (Untrimmed, entry 2 would be 2 vs -2 -> tie -> + -> 4.)
  close(ties([t1, t2], [2, 1], 0.5, 'total'), [8, 5, -2, -6, 0], 1e-12, 'ties density 0.5');
}));

test('magnitude_prune merge: prune each, then task arithmetic', () => tidy(() => {
  // 4 entries -> k = 2: [4,0,0,-3] and [0,5,-2,0]; 2*first - second.
  close(magnitudePruneMerge([f64([4, -1, 2, -3]), f64([-1, 5, -2, 0.5])], [2, -1], 0.5), [8, -5, 2, -6], 1e-12, 'magnitude prune merge');
}));

test('DARE with density 1 is task arithmetic (and dare_ties is ties)', () => tidy(() => {
  const a = [f64([1, 2, -3]), f64([0.5, -1, 4])];
  close(dareLinear(a, [2, -1.5], 1, 123), [1.25, 5.5, -12], 1e-12, 'dare_linear density 1');
  const b = [f64([1, -2, 3, 0.5]), f64([-3, 1, 1, -0.5])];
  close(dareTies(b, [1, 2], 1, 123, 'total'), [-6, -2, 2.5, 0.5], 1e-12, 'dare_ties density 1');
}));

test('DARE with density 0.5: each entry kept or dropped, survivors rescaled by 1/density', () => tidy(() => {
  // adapterkit follows the DARE paper (Yu et al. 2023) and rescales the survivors by 1/density;
  // upstream PEFT's random_pruning computes `torch.div(pruned, density)` but discards the result,
  // so PEFT's dare_* do not rescale. These tests assert the paper's (adapterkit's) rescaling.
  const t1 = [1, 2, 3, 4, 5, 6];
  const t2 = [10, 20, 30, 40, 50, 60];
  const w = [1, 0.5];
  const out = Array.from(dareLinear([f64(t1), f64(t2)], w, 0.5, 11).data() as Float64Array);
  // Per entry the contributions are c1 = 1*t1 and c2 = 0.5*t2 (= 5*t1), so the four possible
  // outcomes 0, 2c1, 2c2, 2(c1 + c2) are distinct and the masks can be read back.
  const m1: boolean[] = [];
  const m2: boolean[] = [];
  out.forEach((o, j) => {
    const c1 = w[0]! * t1[j]!;
    const c2 = w[1]! * t2[j]!;
    const options: [boolean, boolean][] = [[false, false], [true, false], [false, true], [true, true]];
    const hit = options.find(([k1, k2]) => Math.abs(o - ((k1 ? c1 : 0) + (k2 ? c2 : 0)) / 0.5) < 1e-9);
    assert.ok(hit, `entry ${j} = ${o} is none of 0, ${c1 / 0.5}, ${c2 / 0.5}, ${(c1 + c2) / 0.5}`);
    m1.push(hit[0]);
    m2.push(hit[1]);
  });
  // Same seed, same result.
  assert.deepEqual(Array.from(dareLinear([f64(t1), f64(t2)], w, 0.5, 11).data() as Float64Array), out);
  // randomPrune alone: the survivors of t are t/density, the rest 0.
  const rp = Array.from(randomPrune(f64(t1), 0.5, 11).data() as Float64Array);
  rp.forEach((v, j) => assert.ok(v === 0 || v === t1[j]! / 0.5, `randomPrune entry ${j} = ${v}`));
  // With the masks recovered above, the recombination is exact (documents the read-back).
  out.forEach((o, j) => assert.equal(o, ((m1[j] ? w[0]! * t1[j]! : 0) + (m2[j] ? w[1]! * t2[j]! : 0)) / 0.5));
  // On many entries the kept fraction is near the density (1000 draws: 0.5 +- 0.1).
  const big = Array.from(randomPrune(tensor(new Float64Array(1000).fill(1)), 0.5, 5).data() as Float64Array);
  assert.ok(big.every((v) => v === 0 || v === 2), 'ones become 0 or 2');
  const kept = big.filter((v) => v !== 0).length / 1000;
  assert.ok(kept > 0.4 && kept < 0.6, `kept fraction ${kept}`);
}));

test('DARE-TIES with density 0.5: drop and rescale, then sign election on the survivors', () => tidy(() => {
  // t1 = +1 everywhere, t2 = -10 everywhere, weights [1, 1]. Per entry: none kept -> 0; only t1 -> 2;
  // only t2 -> -20; both -> total 2 - 20 < 0 elects -, so only t2 counts -> -20.
  const t1 = f64([1, 1, 1, 1, 1, 1]);
  const t2 = f64([-10, -10, -10, -10, -10, -10]);
  const got = Array.from(dareTies([t1, t2], [1, 1], 0.5, 3, 'total').data() as Float64Array);
  got.forEach((v, j) => assert.ok([0, 2, -20].includes(v), `entry ${j} = ${v}`));
  // dare_linear with the same seed draws the same masks (0, 2, -20 or -18 = both kept); dare_ties
  // must agree entry by entry (both kept -> -20).
  const lin = Array.from(dareLinear([t1, t2], [1, 1], 0.5, 3).data() as Float64Array);
  lin.forEach((v, j) => assert.ok([0, 2, -20, -18].includes(v), `dare_linear entry ${j} = ${v}`));
  assert.deepEqual(got, lin.map((v) => (v === -18 ? -20 : v)));
}));

// ---------------------------------------------------------------------------------------------
// (2) addWeightedAdapter on the tiny llama with hand-set adapters
// ---------------------------------------------------------------------------------------------

const H = 32;  // llama fixture hidden size; q_proj is 32 -> 32
const Q = ['model.layers.0.self_attn.q_proj', 'model.layers.1.self_attn.q_proj'];
// Adapter "a": r 2, alpha 4 -> scaling 2. Adapter "b": r 2, alpha 2 -> scaling 1.
const A_a = dense(2, H, [[0, 0, 1], [0, 1, 2], [1, 2, -1], [1, 3, 0.5]]);
const B_a = dense(H, 2, [[0, 0, 1], [1, 1, 2], [2, 0, -1], [3, 1, 0.25]]);
const A_b = dense(2, H, [[0, 0, -3], [0, 4, 1], [1, 3, 2], [1, 5, -0.5]]);
const B_b = dense(H, 2, [[0, 0, 2], [3, 1, 1], [2, 0, 1], [4, 1, -0.5]]);
// By hand: B_a A_a rows: 0 {0:1, 1:2}, 1 {2:-2, 3:1}, 2 {0:-1, 1:-2}, 3 {2:-0.25, 3:0.125}
//          B_b A_b rows: 0 {0:-6, 4:2}, 2 {0:-3, 4:1}, 3 {3:2, 5:-0.5}, 4 {3:-1, 5:0.25}

function setState(layer: LoraLayer, name: string, A: number[][], B: number[][], path: string): void {
  layer.loadAdapterState(name, new Map([['lora_A.weight', tensor(A)], ['lora_B.weight', tensor(B)]]), path);
}

/** Tiny llama with LoRA "a" and "b" on q_proj (both layers), A/B overwritten with the literals above. */
function handSet(): PeftModel {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const peft = PeftModel.create(m, { r: 2, loraAlpha: 4, targetModules: ['q_proj'] }, { adapterName: 'a' });
  peft.addAdapter('b', { r: 2, loraAlpha: 2, targetModules: ['q_proj'] });
  for (const p of Q) {
    const l = m.getSubmodule(p) as LoraLayer;
    setState(l, 'a', A_a, B_a, p);
    setState(l, 'b', A_b, B_b, p);
    assert.equal(l.scaling('a'), 2);
    assert.equal(l.scaling('b'), 1);
  }
  return peft;
}

const layerOf = (peft: PeftModel, p: string) => peft.model.getSubmodule(p) as LoraLayer;

/** Combines a and b into c and returns, per q_proj layer, c's A, B and B A (scaling of c must be 1). */
function combine(peft: PeftModel, weights: number[], o: CombineOptions, wantRank: number): { A: Tensor; B: Tensor; BA: Tensor }[] {
  const r = addWeightedAdapter(peft, ['a', 'b'], weights, 'c', o);
  assert.equal(r, wantRank, `${o.combination}: returned rank`);
  const cfg = peft.configs.get('c') as LoraConfig;
  assert.equal(cfg.r, wantRank, `${o.combination}: config r`);
  assert.equal(cfg.loraAlpha, wantRank, `${o.combination}: lora_alpha = r`);
  return Q.map((p) => {
    const l = layerOf(peft, p);
    assert.equal(l.adapterRank('c'), wantRank);
    assert.equal(l.scaling('c'), 1, `${o.combination}: scaling 1`);
    const A = l.A('c');
    const B = l.B('c');
    assert.deepEqual(A.shape, [wantRank, H]);
    assert.deepEqual(B.shape, [H, wantRank]);
    return { A, B, BA: B.matmul(A) };
  });
}

// Expected per-factor results (A weights sign(w s) sqrt|w s|, B weights sqrt|w s|).
// linear, weights [2, -1]: w s = [4, -1] -> A' = 2 A_a - A_b, B' = 2 B_a + B_b.
const LINEAR_A = dense(2, H, [[0, 0, 5], [0, 1, 4], [0, 4, -1], [1, 2, -2], [1, 3, -1], [1, 5, 0.5]]);
const LINEAR_B = dense(H, 2, [[0, 0, 4], [1, 1, 4], [2, 0, -1], [3, 1, 1.5], [4, 1, -0.5]]);
// ΔW = Σ w s B A for weights [2, -1] = 4 B_a A_a - B_b A_b (cat and svd reproduce it exactly).
const DELTA_2_M1 = dense(H, H, [
  [0, 0, 10], [0, 1, 8], [0, 4, -2],
  [1, 2, -8], [1, 3, 4],
  [2, 0, -1], [2, 1, -8], [2, 4, -1],
  [3, 2, -1], [3, 3, -1.5], [3, 5, 0.5],
  [4, 3, 1], [4, 5, -0.25],
]);
// ties, weights [2, 1]: w s = [4, 1] -> factor weights [2, 1] for both A and B.
//  A (0,0): 1 vs -3 -> sum -2 -> -, only b: -3.  (0,1): 2*2 = 4.  (0,4): 1.  (1,2): 2*-1 = -2.
//    (1,3): 0.5, 2 -> (2*0.5 + 2)/2 = 1.5.  (1,5): -0.5.
//  B (0,0): (2*1 + 2)/2 = 2.  (1,1): 4.  (2,0): -1 vs 1 -> sum 0 -> tie -> + -> only b: 1.
//    (3,1): (2*0.25 + 1)/2 = 0.75.  (4,1): -0.5.
const TIES_A = dense(2, H, [[0, 0, -3], [0, 1, 4], [0, 4, 1], [1, 2, -2], [1, 3, 1.5], [1, 5, -0.5]]);
const TIES_B = dense(H, 2, [[0, 0, 2], [1, 1, 4], [2, 0, 1], [3, 1, 0.75], [4, 1, -0.5]]);
// 'frequency' differs only at A (0,0): signs +1, -1 -> 0 -> + -> only a: 2*1 = 2.
const TIES_FREQ_A = dense(2, H, [[0, 0, 2], [0, 1, 4], [0, 4, 1], [1, 2, -2], [1, 3, 1.5], [1, 5, -0.5]]);
// ties with density 3/64 (k = 3 of the 64 entries of each A and B): drops A_a (1,3)=0.5, A_b (1,5)=-0.5,
// B_a (3,1)=0.25, B_b (4,1)=-0.5. Then A (1,3): only b: 2; (1,5): 0. B (3,1): only b: 1; (4,1): 0.
const TIES_K3_A = dense(2, H, [[0, 0, -3], [0, 1, 4], [0, 4, 1], [1, 2, -2], [1, 3, 2]]);
const TIES_K3_B = dense(H, 2, [[0, 0, 2], [1, 1, 4], [2, 0, 1], [3, 1, 1]]);
// magnitude_prune with density 3/64, weights [2, -1]: A' = 2 prune(A_a) - prune(A_b), B' = 2 prune(B_a) + prune(B_b).
const MP_K3_A = dense(2, H, [[0, 0, 5], [0, 1, 4], [0, 4, -1], [1, 2, -2], [1, 3, -2]]);
const MP_K3_B = dense(H, 2, [[0, 0, 4], [1, 1, 4], [2, 0, -1], [3, 1, 1]]);
// ties_svd, density 1, weights [2, 1] on ΔW_a = 2 B_a A_a and ΔW_b = B_b A_b:
//  row0: col0 2 vs -6 -> - -> -6; col1 2*4 = 8; col4 2.   row1: col2 2*-4 = -8; col3 2*2 = 4.
//  row2: col0 -2, -3 -> (2*-2 - 3)/2 = -3.5; col1 -8; col4 1.
//  row3: col2 2*-0.5 = -1; col3 0.25, 2 -> (0.5 + 2)/2 = 1.25; col5 -0.5.   row4: col3 -1; col5 0.25.
// Its rank is 5 (a rank-2 block on rows {0,2} and a rank-3 block on rows {1,3,4}).
const TIES_SVD = dense(H, H, [
  [0, 0, -6], [0, 1, 8], [0, 4, 2],
  [1, 2, -8], [1, 3, 4],
  [2, 0, -3.5], [2, 1, -8], [2, 4, 1],
  [3, 2, -1], [3, 3, 1.25], [3, 5, -0.5],
  [4, 3, -1], [4, 5, 0.25],
]);

test('linear: A and B combined separately with sqrt(|w s|), the sign on A; alpha = r', () => tidy(() => {
  const peft = handSet();
  for (const { A, B } of combine(peft, [2, -1], { combination: 'linear' }, 2)) {
    close(A, LINEAR_A, 1e-6, 'linear A');
    close(B, LINEAR_B, 1e-6, 'linear B');
  }
  peft.dispose();
}));

test('cat: ranks stack, A rows scaled by w s, B columns as they are; B A = Σ w s B_i A_i exactly', () => tidy(() => {
  const peft = handSet();
  for (const { A, B, BA } of combine(peft, [2, -1], { combination: 'cat' }, 4)) {
    // A' = [2*2*A_a ; -1*1*A_b], B' = [B_a | B_b]
    close(A, [...A_a.map((r) => r.map((v) => 4 * v)), ...A_b.map((r) => r.map((v) => -v))], 1e-6, 'cat A');
    close(B, B_a.map((r, i) => [...r, ...B_b[i]!]), 0, 'cat B');
    close(BA, DELTA_2_M1, 1e-6, 'cat B A');
  }
  peft.dispose();
}));

test('svd: ΔW = Σ w s B A truncated by SVD; exact when svd_rank >= rank(ΔW); default rank = max rank', () => tidy(() => {
  // weights [2, -1]: ΔW has rank 4 -> svd_rank 4 reproduces it.
  let peft = handSet();
  for (const { A, B, BA } of combine(peft, [2, -1], { combination: 'svd', svdRank: 4 }, 4)) {
    close(BA, DELTA_2_M1, 1e-5, 'svd rank 4: B A');
    // A' = Vh[:k] has orthonormal rows; B' = U[:, :k] diag(S) has orthogonal columns of norm S, descending.
    close(A.matmul(A.transpose(0, 1)), dense(4, 4, [[0, 0, 1], [1, 1, 1], [2, 2, 1], [3, 3, 1]]), 1e-5, 'A A^T = I');
    const norms = Array.from(B.norm(2, 0).data() as Float32Array);
    for (let i = 1; i < norms.length; i++) assert.ok(norms[i - 1]! >= norms[i]! - 1e-5, `singular values descend: ${norms}`);
  }
  peft.dispose();
  // weights [1, 0]: ΔW = 2 B_a A_a, rank 2; the default svd_rank (max rank, 2) reproduces it.
  const DELTA_A = dense(H, H, [[0, 0, 2], [0, 1, 4], [1, 2, -4], [1, 3, 2], [2, 0, -2], [2, 1, -4], [3, 2, -0.5], [3, 3, 0.25]]);
  peft = handSet();
  for (const { BA } of combine(peft, [1, 0], { combination: 'svd' }, 2)) close(BA, DELTA_A, 1e-5, 'svd default rank: B A');
  peft.dispose();
  // svd_rank 1 keeps the top singular direction: the block on rows {0,2} x cols {0,1} has singular
  // value sqrt(40) > sqrt(20.3125) of the block on rows {1,3} x cols {2,3}.
  peft = handSet();
  for (const { BA } of combine(peft, [1, 0], { combination: 'svd', svdRank: 1 }, 1)) {
    close(BA, dense(H, H, [[0, 0, 2], [0, 1, 4], [2, 0, -2], [2, 1, -4]]), 1e-5, 'svd rank 1: B A');
  }
  peft.dispose();
}));

test('ties on the factors (density 1 and 0.5, total and frequency) and with trimming', () => tidy(() => {
  let peft = handSet();
  for (const { A, B } of combine(peft, [2, 1], { combination: 'ties', density: 1 }, 2)) {
    close(A, TIES_A, 1e-6, 'ties A');
    close(B, TIES_B, 1e-6, 'ties B');
  }
  peft.dispose();
  // density 0.5 keeps 32 of the 64 entries of each factor: all 4 non-zeros survive, so the result
  // is the density-1 one.
  peft = handSet();
  for (const { A, B } of combine(peft, [2, 1], { combination: 'ties', density: 0.5 }, 2)) {
    close(A, TIES_A, 1e-6, 'ties 0.5 A');
    close(B, TIES_B, 1e-6, 'ties 0.5 B');
  }
  peft.dispose();
  peft = handSet();
  for (const { A, B } of combine(peft, [2, 1], { combination: 'ties', density: 1, majoritySignMethod: 'frequency' }, 2)) {
    close(A, TIES_FREQ_A, 1e-6, 'ties frequency A');
    close(B, TIES_B, 1e-6, 'ties frequency B');
  }
  peft.dispose();
  peft = handSet();
  for (const { A, B } of combine(peft, [2, 1], { combination: 'ties', density: 3 / 64 }, 2)) {
    close(A, TIES_K3_A, 1e-6, 'ties k=3 A');
    close(B, TIES_K3_B, 1e-6, 'ties k=3 B');
  }
  peft.dispose();
}));

test('dare_linear / dare_ties / magnitude_prune at density 1 equal linear / ties; magnitude_prune trims', () => tidy(() => {
  let peft = handSet();
  for (const { A, B } of combine(peft, [2, -1], { combination: 'dare_linear', density: 1, seed: 5 }, 2)) {
    close(A, LINEAR_A, 1e-6, 'dare_linear A');
    close(B, LINEAR_B, 1e-6, 'dare_linear B');
  }
  peft.dispose();
  peft = handSet();
  for (const { A, B } of combine(peft, [2, 1], { combination: 'dare_ties', density: 1, seed: 5 }, 2)) {
    close(A, TIES_A, 1e-6, 'dare_ties A');
    close(B, TIES_B, 1e-6, 'dare_ties B');
  }
  peft.dispose();
  peft = handSet();
  for (const { A, B } of combine(peft, [2, -1], { combination: 'magnitude_prune', density: 1 }, 2)) {
    close(A, LINEAR_A, 1e-6, 'magnitude_prune A');
    close(B, LINEAR_B, 1e-6, 'magnitude_prune B');
  }
  peft.dispose();
  peft = handSet();
  for (const { A, B } of combine(peft, [2, -1], { combination: 'magnitude_prune', density: 3 / 64 }, 2)) {
    close(A, MP_K3_A, 1e-6, 'magnitude_prune k=3 A');
    close(B, MP_K3_B, 1e-6, 'magnitude_prune k=3 B');
  }
  peft.dispose();
}));

test('ties_svd: TIES on the full ΔW_i = s_i B_i A_i, then SVD (exact with svd_rank >= 5)', () => tidy(() => {
  let peft = handSet();
  for (const { BA } of combine(peft, [2, 1], { combination: 'ties_svd', density: 1, svdRank: 6 }, 6)) {
    close(BA, TIES_SVD, 1e-5, 'ties_svd B A');
  }
  peft.dispose();
  // dare_linear_svd at density 1 is svd.
  peft = handSet();
  for (const { BA } of combine(peft, [2, -1], { combination: 'dare_linear_svd', density: 1, svdRank: 4 }, 4)) {
    close(BA, DELTA_2_M1, 1e-5, 'dare_linear_svd B A');
  }
  peft.dispose();
}));

test('errors: mixed ranks for linear, missing density, unknown adapter', () => tidy(() => {
  const peft = handSet();
  peft.addAdapter('d', { r: 3, loraAlpha: 3, targetModules: ['q_proj'] });
  assert.throws(() => addWeightedAdapter(peft, ['a', 'd'], [1, 1], 'x', { combination: 'linear' }), /cat|svd/);
  for (const combination of ['ties', 'dare_linear', 'dare_ties', 'magnitude_prune', 'ties_svd'] as const) {
    assert.throws(() => addWeightedAdapter(peft, ['a', 'b'], [1, 1], 'x', { combination }), /density/, combination);
  }
  assert.throws(() => addWeightedAdapter(peft, ['a', 'nope'], [1, 1], 'x', { combination: 'cat' }), /nope/);
  assert.ok(!peft.adapterNames().includes('x'), 'no adapter is left behind by a failed call');
  // Mixed ranks are fine for cat (sum of ranks) and svd (max rank by default).
  assert.equal(addWeightedAdapter(peft, ['a', 'd'], [1, 1], 'cat_ad', { combination: 'cat' }), 5);
  assert.equal(addWeightedAdapter(peft, ['a', 'd'], [1, 1], 'svd_ad', { combination: 'svd' }), 3);
  peft.dispose();
}));

// ---------------------------------------------------------------------------------------------
// (3) the combined adapter drives the model
// ---------------------------------------------------------------------------------------------

test('cat with weights [1, 1] runs like a and b active together (and so does full-rank svd)', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const peft = PeftModel.create(m, { r: 2, loraAlpha: 4, initLoraWeights: false, targetModules: ['q_proj', 'v_proj'] }, { adapterName: 'a', seed: 1 });
  peft.addAdapter('b', { r: 3, loraAlpha: 2, initLoraWeights: false, targetModules: ['q_proj', 'o_proj'] }, { seed: 2 });
  const ids = tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
  const run = () => noGrad(() => m.forward({ inputIds: ids }).logits);
  const base = peft.withAdaptersDisabled(run);
  peft.setAdapter(['a', 'b']);
  const both = run();
  assert.ok(maxDiff(both, base) > 1e-3, 'the adapters change the output');
  assert.equal(addWeightedAdapter(peft, ['a', 'b'], [1, 1], 'c', { combination: 'cat' }), 5);
  peft.setAdapter('c');
  const d = maxDiff(run(), both);
  assert.ok(d < 1e-5, `cat vs a+b: max diff ${d}`);
  // o_proj has only b: zero-padded to rank 5, still exact.
  const o = m.getSubmodule('model.layers.0.self_attn.o_proj') as LoraLayer;
  assert.ok(o.hasAdapter('c') && o.adapterRank('c') === 5);
  assert.equal(addWeightedAdapter(peft, ['a', 'b'], [1, 1], 's', { combination: 'svd', svdRank: 5 }), 5);
  peft.setAdapter('s');
  const ds = maxDiff(run(), both);
  assert.ok(ds < 1e-4, `svd rank 5 vs a+b: max diff ${ds}`);
  peft.dispose();
}));

test('GPT-2 Conv1D: svd works in the [out, in] orientation (B [out, k], A [k, in])', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const peft = PeftModel.create(m, { r: 2, loraAlpha: 4, initLoraWeights: false, targetModules: ['c_attn'] }, { adapterName: 'a', seed: 3 });
  peft.addAdapter('b', { r: 2, loraAlpha: 2, initLoraWeights: false, targetModules: ['c_attn'] }, { seed: 4 });
  assert.equal(addWeightedAdapter(peft, ['a', 'b'], [1, -0.5], 'c', { combination: 'svd', svdRank: 4 }), 4);
  for (const [p, l] of peft.tunerLayers() as [string, LoraLayer][]) {
    assert.deepEqual(l.A('c').shape, [4, l.inFeatures], p);
    assert.deepEqual(l.B('c').shape, [l.outFeatures, 4], p);
    // Expected ΔW in [out, in], built from the factors directly (not from deltaWeight).
    const want = l.B('a').matmul(l.A('a')).mul(1 * 2).add(l.B('b').matmul(l.A('b')).mul(-0.5 * 1));
    const d = maxDiff(l.B('c').matmul(l.A('c')), want);
    assert.ok(d < 1e-5, `${p}: svd B A vs ΔW: ${d}`);
  }
  peft.dispose();
}));
