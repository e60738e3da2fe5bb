// The native quantization kernels (native/quant.cc): round-to-nearest quantizers, block-wise
// dequantization, and the fused quantized matrix product (differentiable in its input).
import { N, type Handle } from './native.js';
import { Tensor, op1, run } from './tensor.js';
import { dtypeCode, type DType } from './dtype.js';

export type QuantFormat = 'nf4' | 'fp4' | 'int4' | 'int8';

/**
 * One quantized weight W (out, in). See native/quant.cc for the layouts:
 * - nf4/fp4: `data` uint8 (ceil(out*in/2)), two codes per byte (even element in the high nibble),
 *   `code` float32 (16), `absmax` float32 per block of `blocksize` elements, or, double-quantized,
 *   uint8 indices into `nestedCode` (256) scaled by `nestedAbsmax` per `nestedBlocksize` blocks plus `offset`;
 * - int4: `data` as above, `absmax` = scale per group of `blocksize` inputs, `zeros` uint8 zero points;
 * - int8: `data` int8 (out, in), `absmax` = per-row absmax (bitsandbytes' SCB).
 */
export interface QuantSpec {
  format: QuantFormat;
  out: number;
  in: number;
  blocksize: number;
  data: Tensor;
  absmax: Tensor;
  code?: Tensor;
  zeros?: Tensor;
  nestedAbsmax?: Tensor;
  nestedCode?: Tensor;
  nestedBlocksize?: number;
  offset?: number;
}

function native(s: QuantSpec): Record<string, unknown> {
  return {
    format: s.format, out: s.out, in: s.in, blocksize: s.blocksize, nestedBlocksize: s.nestedBlocksize ?? 256, offset: s.offset ?? 0,
    data: s.data.handle, absmax: s.absmax.handle, code: s.code?.handle, zeros: s.zeros?.handle,
    nestedAbsmax: s.nestedAbsmax?.handle, nestedCode: s.nestedCode?.handle,
  };
}

const desc = (s: QuantSpec): string => `${s.format} [${s.out}, ${s.in}] blocksize ${s.blocksize}`;

/** 4-bit round-to-nearest against `code` (16 values in [-1, 1]) per block of `blocksize`: [packed, absmax]. */
export function quantize4bit(w: Tensor, code: Tensor, blocksize: number): [Tensor, Tensor] {
  const hs = run('quantize4bit', [w, blocksize], () => N.quantize4bit(w.handle, code.handle, blocksize) as Handle[]);
  return [new Tensor(hs[0]!), new Tensor(hs[1]!)];
}
/** 8-bit block-wise quantization against a 256-entry map (the double quantization of 4-bit scales): [q, absmax]. */
export function quantizeBlockwise8(x: Tensor, code: Tensor, blocksize: number): [Tensor, Tensor] {
  const hs = run('quantizeBlockwise8', [x, blocksize], () => N.quantizeBlockwise8(x.handle, code.handle, blocksize) as Handle[]);
  return [new Tensor(hs[0]!), new Tensor(hs[1]!)];
}
/** Per-row absmax int8 (LLM.int8's vector-wise quantization): [q int8 (out, in), scb float32 (out)]. */
export function quantizeInt8Rows(w: Tensor): [Tensor, Tensor] {
  const hs = run('quantizeInt8Rows', [w], () => N.quantizeInt8Rows(w.handle) as Handle[]);
  return [new Tensor(hs[0]!), new Tensor(hs[1]!)];
}
/** Group-wise asymmetric 4-bit (GPTQ's round-to-nearest grid): [packed, scales, zeros]. */
export function quantizeInt4(w: Tensor, group: number): [Tensor, Tensor, Tensor] {
  const hs = run('quantizeInt4', [w, group], () => N.quantizeInt4(w.handle, group) as Handle[]);
  return [new Tensor(hs[0]!), new Tensor(hs[1]!), new Tensor(hs[2]!)];
}
/**
 * The weight (or the box [r0, r1, c0, c1] of it) in `dtype`. `reference` uses the ATen-ops path
 * (the one non-CPU devices take) instead of the CPU loops.
 */
export function dequantize(s: QuantSpec, dtype: DType = 'float32', opts: { reference?: boolean; box?: [number, number, number, number] } = {}): Tensor {
  return op1('dequantize', [desc(s), dtype], () => N.dequantize(native(s), dtypeCode(dtype), opts.reference ?? false, opts.box) as Handle);
}
/** x W^T with W quantized, dequantized tile by tile inside the kernel; differentiable in x. */
export function quantLinear(x: Tensor, s: QuantSpec): Tensor {
  return op1('quantLinear', [x, desc(s)], () => N.quantLinear(x.handle, native(s)) as Handle);
}
