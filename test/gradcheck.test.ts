// The gradient of every differentiable op, from libtorch's autograd through our binding, against
// central finite differences in float64. Each case is L = sum(f(inputs) * W) with a fixed random W,
// so every output element contributes with its own weight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  tensor, tidy, keep, noGrad, manualSeed, cat, stack, where, addmm, linear, svd, qr, layerNorm, dropout,
  embedding, crossEntropy, linearCrossEntropy, type Tensor,
} from '../src/index.js';

interface Input { shape: number[]; values?: number[] }
type Out = Tensor | Tensor[];

// Deterministic pseudo-random values (LCG): the inputs and weights do not depend on libtorch's RNG.
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

function weightedSum(out: Out, weights: Map<number, Tensor>): Tensor {
  const outs = Array.isArray(out) ? out : [out];
  let total: Tensor | null = null;
  outs.forEach((o, k) => {
    let w = weights.get(k);
    if (!w) {
      const r = lcg(1000 + k);
      w = tensor(Array.from({ length: o.numel }, () => r() * 2 - 1), { dtype: 'float64', shape: o.shape });
      weights.set(k, keep(w));  // outlives the tidy() it was made in
    }
    const term = o.to('float64').mul(w).sum();
    total = total === null ? term : total.add(term);
  });
  return total!;
}

function gradcheck(name: string, inputs: Input[], f: (...xs: Tensor[]) => Out, opts: { eps?: number; tol?: number } = {}): void {
  const eps = opts.eps ?? 1e-6;
  const tol = opts.tol ?? 1e-6;
  const rnd = lcg(name.length * 7919 + 17);
  const data = inputs.map((inp) => inp.values ?? Array.from({ length: inp.shape.reduce((a, b) => a * b, 1) }, () => rnd() * 2 - 1));
  const weights = new Map<number, Tensor>();
  const evalLoss = (vals: number[][]): number => noGrad(() => tidy(() =>
    weightedSum(f(...vals.map((v, i) => tensor(v, { dtype: 'float64', shape: inputs[i]!.shape }))), weights).item()));
  evalLoss(data);  // creates the weights
  const analytic = tidy(() => {
    const xs = data.map((v, i) => tensor(v, { dtype: 'float64', shape: inputs[i]!.shape, requiresGrad: true }));
    weightedSum(f(...xs), weights).backward();
    return xs.map((x) => {
      const g = x.grad;
      return g === null ? new Array<number>(x.numel).fill(0) : Array.from(g.data() as Float64Array);
    });
  });
  for (let i = 0; i < data.length; i++) {
    for (let j = 0; j < data[i]!.length; j++) {
      const plus = data.map((v) => [...v]);
      const minus = data.map((v) => [...v]);
      plus[i]![j]! += eps;
      minus[i]![j]! -= eps;
      const numeric = (evalLoss(plus) - evalLoss(minus)) / (2 * eps);
      const a = analytic[i]![j]!;
      assert.ok(Math.abs(a - numeric) <= tol * Math.max(1, Math.abs(numeric)),
        `${name}: d/d input${i}[${j}] analytic ${a} vs finite-difference ${numeric}`);
    }
  }
  for (const w of weights.values()) w.dispose();
}

// Inputs kept away from the kinks of abs/relu/clamp/max so finite differences are valid there.
const awayFromZero = (n: number, seed = 3): number[] => {
  const r = lcg(seed);
  return Array.from({ length: n }, () => (r() < 0.5 ? -1 : 1) * (0.2 + r()));
};
const positive = (n: number, seed = 5): number[] => {
  const r = lcg(seed);
  return Array.from({ length: n }, () => 0.3 + r());
};
const distinct = (n: number): number[] => Array.from({ length: n }, (_, i) => ((i * 7) % n) * 0.37 - 1.1);
const i64 = (v: number[]): Tensor => tensor(v, { dtype: 'int64' });

test('views and joins', () => {
  gradcheck('reshape', [{ shape: [2, 3] }], (x) => x.reshape(3, 2));
  gradcheck('view', [{ shape: [2, 3] }], (x) => x.view(6));
  gradcheck('transpose', [{ shape: [2, 3] }], (x) => x.transpose(0, 1));
  gradcheck('permute', [{ shape: [2, 3, 2] }], (x) => x.permute(2, 0, 1));
  gradcheck('squeeze', [{ shape: [2, 1, 3] }], (x) => x.squeeze(1));
  gradcheck('unsqueeze', [{ shape: [2, 3] }], (x) => x.unsqueeze(0));
  gradcheck('expand', [{ shape: [1, 3] }], (x) => x.expand(4, 3));
  gradcheck('repeat', [{ shape: [2] }], (x) => x.repeat(3));
  gradcheck('flatten', [{ shape: [2, 2, 2] }], (x) => x.flatten(1));
  gradcheck('narrow', [{ shape: [4, 2] }], (x) => x.narrow(0, 1, 2));
  gradcheck('slice', [{ shape: [6] }], (x) => x.slice(0, 1, 6, 2));
  gradcheck('select', [{ shape: [3, 2] }], (x) => x.select(0, 2));
  gradcheck('flip', [{ shape: [2, 3] }], (x) => x.flip(1));
  gradcheck('contiguous', [{ shape: [2, 3] }], (x) => x.transpose(0, 1).contiguous());
  gradcheck('cat', [{ shape: [2, 2] }, { shape: [1, 2] }], (a, b) => cat([a, b], 0));
  gradcheck('stack', [{ shape: [3] }, { shape: [3] }], (a, b) => stack([a, b], 1));
  gradcheck('split', [{ shape: [5, 2] }], (x) => x.split([2, 3], 0));
  gradcheck('chunk', [{ shape: [4, 2] }], (x) => x.chunk(2, 0));
});

test('indexing', () => {
  gradcheck('indexSelect', [{ shape: [4, 2] }], (x) => x.indexSelect(0, i64([3, 0, 3])));
  gradcheck('gather', [{ shape: [2, 3] }], (x) => x.gather(1, tensor([[2, 0], [1, 1]], { dtype: 'int64' })));
  gradcheck('scatter', [{ shape: [2, 3] }, { shape: [2, 2] }], (x, s) => x.scatter(1, tensor([[2, 0], [1, 0]], { dtype: 'int64' }), s));
  gradcheck('scatterAdd', [{ shape: [2, 3] }, { shape: [2, 2] }], (x, s) => x.scatterAdd(1, tensor([[2, 2], [1, 0]], { dtype: 'int64' }), s));
  gradcheck('indexAdd', [{ shape: [3, 2] }, { shape: [2, 2] }], (x, s) => x.indexAdd(0, i64([2, 2]), s));
  gradcheck('maskedFill', [{ shape: [2, 2] }], (x) => x.maskedFill(tensor([[true, false], [false, true]]), 0.5));
  gradcheck('where', [{ shape: [2, 2] }, { shape: [2] }], (a, b) => where(tensor([[true, false], [false, true]]), a, b));
  gradcheck('embedding', [{ shape: [4, 3] }], (w) => embedding(w, tensor([[1, 3], [1, 0]], { dtype: 'int64' })));
});

test('elementwise math with broadcasting and scalars', () => {
  gradcheck('add', [{ shape: [2, 3] }, { shape: [3] }], (a, b) => a.add(b, 0.5));
  gradcheck('add scalar', [{ shape: [3] }], (a) => a.add(2));
  gradcheck('sub', [{ shape: [2, 1] }, { shape: [1, 3] }], (a, b) => a.sub(b));
  gradcheck('mul', [{ shape: [2, 3] }, { shape: [2, 1] }], (a, b) => a.mul(b));
  gradcheck('div', [{ shape: [3] }, { shape: [3], values: positive(3) }], (a, b) => a.div(b));
  gradcheck('pow scalar', [{ shape: [4], values: positive(4) }], (a) => a.pow(2.5));
  gradcheck('pow tensor', [{ shape: [3], values: positive(3) }, { shape: [3] }], (a, b) => a.pow(b));
  gradcheck('exp', [{ shape: [4] }], (a) => a.exp());
  gradcheck('log', [{ shape: [4], values: positive(4) }], (a) => a.log());
  gradcheck('log1p', [{ shape: [4], values: positive(4) }], (a) => a.log1p());
  gradcheck('sqrt', [{ shape: [4], values: positive(4) }], (a) => a.sqrt());
  gradcheck('rsqrt', [{ shape: [4], values: positive(4) }], (a) => a.rsqrt());
  gradcheck('abs', [{ shape: [4], values: awayFromZero(4) }], (a) => a.abs());
  gradcheck('neg', [{ shape: [4] }], (a) => a.neg());
  gradcheck('sin', [{ shape: [4] }], (a) => a.sin());
  gradcheck('cos', [{ shape: [4] }], (a) => a.cos());
  gradcheck('reciprocal', [{ shape: [4], values: positive(4) }], (a) => a.reciprocal());
  gradcheck('square', [{ shape: [4] }], (a) => a.square());
  gradcheck('erf', [{ shape: [4] }], (a) => a.erf());
  gradcheck('clamp', [{ shape: [6], values: [-2, -0.7, 0.1, 0.3, 0.9, 2] }], (a) => a.clamp(-0.5, 0.5));
  gradcheck('maximum', [{ shape: [4], values: [0.1, 0.9, -0.3, 0.4] }, { shape: [4], values: [0.5, 0.2, -0.8, 0.9] }], (a, b) => a.maximum(b));
  gradcheck('minimum', [{ shape: [4], values: [0.1, 0.9, -0.3, 0.4] }, { shape: [4], values: [0.5, 0.2, -0.8, 0.9] }], (a, b) => a.minimum(b));
  gradcheck('cast float64->float32->float64', [{ shape: [3] }], (a) => a.to('float32').to('float64'), { tol: 1e-4, eps: 1e-3 });
});

test('activations', () => {
  gradcheck('tanh', [{ shape: [5] }], (a) => a.tanh());
  gradcheck('sigmoid', [{ shape: [5] }], (a) => a.sigmoid());
  gradcheck('relu', [{ shape: [5], values: awayFromZero(5) }], (a) => a.relu());
  gradcheck('silu', [{ shape: [5] }], (a) => a.silu());
  gradcheck('gelu exact', [{ shape: [5] }], (a) => a.gelu());
  gradcheck('gelu tanh', [{ shape: [5] }], (a) => a.gelu('tanh'));
  gradcheck('softmax', [{ shape: [2, 4] }], (a) => a.softmax(-1));
  gradcheck('logSoftmax', [{ shape: [2, 4] }], (a) => a.logSoftmax(1));
});

test('reductions, scans and sorting', () => {
  gradcheck('sum all', [{ shape: [2, 3] }], (a) => a.sum());
  gradcheck('sum dims', [{ shape: [2, 3, 2] }], (a) => a.sum([0, 2], true));
  gradcheck('mean', [{ shape: [2, 3] }], (a) => a.mean(1));
  gradcheck('prod', [{ shape: [4], values: positive(4) }], (a) => a.prod());
  gradcheck('logsumexp', [{ shape: [2, 3] }], (a) => a.logsumexp(1));
  gradcheck('var unbiased', [{ shape: [2, 4] }], (a) => a.var(1));
  gradcheck('var biased', [{ shape: [2, 4] }], (a) => a.var(undefined, { unbiased: false }));
  gradcheck('norm 2', [{ shape: [2, 3] }], (a) => a.norm(2, 1));
  gradcheck('norm 1', [{ shape: [4], values: awayFromZero(4) }], (a) => a.norm(1));
  gradcheck('max', [{ shape: [5], values: distinct(5) }], (a) => a.max());
  gradcheck('min', [{ shape: [5], values: distinct(5) }], (a) => a.min());
  gradcheck('maxDim', [{ shape: [2, 3], values: distinct(6) }], (a) => a.maxDim(1).values);
  gradcheck('minDim', [{ shape: [2, 3], values: distinct(6) }], (a) => a.minDim(0).values);
  gradcheck('cumsum', [{ shape: [2, 3] }], (a) => a.cumsum(1));
  gradcheck('topk', [{ shape: [6], values: distinct(6) }], (a) => a.topk(3).values);
  gradcheck('sort', [{ shape: [6], values: distinct(6) }], (a) => a.sort(0, true).values);
});

test('linear algebra', () => {
  gradcheck('matmul', [{ shape: [2, 3] }, { shape: [3, 2] }], (a, b) => a.matmul(b));
  gradcheck('matmul batched broadcast', [{ shape: [2, 2, 3] }, { shape: [3, 2] }], (a, b) => a.matmul(b));
  gradcheck('bmm', [{ shape: [2, 2, 3] }, { shape: [2, 3, 2] }], (a, b) => a.bmm(b));
  gradcheck('addmm', [{ shape: [2, 2] }, { shape: [2, 3] }, { shape: [3, 2] }], (c, a, b) => addmm(c, a, b, { beta: 0.5, alpha: 2 }));
  gradcheck('linear', [{ shape: [2, 3] }, { shape: [4, 3] }, { shape: [4] }], (x, w, b) => linear(x, w, b));
  gradcheck('outer', [{ shape: [3] }, { shape: [2] }], (a, b) => a.outer(b));
  gradcheck('svd singular values', [{ shape: [3, 2], values: [2, 0.3, -0.1, 1, 0.5, 0.2] }], (a) => svd(a).S);
  gradcheck('svd reconstruction', [{ shape: [3, 2], values: [2, 0.3, -0.1, 1, 0.5, 0.2] }], (a) => {
    const { U, S, Vh } = svd(a);
    return U.mul(S).matmul(Vh);
  });
  gradcheck('qr', [{ shape: [3, 2], values: [2, 0.3, -0.1, 1, 0.5, 0.2] }], (a) => {
    const { Q, R } = qr(a);
    return [Q, R];
  });
  gradcheck('triu', [{ shape: [3, 3] }], (a) => a.triu(1));
  gradcheck('tril', [{ shape: [3, 3] }], (a) => a.tril(-1));
});

test('neural-network ops', () => {
  gradcheck('layerNorm', [{ shape: [2, 4] }, { shape: [4] }, { shape: [4] }], (x, w, b) => layerNorm(x, [4], w, b, 1e-5));
  gradcheck('layerNorm no affine', [{ shape: [2, 4] }], (x) => layerNorm(x, [4]));
  gradcheck('dropout', [{ shape: [8] }], (x) => {
    manualSeed(7);  // the same mask at every evaluation
    return dropout(x, 0.5, true);
  });
  const target = tensor([2, 0, 1], { dtype: 'int64' });
  gradcheck('crossEntropy', [{ shape: [3, 4] }], (l) => crossEntropy(l, target));
  gradcheck('crossEntropy smoothing+ignore', [{ shape: [3, 4] }], (l) =>
    crossEntropy(l, tensor([2, -100, 1], { dtype: 'int64' }), { labelSmoothing: 0.1 }));
  gradcheck('crossEntropy none', [{ shape: [3, 4] }], (l) => crossEntropy(l, target, { reduction: 'none' }));
  // The fused LM head + loss, in chunks of 2 rows, with an ignored row: gradients for h and W.
  const tgt = tensor([2, -100, 0, 4, 1], { dtype: 'int64' });
  gradcheck('linearCrossEntropy', [{ shape: [5, 3] }, { shape: [6, 3] }], (h, w) => linearCrossEntropy(h, w, tgt, { chunkRows: 2 }));
  tidy(() => {
    const h = tensor([[0.1, -0.2, 0.3], [0.5, 0.1, -0.4], [1, 2, -1], [0, 0.3, 0.2], [-0.6, 0.1, 0.9]], { dtype: 'float64' });
    const w = tensor(Array.from({ length: 18 }, (_, i) => Math.cos(i)), { dtype: 'float64', shape: [6, 3] });
    const fused = linearCrossEntropy(h, w, tgt, { chunkRows: 2 }).item();
    const plain = crossEntropy(h.matmul(w.transpose(0, 1)), tgt, { reduction: 'sum' }).item();
    assert.ok(Math.abs(fused - plain) < 1e-12, `fused ${fused} vs plain ${plain}`);
  });
});

test('gradients stop at detach and noGrad, and accumulate across backward calls', () => {
  tidy(() => {
    const x = tensor([1, 2, 3], { dtype: 'float64', requiresGrad: true });
    x.mul(x.detach()).sum().backward();  // d/dx (x * c) = c
    assert.deepEqual(x.grad!.toArray(), [1, 2, 3]);
    x.mul(2).sum().backward();  // accumulates
    assert.deepEqual(x.grad!.toArray(), [3, 4, 5]);
    x.zeroGrad();
    assert.equal(x.grad, null);
    const y = noGrad(() => x.mul(2));
    assert.equal(y.requiresGrad, false);
    x.mul(x).backward(tensor([1, 0, 2], { dtype: 'float64' }));  // vector-Jacobian product
    assert.deepEqual(x.grad!.toArray(), [2, 0, 12]);
  });
});
