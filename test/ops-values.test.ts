// Op values checked against numbers worked out by hand from the math definitions (never by the
// library itself). Formula-based references use Math.* only.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  tensor, scalar, zeros, ones, full, arange, eye, rand, randn, randint, multinomial, manualSeed, tidy,
  cat, stack, where, matmul, bmm, outer, addmm, linear, svd, qr, layerNorm, dropout, embedding, crossEntropy,
  type NestedArray, type Tensor,
} from '../src/index.js';

const TOL = 1e-5;
/** Deep comparison of nested numbers/booleans; floats within TOL absolute + TOL relative. */
function close(actual: NestedArray, expected: NestedArray, tol = TOL, path = '$'): void {
  if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual), `${path}: expected an array, got ${JSON.stringify(actual)}`);
    assert.equal(actual.length, expected.length, `${path}: length`);
    expected.forEach((e, i) => close((actual as NestedArray[])[i]!, e, tol, `${path}[${i}]`));
    return;
  }
  if (typeof expected === 'boolean') { assert.equal(actual, expected, path); return; }
  assert.equal(typeof actual, 'number', `${path}: expected a number, got ${JSON.stringify(actual)}`);
  const a = actual as number;
  assert.ok(Math.abs(a - expected) <= tol + tol * Math.abs(expected), `${path}: got ${a}, expected ${expected}`);
}
/** Checks a tensor's shape and values (and dtype when given). */
function check(t: Tensor, expected: NestedArray, opts: { shape?: number[]; dtype?: string; tol?: number } = {}): void {
  if (opts.shape) assert.deepEqual(t.shape, opts.shape, 'shape');
  if (opts.dtype) assert.equal(t.dtype, opts.dtype, 'dtype');
  close(t.toArray(), expected, opts.tol ?? TOL);
}
const i64 = (v: NestedArray): Tensor => tensor(v, { dtype: 'int64' });
/** Plain-JS matrix product, used to check decompositions independently of the library. */
function mm(a: number[][], b: number[][]): number[][] {
  return a.map((row) => b[0]!.map((_, j) => row.reduce((s, v, k) => s + v * b[k]![j]!, 0)));
}
const tr = (a: number[][]): number[][] => a[0]!.map((_, j) => a.map((r) => r[j]!));
/** erf by its Maclaurin series 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1)); fine for |x| <= 3. */
function erf(x: number): number {
  let term = x; let sum = x;
  for (let n = 1; n < 80; n++) { term *= -x * x / n; sum += term / (2 * n + 1); }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

test('views', () => tidy(() => {
  const x = tensor([[1, 2, 3], [4, 5, 6]]);
  check(x.reshape(3, 2), [[1, 2], [3, 4], [5, 6]], { shape: [3, 2] });
  check(x.reshape(-1), [1, 2, 3, 4, 5, 6], { shape: [6] });
  check(x.view(3, 2), [[1, 2], [3, 4], [5, 6]]);
  check(x.view(-1, 1), [[1], [2], [3], [4], [5], [6]]);
  const t = x.transpose(0, 1);
  check(t, [[1, 4], [2, 5], [3, 6]], { shape: [3, 2] });
  check(x.mT, [[1, 4], [2, 5], [3, 6]]);
  assert.equal(t.isContiguous(), false);
  const c = t.contiguous();
  assert.equal(c.isContiguous(), true);
  check(c, [[1, 4], [2, 5], [3, 6]]);
  check(c.view(6), [1, 4, 2, 5, 3, 6]);
  const x3 = tensor([[[1, 2, 3], [4, 5, 6]]]); // [1, 2, 3]
  check(x3.permute(2, 0, 1), [[[1, 4]], [[2, 5]], [[3, 6]]], { shape: [3, 1, 2] });
  check(x3.squeeze(), [[1, 2, 3], [4, 5, 6]], { shape: [2, 3] });
  check(x3.squeeze(0), [[1, 2, 3], [4, 5, 6]], { shape: [2, 3] });
  assert.deepEqual(x3.squeeze(1).shape, [1, 2, 3]);
  const v = tensor([1, 2, 3]);
  check(v.unsqueeze(0), [[1, 2, 3]], { shape: [1, 3] });
  check(v.unsqueeze(1), [[1], [2], [3]], { shape: [3, 1] });
  check(v.unsqueeze(-1), [[1], [2], [3]], { shape: [3, 1] });
  check(tensor([[1], [2]]).expand(2, 3), [[1, 1, 1], [2, 2, 2]]);
  check(tensor([[1], [2]]).expand(-1, 2), [[1, 1], [2, 2]]);
  check(v.expand(2, 3), [[1, 2, 3], [1, 2, 3]]);
  check(x.narrow(1, 1, 2), [[2, 3], [5, 6]]);
  check(x.narrow(0, 1, 1), [[4, 5, 6]]);
  const r = tensor([0, 1, 2, 3, 4, 5]);
  check(r.slice(0, 1, 6, 2), [1, 3, 5]);
  check(r.slice(0, -3), [3, 4, 5]);
  check(r.slice(0, 0, Number.MAX_SAFE_INTEGER, 3), [0, 3]);
  check(r.slice(0, -4, -1), [2, 3, 4]);
  check(x.slice(1, 0, 3, 2), [[1, 3], [4, 6]]);
  check(x.select(0, 1), [4, 5, 6], { shape: [3] });
  check(x.select(1, -1), [3, 6]);
  check(x.flip(0), [[4, 5, 6], [1, 2, 3]]);
  check(x.flip(1), [[3, 2, 1], [6, 5, 4]]);
  check(x.flip(0, 1), [[6, 5, 4], [3, 2, 1]]);
  check(x3.flatten(), [1, 2, 3, 4, 5, 6], { shape: [6] });
  check(tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]).flatten(1), [[1, 2, 3, 4], [5, 6, 7, 8]], { shape: [2, 4] });
  check(tensor([1, 2]).repeat(2), [1, 2, 1, 2]);
  check(tensor([1, 2]).repeat(2, 2), [[1, 2, 1, 2], [1, 2, 1, 2]], { shape: [2, 4] });
  check(tensor([[1], [2]]).repeat(1, 3), [[1, 1, 1], [2, 2, 2]]);
}));

test('indexing, joining and splitting', () => tidy(() => {
  const x = tensor([[1, 2, 3], [4, 5, 6]]);
  check(x.indexSelect(0, i64([1, 0, 1])), [[4, 5, 6], [1, 2, 3], [4, 5, 6]]);
  check(x.indexSelect(1, i64([2, 0])), [[3, 1], [6, 4]]);
  check(x.gather(1, i64([[0, 0], [2, 1]])), [[1, 1], [6, 5]]);
  check(x.gather(0, i64([[1, 0, 1]])), [[4, 2, 6]]);
  check(zeros([2, 3]).scatter(1, i64([[2], [0]]), tensor([[7], [8]])), [[0, 0, 7], [8, 0, 0]]);
  check(zeros([2, 3]).scatter(1, i64([[1], [2]]), 5), [[0, 5, 0], [0, 0, 5]]);
  check(zeros([3]).scatterAdd(0, i64([0, 1, 0, 2]), tensor([1, 2, 3, 4])), [4, 2, 4]);
  check(ones([3, 2]).indexAdd(0, i64([0, 2, 0]), tensor([[1, 1], [2, 2], [3, 3]])), [[5, 5], [1, 1], [3, 3]]);
  const mask = tensor([[true, false, true], [false, false, true]]);
  check(x.maskedFill(mask, -1), [[-1, 2, -1], [4, 5, -1]]);
  check(x.maskedFill(mask, scalar(9)), [[9, 2, 9], [4, 5, 9]]);
  check(x.maskedFill(tensor([false, true, false]), 0), [[1, 0, 3], [4, 0, 6]]); // broadcast mask
  check(x, [[1, 2, 3], [4, 5, 6]]); // not in place
  const cond = tensor([true, false, true]);
  check(where(cond, tensor([1, 2, 3]), tensor([10, 20, 30])), [1, 20, 3]);
  check(where(cond, 0, tensor([10, 20, 30])), [0, 20, 0]);
  check(where(cond, tensor([1, 2, 3]), -1), [1, -1, 3]);
  check(where(tensor([[true], [false]]), tensor([1, 2]), tensor([7, 8])), [[1, 2], [7, 8]]);
  const w = tensor([[0, 0.5], [1, 1.5], [2, 2.5]]);
  check(embedding(w, i64([[2, 0], [1, 1]])), [[[2, 2.5], [0, 0.5]], [[1, 1.5], [1, 1.5]]], { shape: [2, 2, 2] });
  check(embedding(w, i64([1])), [[1, 1.5]]);
  const a = tensor([0, 1, 2, 3, 4]);
  assert.deepEqual(a.split(2).map((t) => t.toArray()), [[0, 1], [2, 3], [4]]);
  assert.deepEqual(a.split([1, 4]).map((t) => t.toArray()), [[0], [1, 2, 3, 4]]);
  assert.deepEqual(x.split(2, 1).map((t) => t.toArray()), [[[1, 2], [4, 5]], [[3], [6]]]);
  assert.deepEqual(a.chunk(3).map((t) => t.toArray()), [[0, 1], [2, 3], [4]]);
  assert.deepEqual(tensor([0, 1, 2, 3, 4, 5]).chunk(2).map((t) => t.toArray()), [[0, 1, 2], [3, 4, 5]]);
  assert.deepEqual(x.chunk(3, 1).map((t) => t.toArray()), [[[1], [4]], [[2], [5]], [[3], [6]]]);
  check(cat([x, tensor([[7, 8, 9]])]), [[1, 2, 3], [4, 5, 6], [7, 8, 9]], { shape: [3, 3] });
  check(cat([x, tensor([[0], [-1]])], 1), [[1, 2, 3, 0], [4, 5, 6, -1]], { shape: [2, 4] });
  check(cat([tensor([1]), tensor([2, 3])]), [1, 2, 3]);
  check(stack([tensor([1, 2]), tensor([3, 4])]), [[1, 2], [3, 4]], { shape: [2, 2] });
  check(stack([tensor([1, 2]), tensor([3, 4])], 1), [[1, 3], [2, 4]]);
  check(stack([tensor([1, 2]), tensor([3, 4]), tensor([5, 6])], -1), [[1, 3, 5], [2, 4, 6]], { shape: [2, 3] });
}));

test('elementwise arithmetic, math and comparisons', () => tidy(() => {
  const a = tensor([1, 2, 3, 4]);
  const b = tensor([4, 3, 2, 1]);
  check(a.add(b), [5, 5, 5, 5]);
  check(a.add(b, 2), [9, 8, 7, 6]);
  check(a.add(b, -0.5), [-1, 0.5, 2, 3.5]);
  check(a.add(10), [11, 12, 13, 14]);
  check(a.add(2, 3), [7, 8, 9, 10]);
  check(a.add(tensor([[10], [20]])), [[11, 12, 13, 14], [21, 22, 23, 24]], { shape: [2, 4] });
  check(a.sub(b), [-3, -1, 1, 3]);
  check(a.sub(1), [0, 1, 2, 3]);
  check(a.mul(b), [4, 6, 6, 4]);
  check(a.mul(0.5), [0.5, 1, 1.5, 2]);
  check(a.div(b), [0.25, 2 / 3, 1.5, 4]);
  check(a.div(2), [0.5, 1, 1.5, 2]);
  check(a.pow(2), [1, 4, 9, 16]);
  check(a.pow(tensor([0, 1, 2, 0.5])), [1, 2, 9, 2]);
  check(a.pow(-1), [1, 0.5, 1 / 3, 0.25]);
  check(tensor([0, 1, -1, 2]).exp(), [1, 2.718281828459045, 0.36787944117144233, 7.38905609893065]);
  check(tensor([1, 2.718281828459045, 10, 0.5]).log(), [0, 1, 2.302585092994046, -0.6931471805599453]);
  check(tensor([0, 1, 4, 2]).sqrt(), [0, 1, 2, 1.4142135623730951]);
  check(tensor([1, 4, 0.25, 2]).rsqrt(), [1, 0.5, 2, 0.7071067811865476]);
  check(tensor([-2, 0, 3.5]).abs(), [2, 0, 3.5]);
  check(tensor([-2, 0, 3.5]).neg(), [2, 0, -3.5]);
  const c = tensor([-3, -1, 0, 2, 5]);
  check(c.clamp(-1, 2), [-1, -1, 0, 2, 2]);
  check(c.clamp(0), [0, 0, 0, 2, 5]);
  check(c.clamp(undefined, 1), [-3, -1, 0, 1, 1]);
  check(a.maximum(b), [4, 3, 3, 4]);
  check(a.minimum(b), [1, 2, 2, 1]);
  check(a.maximum(2.5), [2.5, 2.5, 3, 4]);
  check(a.minimum(2.5), [1, 2, 2.5, 2.5]);
  check(a.eq(tensor([1, 0, 3, 0])), [true, false, true, false], { dtype: 'bool' });
  check(a.eq(b), [false, false, false, false], { dtype: 'bool' });
  check(a.ne(2), [true, false, true, true], { dtype: 'bool' });
  check(a.lt(b), [true, true, false, false], { dtype: 'bool' });
  check(a.le(2), [true, true, false, false], { dtype: 'bool' });
  check(a.gt(b), [false, false, true, true], { dtype: 'bool' });
  check(a.ge(3), [false, false, true, true], { dtype: 'bool' });
  check(a.le(tensor([1, 1, 3, 3])), [true, false, true, false], { dtype: 'bool' });
  const n = i64([1, 2, 3]);
  check(n.add(2), [3, 4, 5], { dtype: 'int64' });
  check(n.mul(3), [3, 6, 9], { dtype: 'int64' });
  check(n.sub(1), [0, 1, 2], { dtype: 'int64' });
  check(n.add(i64([10, 20, 30])), [11, 22, 33], { dtype: 'int64' });
  assert.ok(n.add(2).data() instanceof BigInt64Array);
}));

test('activations', () => tidy(() => {
  const xs = [-2, -1, -0.5, 0, 0.5, 1, 2];
  const x = tensor(xs);
  // erf reference sanity: known values erf(0.5), erf(1), erf(2).
  close(erf(0.5), 0.5204998778130465, 1e-12);
  close(erf(1), 0.8427007929497149, 1e-12);
  close(erf(2), 0.9953222650189527, 1e-12);
  check(x.tanh(), xs.map((v) => (Math.exp(v) - Math.exp(-v)) / (Math.exp(v) + Math.exp(-v))));
  check(tensor([0.5, 2]).tanh(), [0.46211715726000974, 0.9640275800758169]);
  const sig = (v: number): number => 1 / (1 + Math.exp(-v));
  check(x.sigmoid(), xs.map(sig));
  check(tensor([0, 1]).sigmoid(), [0.5, 0.7310585786300049]);
  check(x.relu(), [0, 0, 0, 0, 0.5, 1, 2]);
  check(x.gelu(), xs.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2))));
  check(x.gelu('none'), xs.map((v) => 0.5 * v * (1 + erf(v / Math.SQRT2))));
  check(tensor([1, -1]).gelu(), [0.8413447460685429, -0.15865525393145707]);
  const k = Math.sqrt(2 / Math.PI);
  check(x.gelu('tanh'), xs.map((v) => 0.5 * v * (1 + Math.tanh(k * (v + 0.044715 * v ** 3)))));
  check(x.silu(), xs.map((v) => v * sig(v)));
  check(tensor([1]).silu(), [0.7310585786300049]);
  const m = tensor([[1, 2, 3], [1, 1, 1]]);
  check(m.softmax(1), [[0.09003057317038046, 0.24472847105479767, 0.6652409557748219], [1 / 3, 1 / 3, 1 / 3]]);
  check(m.softmax(-1), [[0.09003057317038046, 0.24472847105479767, 0.6652409557748219], [1 / 3, 1 / 3, 1 / 3]]);
  check(m.softmax(0), [[0.5, 0.7310585786300049, 0.8807970779778823], [0.5, 0.2689414213699951, 0.11920292202211755]]);
  check(m.logSoftmax(1), [[-2.40760596444438, -1.40760596444438, -0.40760596444438], [-1.0986122886681098, -1.0986122886681098, -1.0986122886681098]]);
  check(tensor([1000, 1000]).logSoftmax(0), [-0.6931471805599453, -0.6931471805599453]); // no overflow
}));

test('reductions, scans, sorting', () => tidy(() => {
  const m = tensor([[1, 2, 3], [4, 5, 6]]);
  check(m.sum(), 21, { shape: [] });
  assert.equal(m.sum().item(), 21);
  check(m.sum(0), [5, 7, 9]);
  check(m.sum(1), [6, 15]);
  check(m.sum(-1), [6, 15]);
  check(m.sum([0, 1]), 21);
  check(m.sum(1, true), [[6], [15]], { shape: [2, 1] });
  check(m.mean(), 3.5);
  check(m.mean(0), [2.5, 3.5, 4.5]);
  check(m.mean(1, true), [[2], [5]], { shape: [2, 1] });
  check(m.mean([0, 1]), 3.5);
  check(m.mean([0, 1], true), [[3.5]], { shape: [1, 1] });
  assert.equal(m.max().item(), 6);
  assert.equal(m.min().item(), 1);
  const y = tensor([[3, 1, 2], [0, 5, 4]]);
  const mx = y.maxDim(1);
  check(mx.values, [3, 5]);
  check(mx.indices, [0, 1], { dtype: 'int64' });
  const mn = y.minDim(0);
  check(mn.values, [0, 1, 2]);
  check(mn.indices, [1, 0, 0]);
  const mk = y.maxDim(1, true);
  check(mk.values, [[3], [5]], { shape: [2, 1] });
  check(mk.indices, [[0], [1]], { shape: [2, 1] });
  check(y.argmax(), 4, { dtype: 'int64' });
  check(y.argmax(1), [0, 1]);
  check(y.argmax(0), [0, 1, 1]);
  check(y.argmin(1), [1, 0]);
  const v = tensor([1, 2, 3, 4]);
  check(v.var(), 5 / 3);
  check(v.var(undefined, { unbiased: false }), 1.25);
  check(m.var(1), [1, 1]);
  check(m.var(1, { unbiased: false }), [2 / 3, 2 / 3]);
  check(m.var(0, { keepdim: true }), [[4.5, 4.5, 4.5]], { shape: [1, 3] });
  check(tensor([3, -4]).norm(), 5);
  check(tensor([3, -4]).norm(2), 5);
  check(tensor([3, -4]).norm(1), 7);
  check(tensor([[3, 4], [6, -8]]).norm(2, 1), [5, 10]);
  check(tensor([[3, 4], [6, -8]]).norm(1, 0), [9, 12]);
  check(v.cumsum(0), [1, 3, 6, 10]);
  check(m.cumsum(1), [[1, 3, 6], [4, 9, 15]]);
  check(m.cumsum(0), [[1, 2, 3], [5, 7, 9]]);
  const tk = tensor([1, 5, 2, 4, 3]).topk(2);
  check(tk.values, [5, 4]);
  check(tk.indices, [1, 3], { dtype: 'int64' });
  const tks = tensor([1, 5, 2, 4, 3]).topk(2, -1, { largest: false });
  check(tks.values, [1, 2]);
  check(tks.indices, [0, 2]);
  const tk2 = tensor([[1, 9, 3], [7, 2, 8]]).topk(1, 1);
  check(tk2.values, [[9], [8]]);
  check(tk2.indices, [[1], [2]]);
  const s = tensor([3, 1, 2]).sort();
  check(s.values, [1, 2, 3]);
  check(s.indices, [1, 2, 0], { dtype: 'int64' });
  const sd = tensor([3, 1, 2]).sort(-1, true);
  check(sd.values, [3, 2, 1]);
  check(sd.indices, [0, 2, 1]);
  const ties = tensor([2, 1, 2, 1, 0]);
  check(ties.sort().values, [0, 1, 1, 2, 2]);
  check(ties.sort().indices, [4, 1, 3, 0, 2]);
  check(ties.sort(0, true).values, [2, 2, 1, 1, 0]);
  check(ties.sort(0, true).indices, [0, 2, 1, 3, 4]);
  check(tensor([[2, 1], [0, 3]]).sort(0).indices, [[1, 0], [0, 1]]);
  check(tensor([1, 2, 3]).logsumexp(0), 3.40760596444438);
  check(tensor([[1, 2, 3], [0, 0, 0]]).logsumexp(1), [3.40760596444438, 1.0986122886681098]);
  check(tensor([[1, 2, 3], [0, 0, 0]]).logsumexp(1, true), [[3.40760596444438], [1.0986122886681098]], { shape: [2, 1] });
  check(tensor([1000, 1000]).logsumexp(0), 1000.6931471805599);
  check(tensor([[0, 0], [0, 0]]).logsumexp([0, 1]), 1.3862943611198906);
}));

test('linear algebra', () => tidy(() => {
  const A = tensor([[1, 2], [3, 4]]);
  check(A.matmul(tensor([[5, 6], [7, 8]])), [[19, 22], [43, 50]]);
  check(matmul(A, tensor([1, 1])), [3, 7], { shape: [2] });
  check(matmul(tensor([1, 1]), A), [4, 6]);
  check(tensor([[1, 2, 3]]).matmul(tensor([[1], [0], [-1]])), [[-2]]);
  check(bmm(tensor([[[1, 2]], [[1, 0]]]), tensor([[[3], [4]], [[5], [6]]])), [[[11]], [[5]]], { shape: [2, 1, 1] });
  check(addmm(ones([2, 2]), A, eye(2)), [[2, 3], [4, 5]]);
  check(addmm(ones([2, 2]), A, eye(2), { beta: 2, alpha: 3 }), [[5, 8], [11, 14]]);
  check(addmm(tensor([10, 20]), A, tensor([[1, 0], [0, 0]]), { beta: 0.5 }), [[6, 10], [8, 10]]);
  const x = tensor([[1, 2, 3], [0, 1, 0]]);
  const W = tensor([[1, 0, 0], [0, 1, 1]]); // [out=2, in=3]
  check(linear(x, W, tensor([10, 20])), [[11, 25], [10, 21]], { shape: [2, 2] });
  check(linear(x, W), [[1, 5], [0, 1]]);
  check(linear(x, W, null), [[1, 5], [0, 1]]);
  check(outer(tensor([1, 2]), tensor([3, 4, 5])), [[3, 4, 5], [6, 8, 10]], { shape: [2, 3] });

  const svdCase = (a: number[][], sv: number[]): void => {
    const { U, S, Vh } = svd(tensor(a, { dtype: 'float64' }));
    check(S, sv, { tol: 1e-9 });
    const u = U.toArray() as number[][];
    const vh = Vh.toArray() as number[][];
    const s = S.toArray() as number[];
    close(mm(u.map((r) => r.map((v, j) => v * s[j]!)), vh), a, 1e-9);
    close(mm(tr(u), u), [[1, 0], [0, 1]], 1e-9);
    close(mm(vh, tr(vh)), [[1, 0], [0, 1]], 1e-9);
  };
  svdCase([[3, 0], [0, 4]], [4, 3]);
  svdCase([[2, 0], [0, 1]], [2, 1]);
  svdCase([[2, 1], [1, 2]], [3, 1]);
  const r32 = svd(tensor([[1, 0], [0, 2], [0, 0]])); // reduced: U [3,2], S [2], Vh [2,2]
  assert.deepEqual([r32.U.shape, r32.S.shape, r32.Vh.shape], [[3, 2], [2], [2, 2]]);
  check(r32.S, [2, 1]);

  const { Q, R } = qr(tensor([[3, 1], [4, 2]], { dtype: 'float64' }));
  const q = Q.toArray() as number[][];
  const r = R.toArray() as number[][];
  close(mm(tr(q), q), [[1, 0], [0, 1]], 1e-9);
  close(r[1]![0]!, 0, 1e-12);
  close(r.map((row) => row.map(Math.abs)), [[5, 2.2], [0, 0.4]], 1e-9);
  close(mm(q, r), [[3, 1], [4, 2]], 1e-9);
  const q3 = qr(tensor([[1, 1], [0, 1], [1, 0]], { dtype: 'float64' }));
  assert.deepEqual([q3.Q.shape, q3.R.shape], [[3, 2], [2, 2]]);
  const q3q = q3.Q.toArray() as number[][];
  const q3r = q3.R.toArray() as number[][];
  close(mm(tr(q3q), q3q), [[1, 0], [0, 1]], 1e-9);
  close(q3r[1]![0]!, 0, 1e-12);
  close(Math.abs(q3r[0]![0]!), Math.SQRT2, 1e-9); // |column 1| = sqrt(2)
  close(mm(q3q, q3r), [[1, 1], [0, 1], [1, 0]], 1e-9);
}));

test('layerNorm, dropout, triu/tril', () => tidy(() => {
  const x = tensor([[1, 2, 3, 4], [2, 2, 2, 2]]);
  const sd = Math.sqrt(1.25 + 1e-5); // mean 2.5, biased variance 1.25
  const y0 = [1, 2, 3, 4].map((v) => (v - 2.5) / sd);
  check(layerNorm(x, [4]), [y0, [0, 0, 0, 0]]);
  close(y0, [-1.3416347, -0.4472116, 0.4472116, 1.3416347], 1e-5);
  const w = [1, 2, 1, 0.5];
  const b = [0, 0, 1, -1];
  check(layerNorm(x, [4], tensor(w), tensor(b)), [y0.map((v, i) => v * w[i]! + b[i]!), b]);
  check(layerNorm(tensor([[1, 3]]), [2], null, null, 0), [[-1, 1]]);
  check(layerNorm(tensor([[[1, 2], [3, 4]]]), [2, 2]), [[y0.slice(0, 2), y0.slice(2)]]);

  const d = tensor([1, -2, 3, 4]);
  check(dropout(d, 0), [1, -2, 3, 4]);
  check(dropout(d, 0.5, false), [1, -2, 3, 4]);
  check(dropout(d, 1), [0, 0, 0, 0]);
  const big = full([200], 3);
  manualSeed(123);
  const r1 = dropout(big, 0.5).toArray() as number[];
  manualSeed(123);
  const r2 = dropout(big, 0.5).toArray() as number[];
  assert.deepEqual(r1, r2);
  assert.ok(r1.every((v) => v === 0 || v === 6), 'survivors are scaled by 1 / (1 - p) = 2');
  const kept = r1.filter((v) => v === 6).length;
  assert.ok(kept > 50 && kept < 150, `kept ${kept} of 200`);

  const m = tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]]);
  check(m.triu(), [[1, 2, 3], [0, 5, 6], [0, 0, 9]]);
  check(m.triu(1), [[0, 2, 3], [0, 0, 6], [0, 0, 0]]);
  check(m.triu(-1), [[1, 2, 3], [4, 5, 6], [0, 8, 9]]);
  check(m.tril(), [[1, 0, 0], [4, 5, 0], [7, 8, 9]]);
  check(m.tril(-1), [[0, 0, 0], [4, 0, 0], [7, 8, 0]]);
  check(m.tril(1), [[1, 2, 0], [4, 5, 6], [7, 8, 9]]);
  check(tensor([[1, 2, 3], [4, 5, 6]]).triu(1), [[0, 2, 3], [0, 0, 6]]);
}));

test('crossEntropy', () => tidy(() => {
  // Row 0: logits [1,2,3], target 2 -> logsumexp 3.40760596 - 3. Row 1: uniform logits -> ln 3.
  const logits = tensor([[1, 2, 3], [1, 1, 1]]);
  const nll0 = 0.40760596444438;
  const ln3 = 1.0986122886681098;
  check(crossEntropy(logits, i64([2, 0])), (nll0 + ln3) / 2, { shape: [] });
  check(crossEntropy(logits, i64([2, 0]), { reduction: 'sum' }), nll0 + ln3);
  check(crossEntropy(logits, i64([2, 0]), { reduction: 'none' }), [nll0, ln3], { shape: [2] });
  check(crossEntropy(logits, i64([0, 1]), { reduction: 'none' }), [2.40760596444438, ln3]);
  check(crossEntropy(logits, i64([2, -100])), nll0);
  check(crossEntropy(logits, i64([1, 0]), { ignoreIndex: 1 }), ln3);
  check(crossEntropy(logits, i64([1, 0]), { ignoreIndex: 1, reduction: 'sum' }), ln3);
  check(crossEntropy(logits, i64([1, 0]), { ignoreIndex: 1, reduction: 'none' }), [0, ln3]);
  // Smoothing s: (1 - s) * nll + s * mean_c(-log p_c). Row 0: mean_c(-log p_c) = 1.40760596444438.
  const s = 0.1;
  const sm0 = (1 - s) * nll0 + s * 1.40760596444438; // 0.50760596444438
  close(sm0, 0.50760596444438, 1e-12);
  check(crossEntropy(logits, i64([2, 0]), { labelSmoothing: s }), (sm0 + ln3) / 2);
  check(crossEntropy(logits, i64([2, 0]), { labelSmoothing: s, reduction: 'none' }), [sm0, ln3]);
  check(crossEntropy(logits, i64([2, 0]), { labelSmoothing: s, reduction: 'sum' }), sm0 + ln3);
}));

test('multinomial', () => tidy(() => {
  const probs = tensor([[0, 0, 1, 0], [0.25, 0.25, 0.25, 0.25]]);
  const a = multinomial(probs, 3, { replacement: true, seed: 42 });
  const b = multinomial(probs, 3, { replacement: true, seed: 42 });
  assert.deepEqual(a.shape, [2, 3]);
  assert.equal(a.dtype, 'int64');
  assert.deepEqual(a.toArray(), b.toArray());
  const rows = a.toArray() as number[][];
  assert.deepEqual(rows[0], [2, 2, 2]);
  assert.ok(rows[1]!.every((v) => Number.isInteger(v) && v >= 0 && v < 4));
  for (let seed = 0; seed < 5; seed++) {
    assert.deepEqual(multinomial(tensor([0, 0, 0, 5]), 1, { seed }).toArray(), [3]);
  }
  manualSeed(9);
  const g1 = multinomial(probs, 2).toArray();
  manualSeed(9);
  assert.deepEqual(multinomial(probs, 2).toArray(), g1);
  const noRep = multinomial(tensor([1, 1, 1, 1]), 4, { seed: 3 }).toArray() as number[];
  assert.deepEqual([...noRep].sort(), [0, 1, 2, 3]); // without replacement: a permutation
}));

test('creation and data out', () => tidy(() => {
  check(zeros([2, 2]), [[0, 0], [0, 0]], { dtype: 'float32' });
  check(ones([3]), [1, 1, 1], { dtype: 'float32' });
  check(ones([2], { dtype: 'int64' }), [1, 1], { dtype: 'int64' });
  check(full([2, 1], 7), [[7], [7]], { dtype: 'float32', shape: [2, 1] });
  check(full([2], true), [true, true], { dtype: 'bool' });
  check(arange(5), [0, 1, 2, 3, 4], { dtype: 'int64' });
  check(arange(1, 4), [1, 2, 3], { dtype: 'int64' });
  check(arange(5, 0, -2), [5, 3, 1], { dtype: 'int64' });
  check(arange(0, 1, 0.25), [0, 0.25, 0.5, 0.75], { dtype: 'float32' });
  check(arange(1, 0, -0.5), [1, 0.5], { dtype: 'float32' });
  check(arange(0, 3, 1, { dtype: 'float32' }), [0, 1, 2], { dtype: 'float32' });
  check(eye(2), [[1, 0], [0, 1]]);
  check(eye(2, 3), [[1, 0, 0], [0, 1, 0]], { shape: [2, 3] });
  const u = rand([500], { seed: 1 });
  assert.equal(u.dtype, 'float32');
  assert.ok((u.toArray() as number[]).every((v) => v >= 0 && v < 1));
  assert.deepEqual(randn([5], { seed: 3 }).toArray(), randn([5], { seed: 3 }).toArray());
  assert.notDeepEqual(randn([5], { seed: 3 }).toArray(), randn([5], { seed: 4 }).toArray());
  manualSeed(5);
  const g = randn([4]).toArray();
  manualSeed(5);
  assert.deepEqual(randn([4]).toArray(), g);
  const ri = randint(-3, 3, [300], { seed: 2 });
  assert.equal(ri.dtype, 'int64');
  const riv = ri.toArray() as number[];
  assert.ok(riv.every((v) => Number.isInteger(v) && v >= -3 && v < 3));
  assert.ok(riv.includes(-3) && riv.includes(2), 'both ends of [low, high) are reachable');
  const t = tensor([[1, 2], [3, 4]]);
  assert.deepEqual([t.shape, t.dtype, t.toArray()], [[2, 2], 'float32', [[1, 2], [3, 4]]]);
  assert.deepEqual(tensor([[[1], [2]]]).shape, [1, 2, 1]);
  check(tensor([true, false]), [true, false], { dtype: 'bool' });
  check(tensor(new Float64Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] }), [[1, 2, 3], [4, 5, 6]], { dtype: 'float64' });
  check(tensor(new Int32Array([7, -8])), [7, -8], { dtype: 'int32', shape: [2] });
  check(tensor(new BigInt64Array([5n, -6n, 7n, 8n]), { shape: [2, 2] }), [[5, -6], [7, 8]], { dtype: 'int64' });
  check(tensor(new Float32Array([0.5, 1.5]), { dtype: 'float64' }), [0.5, 1.5], { dtype: 'float64' });
  const d = tensor([1.5, -2]).data();
  assert.ok(d instanceof Float32Array);
  assert.deepEqual([...d], [1.5, -2]);
  assert.deepEqual([...i64([3, 4]).data()], [3n, 4n]);
  assert.deepEqual([...tensor([true, false]).data()], [1, 0]);
  const s = tensor(5);
  assert.deepEqual(s.shape, []);
  assert.equal(s.item(), 5);
  assert.equal(s.toArray(), 5);
  assert.equal(scalar(2.5, { dtype: 'float64' }).item(), 2.5);
  assert.equal(i64([[42]]).item(), 42);
}));

test('in-place ops', () => tidy(() => {
  const t = tensor([1, 2, 3]);
  assert.equal(t.add_(tensor([1, 1, 1]), 2), t);
  check(t, [3, 4, 5]);
  assert.equal(t.add_(1), t);
  check(t, [4, 5, 6]);
  assert.equal(t.sub_(2), t);
  check(t, [2, 3, 4]);
  assert.equal(t.mul_(2), t);
  check(t, [4, 6, 8]);
  assert.equal(t.div_(tensor([2, 3, 4])), t);
  check(t, [2, 2, 2]);
  assert.equal(t.addcmul_(tensor([1, 2, 3]), tensor([2, 2, 2]), 0.5), t); // 2 + 0.5*[2,4,6]
  check(t, [3, 4, 5]);
  assert.equal(t.addcdiv_(tensor([2, 4, 6]), tensor([2, 2, 2]), 2), t); // + 2*[1,2,3]
  check(t, [5, 8, 11]);
  assert.equal(t.lerp_(tensor([15, 8, 21]), 0.5), t); // + 0.5*(end - t)
  check(t, [10, 8, 16]);
  assert.equal(t.lerp_(zeros([3]), tensor([0, 1, 0.25])), t);
  check(t, [10, 0, 12]);
  assert.equal(t.mul_(tensor([0.4, 1, 0.75])).add_(5), t);
  check(t, [9, 5, 14]);
  const r = tensor([4, 9, 16]);
  assert.equal(r.sqrt_(), r);
  check(r, [2, 3, 4]);
  assert.equal(r.clamp_(2.5, 3.5), r);
  check(r, [2.5, 3, 3.5]);
  assert.equal(r.fill_(7), r);
  check(r, [7, 7, 7]);
  assert.equal(r.zero_(), r);
  check(r, [0, 0, 0]);
  assert.equal(r.copy_(tensor([1, 2, 3])), r);
  check(r, [1, 2, 3]);
  const z = zeros([2, 3]);
  assert.equal(z.copy_(i64([1, 2, 3])), z); // broadcast + cast
  check(z, [[1, 2, 3], [1, 2, 3]], { dtype: 'float32' });
  z.select(0, 1).fill_(5); // writes through the view
  check(z, [[1, 2, 3], [5, 5, 5]]);
  z.narrow(1, 0, 1).mul_(-1);
  check(z, [[-1, 2, 3], [-5, 5, 5]]);
}));
