// Creating tensors: from JS data, filled, ranges, random (global or per-call seed).
import { N, type Handle } from './native.js';
import { TorchError } from './errors.js';
import { Tensor, op1, type NestedArray } from './tensor.js';
import { dtypeCode, dtypeOfArray, type DType, type Device, type TypedArray } from './dtype.js';

export interface TensorOptions {
  /** Default float32 (int64 for integer ranges and randint). */
  dtype?: DType;
  device?: Device;
  requiresGrad?: boolean;
}
export interface RandomOptions extends TensorOptions {
  /** A per-call seed; without it the global generator (see manualSeed) is used. */
  seed?: number;
}

function finish(t: Tensor, o: TensorOptions): Tensor {
  if (o.requiresGrad) t.requiresGrad = true;
  return t;
}

function checkShape(op: string, shape: readonly number[]): number[] {
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new TorchError(op, [JSON.stringify(shape)], `shape must hold non-negative integers, got [${shape.join(', ')}]`);
  }
  return [...shape];
}

function flattenNested(data: NestedArray, op: string): { flat: (number | boolean)[]; shape: number[] } {
  const shape: number[] = [];
  let probe: NestedArray = data;
  while (Array.isArray(probe)) {
    shape.push(probe.length);
    probe = probe[0] as NestedArray;
  }
  const flat: (number | boolean)[] = [];
  const walk = (x: NestedArray, d: number): void => {
    if (d === shape.length) {
      if (Array.isArray(x)) throw new TorchError(op, [], `ragged nested array: too deep at dimension ${d}`);
      if (typeof x !== 'number' && typeof x !== 'boolean') throw new TorchError(op, [], `nested array holds a ${typeof x}; only numbers and booleans are allowed`);
      flat.push(x);
      return;
    }
    if (!Array.isArray(x) || x.length !== shape[d]) {
      throw new TorchError(op, [], `ragged nested array: dimension ${d} should have length ${shape[d]}`);
    }
    for (const v of x) walk(v, d + 1);
  };
  walk(data, 0);
  return { flat, shape };
}

function packNumbers(flat: (number | boolean)[], dtype: DType, op: string): TypedArray {
  switch (dtype) {
    case 'float64': return Float64Array.from(flat, Number);
    case 'int32': return Int32Array.from(flat, Number);
    case 'int8': return Int8Array.from(flat, Number);
    case 'uint8':
    case 'bool': return Uint8Array.from(flat, Number);
    case 'int64':
      return BigInt64Array.from(flat, (v) => {
        const n = Number(v);
        if (!Number.isSafeInteger(n)) throw new TorchError(op, [], `int64 value ${n} is not a safe integer`);
        return BigInt(n);
      });
    default: return Float32Array.from(flat, Number);  // float32, and the source of float16/bfloat16
  }
}

/**
 * A tensor from JS data (a copy). Nested arrays infer the shape; a TypedArray is 1-d unless
 * `shape` is given. Numbers default to float32, booleans to bool, a TypedArray to its own dtype.
 * @example tensor([[1, 2], [3, 4]], { dtype: 'float64', requiresGrad: true })
 */
export function tensor(data: NestedArray | TypedArray, opts: TensorOptions & { shape?: readonly number[] } = {}): Tensor {
  let src: TypedArray;
  let shape: number[];
  let srcDtype: DType;
  if (ArrayBuffer.isView(data)) {
    src = data;
    srcDtype = dtypeOfArray(data);
    shape = opts.shape ? checkShape('tensor', opts.shape) : [data.length];
  } else {
    const { flat, shape: s } = flattenNested(data, 'tensor');
    const allBool = flat.length > 0 && flat.every((v) => typeof v === 'boolean');
    const want = opts.dtype ?? (allBool ? 'bool' : 'float32');
    srcDtype = want === 'float16' || want === 'bfloat16' ? 'float32' : want;
    src = packNumbers(flat, srcDtype, 'tensor');
    shape = opts.shape ? checkShape('tensor', opts.shape) : s;
  }
  const numel = shape.reduce((a, b) => a * b, 1);
  if (numel !== src.length) throw new TorchError('tensor', [`${src.length} values`, JSON.stringify(shape)], `shape [${shape.join(', ')}] needs ${numel} values, got ${src.length}`);
  let t = op1('tensor', [shape], () => N.fromBuffer(src, dtypeCode(srcDtype), shape, undefined) as Handle);
  const target = opts.dtype ?? srcDtype;
  if (target !== srcDtype || (opts.device && opts.device !== 'cpu')) {
    const c = t.to(target, opts.device);
    t.dispose();
    t = c;
  }
  return finish(t, opts);
}

/** A tensor over raw little-endian bytes of `dtype` (copied), e.g. from a safetensors file. */
export function fromBytes(bytes: Uint8Array | ArrayBuffer, dtype: DType, shape: readonly number[], opts: { device?: Device } = {}): Tensor {
  const s = checkShape('fromBytes', shape);
  return op1('fromBytes', [dtype, JSON.stringify(shape)], () => N.fromBuffer(bytes, dtypeCode(dtype), s, opts.device) as Handle);
}

/** A scalar (0-d) tensor. */
export function scalar(value: number | boolean, opts: TensorOptions = {}): Tensor {
  return tensor(value, opts);
}

function filled(op: 'zeros' | 'ones' | 'empty', shape: readonly number[], o: TensorOptions): Tensor {
  const s = checkShape(op, shape);
  return finish(op1(op, [JSON.stringify(shape), o.dtype], () => N[op]!(s, dtypeCode(o.dtype ?? 'float32'), o.device) as Handle), o);
}
export function zeros(shape: readonly number[], opts: TensorOptions = {}): Tensor { return filled('zeros', shape, opts); }
export function ones(shape: readonly number[], opts: TensorOptions = {}): Tensor { return filled('ones', shape, opts); }
/** Uninitialised memory: only for tensors you overwrite completely. */
export function empty(shape: readonly number[], opts: TensorOptions = {}): Tensor { return filled('empty', shape, opts); }
export function full(shape: readonly number[], value: number | boolean, opts: TensorOptions = {}): Tensor {
  const s = checkShape('full', shape);
  const dt = opts.dtype ?? (typeof value === 'boolean' ? 'bool' : 'float32');
  return finish(op1('full', [JSON.stringify(shape), value], () => N.full(s, value, dtypeCode(dt), opts.device) as Handle), opts);
}
export function zerosLike(t: Tensor, opts: TensorOptions = {}): Tensor { return zeros(t.shape, { dtype: t.dtype, device: t.device, ...opts }); }
export function onesLike(t: Tensor, opts: TensorOptions = {}): Tensor { return ones(t.shape, { dtype: t.dtype, device: t.device, ...opts }); }
export function fullLike(t: Tensor, value: number, opts: TensorOptions = {}): Tensor { return full(t.shape, value, { dtype: t.dtype, device: t.device, ...opts }); }

/**
 * Values from start (inclusive) to end (exclusive) by step, like torch.arange. Integer arguments
 * give int64 unless a dtype is asked for.
 */
export function arange(start: number, end?: number, step = 1, opts: TensorOptions = {}): Tensor {
  if (end === undefined) { end = start; start = 0; }
  if (step === 0) throw new TorchError('arange', [String(start), String(end), String(step)], 'step must not be zero');
  const allInt = Number.isInteger(start) && Number.isInteger(end) && Number.isInteger(step);
  const dt = opts.dtype ?? (allInt ? 'int64' : 'float32');
  const [a, b] = [start, end];
  return finish(op1('arange', [start, end, step], () => N.arange(a, b, step, dtypeCode(dt), opts.device) as Handle), opts);
}
export function eye(n: number, m = n, opts: TensorOptions = {}): Tensor {
  return finish(op1('eye', [n, m], () => N.eye(n, m, dtypeCode(opts.dtype ?? 'float32'), opts.device) as Handle), opts);
}

// Reduced-precision random numbers are drawn in float32 and rounded, so a seed gives the same
// values (up to rounding) whatever the dtype.
function randomIn(op: 'rand' | 'randn', shape: readonly number[], o: RandomOptions): Tensor {
  const s = checkShape(op, shape);
  const dt = o.dtype ?? 'float32';
  const drawDt = dt === 'float16' || dt === 'bfloat16' ? 'float32' : dt;
  let t = op1(op, [JSON.stringify(shape), dt], () => N[op]!(s, dtypeCode(drawDt), o.device, o.seed) as Handle);
  if (drawDt !== dt) {
    const c = t.to(dt);
    t.dispose();
    t = c;
  }
  return finish(t, o);
}
/** Uniform on [0, 1). */
export function rand(shape: readonly number[], opts: RandomOptions = {}): Tensor { return randomIn('rand', shape, opts); }
/** Standard normal. */
export function randn(shape: readonly number[], opts: RandomOptions = {}): Tensor { return randomIn('randn', shape, opts); }
/** Integers uniform in [low, high). */
export function randint(low: number, high: number, shape: readonly number[], opts: RandomOptions = {}): Tensor {
  const s = checkShape('randint', shape);
  if (!(high > low)) throw new TorchError('randint', [String(low), String(high)], `high (${high}) must be greater than low (${low})`);
  return finish(op1('randint', [low, high, JSON.stringify(shape)], () =>
    N.randint(low, high, s, dtypeCode(opts.dtype ?? 'int64'), opts.device, opts.seed) as Handle), opts);
}
/** Draws `n` category indices per row of `probs` (non-negative weights, need not sum to 1). */
export function multinomial(probs: Tensor, n: number, opts: { replacement?: boolean; seed?: number } = {}): Tensor {
  return op1('multinomial', [probs, n], () => N.multinomial(probs.handle, n, opts.replacement ?? false, opts.seed) as Handle);
}
