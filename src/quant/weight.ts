// One quantized weight matrix: how it is made from a float weight (round to nearest, per format),
// its tensors, its size, and its dequantized value. The tensors are owned (kept out of scopes) by
// whoever holds the QuantizedWeight; dispose() frees them.
import {
  tensor, keep, noGrad, tidy, type Tensor, type DType,
} from '../tensor/index.js';
import { quantize4bit, quantizeBlockwise8, quantizeInt8Rows, quantizeInt4, dequantize, type QuantFormat, type QuantSpec } from '../tensor/quant.js';
import { NF4_CODE, FP4_CODE, dynamicMap } from './codes.js';

export type { QuantFormat } from '../tensor/quant.js';
export const QUANT_FORMATS: readonly QuantFormat[] = ['nf4', 'fp4', 'int8', 'int4'];

export interface QuantizeOptions {
  format: QuantFormat;
  /** Elements per scale for nf4/fp4 (QLoRA: 64) and inputs per group for int4 (default 128). */
  blocksize?: number;
  /** Quantize the nf4/fp4 block scales again to 8 bits in blocks of 256 (QLoRA's double quantization; default true). */
  doubleQuant?: boolean;
}

export function defaultBlocksize(format: QuantFormat): number {
  return format === 'int4' ? 128 : format === 'int8' ? 0 : 64;
}

/** int4 groups never straddle rows: the largest even divisor of `inF` not above `want` (688 inputs, 128 asked: 86). */
export function int4Group(inF: number, want: number): number {
  for (let g = Math.min(want, inF); g >= 2; g--) if (g % 2 === 0 && inF % g === 0) return g;
  throw new Error(`int4 needs an even input size, got ${inF}`);
}

/** Validates a format name (with the list in the error). */
export function parseQuantFormat(s: string): QuantFormat {
  if ((QUANT_FORMATS as readonly string[]).includes(s)) return s as QuantFormat;
  throw new Error(`unknown quantization "${s}"; expected one of ${QUANT_FORMATS.join(', ')}`);
}

export class QuantizedWeight {
  private constructor(readonly spec: QuantSpec, readonly doubleQuant: boolean) {
    for (const t of this.tensors()) keep(t);
  }

  /** Quantizes w (out, in) (any float dtype; read as float32). */
  static quantize(w: Tensor, opts: QuantizeOptions): QuantizedWeight {
    if (w.ndim !== 2) throw new Error(`quantize: a weight must be 2-D (out, in), got [${w.shape.join(', ')}]`);
    const [out, inF] = w.shape as [number, number];
    const format = opts.format;
    const bs = opts.blocksize ?? defaultBlocksize(format);
    return noGrad(() => tidy(() => {
      const w32 = w.dtype === 'float32' && w.device === 'cpu' ? w.contiguous() : w.to('float32', 'cpu').contiguous();
      if (format === 'int8') {
        const [data, absmax] = quantizeInt8Rows(w32);
        return new QuantizedWeight({ format, out, in: inF, blocksize: 0, data, absmax }, false);
      }
      if (format === 'int4') {
        const g = int4Group(inF, bs);
        const [data, absmax, zeros] = quantizeInt4(w32, g);
        return new QuantizedWeight({ format, out, in: inF, blocksize: g, data, absmax, zeros }, false);
      }
      const code = tensor([...(format === 'nf4' ? NF4_CODE : FP4_CODE)], { dtype: 'float32' });
      const [data, absmax] = quantize4bit(w32, code, bs);
      if (opts.doubleQuant === false) return new QuantizedWeight({ format, out, in: inF, blocksize: bs, data, absmax, code }, false);
      // QLoRA's double quantization: the scales minus their mean, 8-bit block-wise (blocks of 256).
      const offset = absmax.mean().item();
      const nestedCode = tensor(dynamicMap(), { dtype: 'float32' });
      const [q, nestedAbsmax] = quantizeBlockwise8(absmax.sub(offset), nestedCode, 256);
      return new QuantizedWeight({ format, out, in: inF, blocksize: bs, data, absmax: q, code, nestedAbsmax, nestedCode, nestedBlocksize: 256, offset }, true);
    }));
  }

  /** Wraps tensors read from a file after validating them (`check()`); takes ownership: on a refusal they are disposed. */
  static fromSpec(spec: QuantSpec): QuantizedWeight {
    const q = new QuantizedWeight(spec, spec.nestedAbsmax !== undefined);
    try {
      q.check();
    } catch (e) {
      q.dispose();
      throw e;
    }
    return q;
  }

  get format(): QuantFormat { return this.spec.format; }
  get shape(): [number, number] { return [this.spec.out, this.spec.in]; }

  /** Runs the native validation (sizes and dtypes against the shape) by dequantizing one element. */
  check(): void {
    dequantize(this.spec, 'float32', { box: [0, 1, 0, 1] }).dispose();
  }

  /** The whole weight (out, in) in `dtype`. */
  dequantize(dtype: DType = 'float32'): Tensor {
    return dequantize(this.spec, dtype);
  }

  tensors(): Tensor[] {
    const s = this.spec;
    return [s.data, s.absmax, s.code, s.zeros, s.nestedAbsmax, s.nestedCode].filter((t): t is Tensor => t !== undefined);
  }

  /** Bytes held (packed data, scales, maps). */
  bytes(): number {
    return this.tensors().reduce((n, t) => n + t.numel * (t.dtype === 'float32' ? 4 : 1), 0);
  }

  /** Bits per weight element, everything included. */
  bitsPerWeight(): number {
    return (8 * this.bytes()) / (this.spec.out * this.spec.in);
  }

  clone(): QuantizedWeight {
    const s = this.spec;
    const c = (t?: Tensor) => (t ? t.clone() : undefined);
    return new QuantizedWeight({ ...s, data: s.data.clone(), absmax: s.absmax.clone(), code: c(s.code), zeros: c(s.zeros), nestedAbsmax: c(s.nestedAbsmax), nestedCode: c(s.nestedCode) }, this.doubleQuant);
  }

  dispose(): void {
    for (const t of this.tensors()) t.dispose();
  }
}
