// Tensor functions that take several tensors or are not naturally methods: joining, selection,
// and the neural-network primitives that libtorch implements natively.
import { N, type Handle } from './native.js';
import { Tensor, op1, run, arg, type TensorOrScalar } from './tensor.js';

export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  return op1('cat', [tensors, dim], () => N.cat(tensors.map((t) => t.handle), dim) as Handle);
}
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  return op1('stack', [tensors, dim], () => N.stack(tensors.map((t) => t.handle), dim) as Handle);
}
/** Elementwise `cond ? a : b` with broadcasting. */
export function where(cond: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  return op1('where', [cond, a, b], () => N.where(cond.handle, arg(a), arg(b)) as Handle);
}
export function matmul(a: Tensor, b: Tensor): Tensor { return a.matmul(b); }
export function bmm(a: Tensor, b: Tensor): Tensor { return a.bmm(b); }
export function outer(a: Tensor, b: Tensor): Tensor { return a.outer(b); }
/** beta * input + alpha * (m1 @ m2) */
export function addmm(input: Tensor, m1: Tensor, m2: Tensor, opts: { beta?: number; alpha?: number } = {}): Tensor {
  return op1('addmm', [input, m1, m2], () => N.addmm(input.handle, m1.handle, m2.handle, opts.beta ?? 1, opts.alpha ?? 1) as Handle);
}
/** x @ weight^T + bias, weight in PyTorch's [out, in] layout. */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return op1('linear', [x, weight, bias ?? undefined], () => N.linear(x.handle, weight.handle, bias?.handle) as Handle);
}
/** Reduced SVD: A = U diag(S) Vh. */
export function svd(a: Tensor): { U: Tensor; S: Tensor; Vh: Tensor } {
  const hs = run('svd', [a], () => N.svd(a.handle) as Handle[]);
  return { U: new Tensor(hs[0]!), S: new Tensor(hs[1]!), Vh: new Tensor(hs[2]!) };
}
/** Reduced QR: A = Q R. */
export function qr(a: Tensor): { Q: Tensor; R: Tensor } {
  const hs = run('qr', [a], () => N.qr(a.handle) as Handle[]);
  return { Q: new Tensor(hs[0]!), R: new Tensor(hs[1]!) };
}
/** Matrix inverse (torch.linalg.inv). */
export function inv(a: Tensor): Tensor {
  return op1('inv', [a], () => N.inv(a.handle) as Handle);
}
export function layerNorm(x: Tensor, normalizedShape: readonly number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return op1('layerNorm', [x, normalizedShape, weight ?? undefined, bias ?? undefined], () =>
    N.layerNorm(x.handle, [...normalizedShape], weight?.handle, bias?.handle, eps) as Handle);
}
/** Inverted dropout: zeroes with probability p and scales the rest by 1/(1-p) when training. */
export function dropout(x: Tensor, p: number, training = true): Tensor {
  return op1('dropout', [x, p], () => N.dropout(x.handle, p, training) as Handle);
}
/** Rows of `weight` [V, C] picked by integer `ids` (any shape) -> ids.shape + [C]. */
export function embedding(weight: Tensor, ids: Tensor, paddingIdx?: number): Tensor {
  return op1('embedding', [weight, ids], () => N.embedding(weight.handle, ids.handle, paddingIdx) as Handle);
}

export interface CrossEntropyOptions {
  /** Targets equal to this are left out of the loss and of the mean (default -100, as PyTorch). */
  ignoreIndex?: number;
  /** Mixes the target distribution with uniform: (1 - s) * onehot + s / C. */
  labelSmoothing?: number;
  reduction?: 'mean' | 'sum' | 'none';
  /** Per-class weights [C]. */
  weight?: Tensor;
}
/** Cross entropy between logits [N, C] (or [N, C, d...]) and int64 class targets [N] (or [N, d...]). */
export function crossEntropy(logits: Tensor, target: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  return op1('crossEntropy', [logits, target], () =>
    N.crossEntropy(logits.handle, target.handle, opts.reduction ?? 'mean', opts.ignoreIndex ?? -100, opts.labelSmoothing ?? 0, opts.weight?.handle) as Handle);
}

/**
 * Fused LM head + cross-entropy: sum over rows of -log softmax(h Wᵀ)[target] (rows whose target is
 * `ignoreIndex` skipped), as float32, without ever holding the full (N, V) logits: rows go in
 * chunks, and the backward recomputes each chunk. h (N, C) and weight (V, C) share a dtype.
 */
export function linearCrossEntropy(h: Tensor, weight: Tensor, target: Tensor, opts: { ignoreIndex?: number; chunkRows?: number } = {}): Tensor {
  return op1('linearCrossEntropy', [h, weight, target], () => N.linearCrossEntropy(h.handle, weight.handle, target.handle, opts.ignoreIndex ?? -100, opts.chunkRows ?? 128) as Handle);
}

/**
 * result (M, O) + per row m: Bt[k]^T A[k] x[m] (+ bias[k]), k = rows[m], with A (K, R, I) and Bt
 * (K, R, O) (B transposed) float32: a mixed-adapter batch's gathered LoRA product for small row counts (decode), in
 * one native pass. Inference only: no gradient flows through it.
 */
export function loraGatherAdd(result: Tensor, x: Tensor, A: Tensor, Bt: Tensor, rows: Tensor, bias?: Tensor | null): Tensor {
  return op1('loraGatherAdd', [result, x, A, Bt, rows], () => N.loraGatherAdd(result.handle, x.handle, A.handle, Bt.handle, rows.handle, bias?.handle) as Handle);
}
