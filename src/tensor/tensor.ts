// The Tensor class: a TypeScript handle on one libtorch tensor. Ops borrow their inputs and return
// a new tensor the caller owns (convention 4); in-place ops (trailing underscore) return `this`.
import { N, type Handle } from './native.js';
import { TorchError } from './errors.js';
import { TRACKED, track, type Scope } from './scope.js';
import { dtypeCode, dtypeFromCode, viewBytes, type DType, type Device, type TypedArray } from './dtype.js';

export type Scalar = number | boolean;
export type TensorOrScalar = Tensor | Scalar;
/** Nested JS arrays of numbers or booleans. */
export type NestedArray = number | boolean | NestedArray[];

/** Describes an op input for error messages, without ever throwing. */
export function describe(x: unknown): string {
  if (x instanceof Tensor) {
    if (x.isDisposed) return '<disposed tensor>';
    try {
      return `${x.dtype}[${x.shape.join(', ')}]${x.device === 'cpu' ? '' : '@' + x.device}`;
    } catch {
      return '<tensor>';
    }
  }
  if (Array.isArray(x)) return `[${x.map(describe).join(', ')}]`;
  if (typeof x === 'string') return JSON.stringify(x);
  return String(x);
}

/** Runs a native call; any failure becomes a TorchError naming the op and its inputs. */
export function run<R>(op: string, inputs: readonly unknown[], f: () => R): R {
  try {
    return f();
  } catch (e) {
    if (e instanceof TorchError) throw e;
    const msg = e instanceof Error ? e.message : String(e);
    throw new TorchError(op, inputs.map(describe), msg);
  }
}

/** Runs a native call that returns one handle and wraps it. */
export function op1(op: string, inputs: readonly unknown[], f: () => Handle): Tensor {
  return new Tensor(run(op, inputs, f));
}

/** Native argument for a tensor-or-scalar operand. */
export function arg(x: TensorOrScalar): Handle | Scalar {
  return x instanceof Tensor ? x.handle : x;
}

function dimsArg(dim: number | readonly number[] | undefined): number[] | undefined {
  return dim === undefined ? undefined : typeof dim === 'number' ? [dim] : [...dim];
}

export interface ValuesIndices {
  values: Tensor;
  indices: Tensor;
}

export class Tensor {
  readonly [TRACKED] = true as const;
  /** @internal owning scope */
  _scope: Scope | null = null;
  private _h: Handle | null;
  private _meta: (number | string)[] | undefined;

  /** @internal Wraps a native handle; use the creation functions (tensor, zeros, ...) instead. */
  constructor(h: Handle) {
    this._h = h;
    track(this);
  }

  /** @internal The native handle; throws a TorchError when the tensor was disposed. */
  get handle(): Handle {
    // A plain Error: run() turns it into a TorchError naming the op that tried to use the tensor.
    if (this._h === null) throw new Error('tensor was disposed');
    return this._h;
  }

  get isDisposed(): boolean {
    return this._h === null;
  }

  /** Frees the tensor now (its storage goes when no view or autograd graph still needs it). */
  dispose(): void {
    if (this._h === null) return;
    N.dispose(this._h);
    this._h = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  private meta(): (number | string)[] {
    if (this._meta === undefined) this._meta = run('metadata', [this], () => N.meta(this.handle) as (number | string)[]);
    return this._meta;
  }

  get shape(): number[] {
    return this.meta().slice(2) as number[];
  }
  get dtype(): DType {
    return dtypeFromCode(this.meta()[0] as number);
  }
  get device(): Device {
    return this.meta()[1] as Device;
  }
  get ndim(): number {
    return this.meta().length - 2;
  }
  get numel(): number {
    let n = 1;
    const m = this.meta();
    for (let i = 2; i < m.length; i++) n *= m[i] as number;
    return n;
  }
  /** Size of one dimension (negative counts from the end). */
  size(dim: number): number {
    const nd = this.ndim;
    const d = dim < 0 ? dim + nd : dim;
    if (d < 0 || d >= nd) throw new TorchError('size', [describe(this), String(dim)], `dimension ${dim} out of range for a ${nd}-d tensor`);
    return this.meta()[2 + d] as number;
  }
  get strides(): number[] { return run('strides', [this], () => N.strides(this.handle) as number[]); }
  isContiguous(): boolean { return run('isContiguous', [this], () => N.isContiguous(this.handle) as boolean); }

  // ---- data out ----
  /** The single value of a one-element tensor. */
  item(): number { return run('item', [this], () => Number(N.item(this.handle))); }
  /** Raw bytes (row-major, this dtype), e.g. for safetensors. */
  bytes(): Uint8Array { return new Uint8Array(run('bytes', [this], () => N.toBuffer(this.handle) as ArrayBuffer)); }
  /**
   * The values as a TypedArray (a copy): float16/bfloat16 come back widened to Float32Array, int64 as
   * BigInt64Array, bool as Uint8Array of 0/1.
   */
  data(): TypedArray {
    if (this._h === null) throw new TorchError('data', ['<disposed tensor>'], 'tensor was disposed');
    const d = this.dtype;
    if (d === 'float16' || d === 'bfloat16') {
      const f = this.to('float32');
      try { return f.data(); } finally { f.dispose(); }
    }
    return viewBytes(run('data', [this], () => N.toBuffer(this.handle) as ArrayBuffer), d);
  }
  /** The values as nested JS arrays (int64 as numbers, bool as booleans). */
  toArray(): NestedArray {
    const flat = this.data();
    const isBool = this.dtype === 'bool';
    const vals: (number | boolean)[] = new Array(flat.length);
    for (let i = 0; i < flat.length; i++) vals[i] = isBool ? flat[i] !== 0 : Number(flat[i]);
    const shape = this.shape;
    if (shape.length === 0) return vals[0]!;
    let pos = 0;
    const build = (d: number): NestedArray[] => {
      const out: NestedArray[] = [];
      for (let i = 0; i < shape[d]!; i++) out.push(d === shape.length - 1 ? vals[pos++]! : build(d + 1));
      return out;
    };
    return build(0);
  }
  toString(): string {
    if (this.isDisposed) return 'Tensor(<disposed>)';
    const head = `Tensor(${this.dtype}[${this.shape.join(', ')}]${this.device === 'cpu' ? '' : ', ' + this.device}`;
    if (this.numel > 64) return head + ')';
    return `${head}, ${JSON.stringify(this.toArray())})`;
  }

  // ---- casts, copies, devices ----
  /** Cast to a dtype and/or move to a device; returns a new handle (which may share storage when nothing changes). */
  to(dtype: DType | null, device?: Device): Tensor {
    return op1('to', [this, dtype, device], () => N.to(this.handle, dtype === null ? undefined : dtypeCode(dtype), device, false));
  }
  toDevice(device: Device): Tensor { return this.to(null, device); }
  float(): Tensor { return this.to('float32'); }
  clone(): Tensor { return op1('clone', [this], () => N.clone(this.handle)); }
  contiguous(): Tensor { return op1('contiguous', [this], () => N.contiguous(this.handle)); }
  /** Copies `src` (broadcast, cast) into this tensor. */
  copy_(src: Tensor): this { run('copy_', [this, src], () => N.copy_(this.handle, src.handle)); return this; }

  // ---- autograd ----
  get requiresGrad(): boolean { return run('requiresGrad', [this], () => N.requiresGrad(this.handle) as boolean); }
  set requiresGrad(v: boolean) { run('requiresGrad', [this], () => N.setRequiresGrad(this.handle, v)); }
  requiresGrad_(v = true): this { this.requiresGrad = v; return this; }
  get isLeaf(): boolean { return run('isLeaf', [this], () => N.isLeaf(this.handle) as boolean); }
  /** The accumulated gradient (a new handle on it, which the caller owns), or null. */
  get grad(): Tensor | null {
    const g = run('grad', [this], () => N.grad(this.handle) as Handle | null);
    return g === null ? null : new Tensor(g);
  }
  set grad(g: Tensor | null) { run('setGrad', [this, g], () => N.setGrad(this.handle, g === null ? null : g.handle)); }
  /** Drops the gradient (the next backward allocates a fresh one), as PyTorch's zero_grad(set_to_none). */
  zeroGrad(): void { this.grad = null; }
  /** Backpropagates from this tensor (a scalar, or pass `gradient` of the same shape). */
  backward(gradient?: Tensor, opts: { retainGraph?: boolean } = {}): void {
    run('backward', [this, gradient], () => N.backward(this.handle, gradient?.handle, opts.retainGraph ?? false));
  }
  detach(): Tensor { return op1('detach', [this], () => N.detach(this.handle)); }

  // ---- views ----
  reshape(...shape: number[]): Tensor { return op1('reshape', [this, shape], () => N.reshape(this.handle, shape)); }
  view(...shape: number[]): Tensor { return op1('view', [this, shape], () => N.view(this.handle, shape)); }
  transpose(d0: number, d1: number): Tensor { return op1('transpose', [this, d0, d1], () => N.transpose(this.handle, d0, d1)); }
  /** Transpose of the last two dimensions. */
  get mT(): Tensor { return this.transpose(-2, -1); }
  permute(...dims: number[]): Tensor { return op1('permute', [this, dims], () => N.permute(this.handle, dims)); }
  squeeze(dim?: number): Tensor { return op1('squeeze', [this, dim], () => N.squeeze(this.handle, dim)); }
  unsqueeze(dim: number): Tensor { return op1('unsqueeze', [this, dim], () => N.unsqueeze(this.handle, dim)); }
  expand(...shape: number[]): Tensor { return op1('expand', [this, shape], () => N.expand(this.handle, shape)); }
  repeat(...times: number[]): Tensor { return op1('repeat', [this, times], () => N.repeat(this.handle, times)); }
  flatten(start = 0, end = -1): Tensor { return op1('flatten', [this, start, end], () => N.flatten(this.handle, start, end)); }
  narrow(dim: number, start: number, length: number): Tensor {
    return op1('narrow', [this, dim, start, length], () => N.narrow(this.handle, dim, start, length));
  }
  /** Python's `t[..., start:end:step]` along `dim`; end defaults to the end, negatives count back. */
  slice(dim: number, start = 0, end = Number.MAX_SAFE_INTEGER, step = 1): Tensor {
    return op1('slice', [this, dim, start, end, step], () => N.slice(this.handle, dim, start, end, step));
  }
  select(dim: number, index: number): Tensor { return op1('select', [this, dim, index], () => N.select(this.handle, dim, index)); }
  flip(...dims: number[]): Tensor { return op1('flip', [this, dims], () => N.flip(this.handle, dims)); }

  // ---- indexing ----
  indexSelect(dim: number, index: Tensor): Tensor { return op1('indexSelect', [this, dim, index], () => N.indexSelect(this.handle, dim, index.handle)); }
  gather(dim: number, index: Tensor): Tensor { return op1('gather', [this, dim, index], () => N.gather(this.handle, dim, index.handle)); }
  scatter(dim: number, index: Tensor, src: Tensor | number): Tensor {
    return op1('scatter', [this, dim, index, src], () => N.scatter(this.handle, dim, index.handle, arg(src)));
  }
  scatterAdd(dim: number, index: Tensor, src: Tensor): Tensor {
    return op1('scatterAdd', [this, dim, index, src], () => N.scatterAdd(this.handle, dim, index.handle, src.handle));
  }
  indexAdd(dim: number, index: Tensor, src: Tensor): Tensor {
    return op1('indexAdd', [this, dim, index, src], () => N.indexAdd(this.handle, dim, index.handle, src.handle));
  }
  maskedFill(mask: Tensor, value: TensorOrScalar): Tensor {
    return op1('maskedFill', [this, mask, value], () => N.maskedFill(this.handle, mask.handle, arg(value)));
  }
  split(sizeOrSizes: number | number[], dim = 0): Tensor[] {
    const hs = run('split', [this, sizeOrSizes, dim], () => N.split(this.handle, sizeOrSizes, dim) as Handle[]);
    return hs.map((h) => new Tensor(h));
  }
  chunk(chunks: number, dim = 0): Tensor[] {
    const hs = run('chunk', [this, chunks, dim], () => N.chunk(this.handle, chunks, dim) as Handle[]);
    return hs.map((h) => new Tensor(h));
  }

  // ---- elementwise (broadcasting; scalars keep integer tensors integral) ----
  add(other: TensorOrScalar, alpha?: number): Tensor { return op1('add', [this, other], () => N.add(this.handle, arg(other), alpha)); }
  sub(other: TensorOrScalar): Tensor { return op1('sub', [this, other], () => N.sub(this.handle, arg(other))); }
  mul(other: TensorOrScalar): Tensor { return op1('mul', [this, other], () => N.mul(this.handle, arg(other))); }
  div(other: TensorOrScalar): Tensor { return op1('div', [this, other], () => N.div(this.handle, arg(other))); }
  pow(exponent: TensorOrScalar): Tensor { return op1('pow', [this, exponent], () => N.pow(this.handle, arg(exponent))); }
  maximum(other: TensorOrScalar): Tensor { return op1('maximum', [this, other], () => N.maximum(this.handle, arg(other))); }
  minimum(other: TensorOrScalar): Tensor { return op1('minimum', [this, other], () => N.minimum(this.handle, arg(other))); }
  clamp(min?: number, max?: number): Tensor { return op1('clamp', [this, min, max], () => N.clamp(this.handle, min, max)); }
  eq(other: TensorOrScalar): Tensor { return op1('eq', [this, other], () => N.eq(this.handle, arg(other))); }
  ne(other: TensorOrScalar): Tensor { return op1('ne', [this, other], () => N.ne(this.handle, arg(other))); }
  lt(other: TensorOrScalar): Tensor { return op1('lt', [this, other], () => N.lt(this.handle, arg(other))); }
  le(other: TensorOrScalar): Tensor { return op1('le', [this, other], () => N.le(this.handle, arg(other))); }
  gt(other: TensorOrScalar): Tensor { return op1('gt', [this, other], () => N.gt(this.handle, arg(other))); }
  ge(other: TensorOrScalar): Tensor { return op1('ge', [this, other], () => N.ge(this.handle, arg(other))); }
  logicalAnd(other: Tensor): Tensor { return op1('logicalAnd', [this, other], () => N.logicalAnd(this.handle, other.handle)); }
  logicalOr(other: Tensor): Tensor { return op1('logicalOr', [this, other], () => N.logicalOr(this.handle, other.handle)); }
  logicalNot(): Tensor { return this.unary('logicalNot'); }
  exp(): Tensor { return this.unary('exp'); }
  log(): Tensor { return this.unary('log'); }
  log1p(): Tensor { return this.unary('log1p'); }
  sqrt(): Tensor { return this.unary('sqrt'); }
  rsqrt(): Tensor { return this.unary('rsqrt'); }
  abs(): Tensor { return this.unary('abs'); }
  neg(): Tensor { return this.unary('neg'); }
  sign(): Tensor { return this.unary('sign'); }
  sin(): Tensor { return this.unary('sin'); }
  cos(): Tensor { return this.unary('cos'); }
  reciprocal(): Tensor { return this.unary('reciprocal'); }
  square(): Tensor { return this.unary('square'); }
  floor(): Tensor { return this.unary('floor'); }
  erf(): Tensor { return this.unary('erf'); }
  isnan(): Tensor { return this.unary('isnan'); }
  isfinite(): Tensor { return this.unary('isfinite'); }

  // ---- activations ----
  tanh(): Tensor { return this.unary('tanh'); }
  sigmoid(): Tensor { return this.unary('sigmoid'); }
  relu(): Tensor { return this.unary('relu'); }
  silu(): Tensor { return this.unary('silu'); }
  /** GELU: exact (erf) by default, or the tanh approximation GPT-2 uses ("gelu_new"). */
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor { return op1('gelu', [this, approximate], () => N.gelu(this.handle, approximate)); }
  softmax(dim: number): Tensor { return op1('softmax', [this, dim], () => N.softmax(this.handle, dim)); }
  logSoftmax(dim: number): Tensor { return op1('logSoftmax', [this, dim], () => N.logSoftmax(this.handle, dim)); }

  // ---- reductions ----
  sum(dim?: number | readonly number[], keepdim = false): Tensor { return op1('sum', [this, dim], () => N.sum(this.handle, dimsArg(dim), keepdim)); }
  mean(dim?: number | readonly number[], keepdim = false): Tensor { return op1('mean', [this, dim], () => N.mean(this.handle, dimsArg(dim), keepdim)); }
  prod(): Tensor { return this.unary('prod'); }
  logsumexp(dim: number | readonly number[], keepdim = false): Tensor {
    return op1('logsumexp', [this, dim], () => N.logsumexp(this.handle, dimsArg(dim), keepdim));
  }
  /** Variance; unbiased (Bessel's correction) by default as in PyTorch. */
  var(dim?: number | readonly number[], opts: { unbiased?: boolean; keepdim?: boolean } = {}): Tensor {
    return op1('var', [this, dim], () => N.var(this.handle, dimsArg(dim), opts.unbiased ?? true, opts.keepdim ?? false));
  }
  /** Vector p-norm (p = 2 by default) over all elements or the given dims. */
  norm(p = 2, dim?: number | readonly number[], keepdim = false): Tensor {
    return op1('norm', [this, p, dim], () => N.norm(this.handle, p, dimsArg(dim), keepdim));
  }
  /** Largest element. */
  max(): Tensor { return this.unary('max'); }
  min(): Tensor { return this.unary('min'); }
  /** Largest values along a dimension, with their indices. */
  maxDim(dim: number, keepdim = false): ValuesIndices { return this.pair('max', dim, keepdim); }
  minDim(dim: number, keepdim = false): ValuesIndices { return this.pair('min', dim, keepdim); }
  argmax(dim?: number, keepdim = false): Tensor { return op1('argmax', [this, dim], () => N.argmax(this.handle, dim, keepdim)); }
  argmin(dim?: number, keepdim = false): Tensor { return op1('argmin', [this, dim], () => N.argmin(this.handle, dim, keepdim)); }
  any(): Tensor { return this.unary('any'); }
  all(): Tensor { return this.unary('all'); }
  cumsum(dim: number): Tensor { return op1('cumsum', [this, dim], () => N.cumsum(this.handle, dim)); }
  topk(k: number, dim = -1, opts: { largest?: boolean; sorted?: boolean } = {}): ValuesIndices {
    const [v, i] = run('topk', [this, k, dim], () => N.topk(this.handle, k, dim, opts.largest ?? true, opts.sorted ?? true) as Handle[]);
    return { values: new Tensor(v!), indices: new Tensor(i!) };
  }
  /** Stable sort along a dimension. */
  sort(dim = -1, descending = false): ValuesIndices {
    const [v, i] = run('sort', [this, dim, descending], () => N.sort(this.handle, dim, descending) as Handle[]);
    return { values: new Tensor(v!), indices: new Tensor(i!) };
  }

  // ---- linear algebra ----
  matmul(other: Tensor): Tensor { return op1('matmul', [this, other], () => N.matmul(this.handle, other.handle)); }
  bmm(other: Tensor): Tensor { return op1('bmm', [this, other], () => N.bmm(this.handle, other.handle)); }
  outer(other: Tensor): Tensor { return op1('outer', [this, other], () => N.outer(this.handle, other.handle)); }
  triu(diagonal = 0): Tensor { return op1('triu', [this, diagonal], () => N.triu(this.handle, diagonal)); }
  tril(diagonal = 0): Tensor { return op1('tril', [this, diagonal], () => N.tril(this.handle, diagonal)); }

  // ---- in place (for optimizers and initialisers; run them under noGrad on parameters) ----
  add_(other: TensorOrScalar, alpha?: number): this { return this.inplace('add_', other, () => N.add_(this.handle, arg(other), alpha)); }
  sub_(other: TensorOrScalar): this { return this.inplace('sub_', other, () => N.sub_(this.handle, arg(other))); }
  mul_(other: TensorOrScalar): this { return this.inplace('mul_', other, () => N.mul_(this.handle, arg(other))); }
  div_(other: TensorOrScalar): this { return this.inplace('div_', other, () => N.div_(this.handle, arg(other))); }
  /** this += value * a * b */
  addcmul_(a: Tensor, b: Tensor, value = 1): this { return this.inplace('addcmul_', [a, b], () => N.addcmul_(this.handle, a.handle, b.handle, value)); }
  /** this += value * a / b */
  addcdiv_(a: Tensor, b: Tensor, value = 1): this { return this.inplace('addcdiv_', [a, b], () => N.addcdiv_(this.handle, a.handle, b.handle, value)); }
  /** this += weight * (end - this) */
  lerp_(end: Tensor, weight: TensorOrScalar): this { return this.inplace('lerp_', [end, weight], () => N.lerp_(this.handle, end.handle, arg(weight))); }
  zero_(): this { return this.inplace('zero_', [], () => N.zero_(this.handle)); }
  fill_(value: Scalar): this { return this.inplace('fill_', value, () => N.fill_(this.handle, value)); }
  sqrt_(): this { return this.inplace('sqrt_', [], () => N.sqrt_(this.handle)); }
  clamp_(min?: number, max?: number): this { return this.inplace('clamp_', [min, max], () => N.clamp_(this.handle, min, max)); }
  maskedFill_(mask: Tensor, value: Scalar): this { return this.inplace('maskedFill_', [mask, value], () => N.maskedFill_(this.handle, mask.handle, value)); }
  /** Fills with U(low, high); `seed` makes it reproducible independently of the global generator. */
  uniform_(low = 0, high = 1, seed?: number): this { return this.inplace('uniform_', [low, high], () => N.uniform_(this.handle, low, high, seed)); }
  normal_(mean = 0, std = 1, seed?: number): this { return this.inplace('normal_', [mean, std], () => N.normal_(this.handle, mean, std, seed)); }

  private unary(name: string): Tensor {
    return op1(name, [this], () => N[name]!(this.handle));
  }
  private pair(name: 'max' | 'min', dim: number, keepdim: boolean): ValuesIndices {
    const [v, i] = run(name, [this, dim], () => N[name]!(this.handle, dim, keepdim) as Handle[]);
    return { values: new Tensor(v!), indices: new Tensor(i!) };
  }
  private inplace(name: string, args: unknown, f: () => void): this {
    run(name, [this, ...(Array.isArray(args) ? args : [args])], f);
    return this;
  }
}
