// Leaf layers with Hugging Face parameter names and layouts. Parameters start uninitialised
// (`empty`): a checkpoint load or initWeights() fills them, so loading never pays for a random init.
import { Module } from './module.js';
import { empty, linear, addmm, embedding, layerNorm, dropout, type Tensor, type DType } from '../tensor/index.js';

export interface LayerOptions {
  dtype?: DType;
}

/**
 * The dtype activations are computed in for weights stored in `dtype`. libtorch's CPU kernels have
 * no float16 matrix products, so float16 weights compute in float32 (storage stays float16, and
 * each layer casts its weight on use); bfloat16 and float32 compute natively.
 */
export function computeDtype(dtype: DType): DType {
  return dtype === 'float16' ? 'float32' : dtype;
}

/** `t` in the dtype of `x` (the same tensor when they already agree). */
function like(t: Tensor, x: Tensor): Tensor {
  return t.dtype === x.dtype ? t : t.to(x.dtype);
}

/** y = x W^T + b with W in PyTorch's [out, in] layout (nn.Linear). */
export class Linear extends Module {
  readonly kind = 'linear' as const;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LayerOptions & { bias?: boolean } = {}) {
    super();
    this.param('weight', empty([outFeatures, inFeatures], { dtype: opts.dtype }));
    if (opts.bias !== false) this.param('bias', empty([outFeatures], { dtype: opts.dtype }));
  }
  // Getters, not fields: setParameter (tying, merging, casting) replaces tensors, and forward must see it.
  get weight(): Tensor { return this.own('weight')!; }  // (out, in)
  get bias(): Tensor | null { return this.own('bias'); }  // (out)
  forward(x: Tensor): Tensor {
    const b = this.bias;
    return linear(x, like(this.weight, x), b === null ? null : like(b, x));
  }
}

/** GPT-2's Conv1D: y = x W + b with W in [in, out] layout (transposed relative to Linear). */
export class Conv1D extends Module {
  readonly kind = 'conv1d' as const;
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LayerOptions = {}) {
    super();
    this.param('weight', empty([inFeatures, outFeatures], { dtype: opts.dtype }));
    this.param('bias', empty([outFeatures], { dtype: opts.dtype }));
  }
  get weight(): Tensor { return this.own('weight')!; }  // (in, out)
  get bias(): Tensor { return this.own('bias')!; }  // (out)
  forward(x: Tensor): Tensor {
    const shape = x.shape;
    const flat = x.reshape(-1, this.inFeatures);  // (N, in)
    const y = addmm(like(this.bias, x), flat, like(this.weight, x));  // (N, out)
    return y.view(...shape.slice(0, -1), this.outFeatures);
  }
}

/** The layers an adapter can wrap. */
export type LinearLayer = Linear | Conv1D;

export function isLinearLayer(m: Module): m is LinearLayer {
  return m instanceof Linear || m instanceof Conv1D;
}

export class Embedding extends Module {
  private readonly outDtype: DType;
  constructor(readonly numEmbeddings: number, readonly dim: number, opts: LayerOptions = {}) {
    super();
    this.param('weight', empty([numEmbeddings, dim], { dtype: opts.dtype }));
    this.outDtype = computeDtype(opts.dtype ?? 'float32');
  }
  get weight(): Tensor { return this.own('weight')!; }  // (V, C)
  forward(ids: Tensor): Tensor {
    const e = embedding(this.weight, ids);  // ids.shape + (C)
    return e.dtype === this.outDtype ? e : e.to(this.outDtype);
  }
}

export class LayerNorm extends Module {
  constructor(readonly dim: number, readonly eps: number, opts: LayerOptions & { bias?: boolean } = {}) {
    super();
    this.param('weight', empty([dim], { dtype: opts.dtype }));
    if (opts.bias !== false) this.param('bias', empty([dim], { dtype: opts.dtype }));
  }
  get weight(): Tensor { return this.own('weight')!; }
  get bias(): Tensor | null { return this.own('bias'); }
  forward(x: Tensor): Tensor {
    const b = this.bias;
    return layerNorm(x, [this.dim], like(this.weight, x), b === null ? null : like(b, x), this.eps);
  }
}

/** RMSNorm as in HF Llama: normalise in float32, cast back, then scale (weight * x.to(dtype)). */
export class RMSNorm extends Module {
  constructor(readonly dim: number, readonly eps: number, opts: LayerOptions = {}) {
    super();
    this.param('weight', empty([dim], { dtype: opts.dtype }));
  }
  get weight(): Tensor { return this.own('weight')!; }
  forward(x: Tensor): Tensor {
    const dt = x.dtype;
    const x32 = dt === 'float32' ? x : x.to('float32');
    const normed = x32.mul(x32.square().mean(-1, true).add(this.eps).rsqrt());  // (…, C)
    const back = dt === 'float32' ? normed : normed.to(dt);
    return like(this.weight, x).mul(back);
  }
}

export class Dropout extends Module {
  constructor(readonly p: number) {
    super();
  }
  /** Identity (the same tensor) when not training or p = 0. */
  forward(x: Tensor): Tensor {
    return this.training && this.p > 0 ? dropout(x, this.p, true) : x;
  }
}
