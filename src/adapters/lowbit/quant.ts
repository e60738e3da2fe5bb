// Per-row (output channel) fake quantization with a straight-through estimator, and the bit packing of
// the integer codes for adapter files.
//   b ≥ 2: symmetric, scale = max|w_row| / (2^(b−1) − 1), code = clamp(⌊w/scale + ½⌋, −qmax, qmax)
//          (round half up: ⌊·+½⌋, the same on every device), value = code · scale
//   b = 1: BinaryConnect / XNOR-Net, scale = mean|w_row|, code = +1 for w ≥ 0 else −1, value = code · scale
// Training uses q = w + (quant(w) − w).detach(): the forward sees quant(w), the gradient is the
// unquantized one. Files hold the codes bit-packed (1 bit: 8 per byte, 2 bits: 4, 4 bits: 2, least
// significant bits first, as unsigned code + qmax; 1 bit: 1 for +1) or as int8 (3, 5–8 bits), and the
// float32 scales (rows, 1); loading computes code · scale with the same tensor ops as training.
import { noGrad, where, fromBytes, tensor, type Tensor } from '../../tensor/index.js';

export const PACKED_BITS = [1, 2, 4] as const;

export function qmaxOf(bits: number): number {
  return bits === 1 ? 1 : 2 ** (bits - 1) - 1;
}

/** Integer codes (as float32 values, w's shape) and per-row scales (rows, 1) of a 2-D float weight. */
export function quantize(w: Tensor, bits: number): { codes: Tensor; scale: Tensor } {
  const x = w.to('float32');
  if (bits === 1) {
    const scale = x.abs().mean(1, true);  // (rows, 1)
    const codes = x.ge(0).to('float32').mul(2).sub(1);  // ±1 (0 counts as +1, so a packed bit holds it)
    return { codes, scale };
  }
  const qmax = qmaxOf(bits);
  const scale = x.abs().maxDim(1, true).values.div(qmax);  // (rows, 1)
  const safe = where(scale.eq(0), 1, scale);  // an all-zero row: codes 0 whatever the divisor
  const codes = x.div(safe).add(0.5).floor().clamp(-qmax, qmax);
  return { codes, scale };
}

/** code · scale: the weight the layer computes with (and what a loaded file gives). */
export function dequantize(codes: Tensor, scale: Tensor): Tensor {
  return codes.mul(scale);
}

/** quant(w) without a gradient. */
export function fakeQuant(w: Tensor, bits: number): Tensor {
  return noGrad(() => {
    const { codes, scale } = quantize(w, bits);
    return dequantize(codes, scale);
  });
}

/** The straight-through estimator: the value of quant(w), the gradient of w. */
export function steQuant(w: Tensor, bits: number): Tensor {
  const q = fakeQuant(w, bits);
  return w.add(q.sub(w).detach());
}

/** Packs signed codes into bytes (bits 1, 2 or 4). */
export function packCodes(codes: ArrayLike<number>, bits: number): Uint8Array {
  if (!(PACKED_BITS as readonly number[]).includes(bits)) throw new Error(`packCodes: bits must be 1, 2 or 4, got ${bits}`);
  const per = 8 / bits;
  const qmax = qmaxOf(bits);
  const out = new Uint8Array(Math.ceil(codes.length / per));
  for (let i = 0; i < codes.length; i++) {
    const c = codes[i]!;
    const u = bits === 1 ? (c > 0 ? 1 : 0) : c + qmax;
    if (!(Number.isInteger(u) && u >= 0 && u <= (bits === 1 ? 1 : 2 * qmax) && (bits !== 1 || c === 1 || c === -1))) throw new Error(`packCodes: code ${c} does not fit ${bits} bits (codes are ${bits === 1 ? '±1' : `integers in [${-qmax}, ${qmax}]`})`);
    out[Math.floor(i / per)]! |= u << ((i % per) * bits);
  }
  return out;
}

/** The `n` signed codes held in packed bytes (bits 1, 2 or 4). */
export function unpackCodes(bytes: ArrayLike<number>, bits: number, n: number): Float32Array {
  if (!(PACKED_BITS as readonly number[]).includes(bits)) throw new Error(`unpackCodes: bits must be 1, 2 or 4, got ${bits}`);
  const per = 8 / bits;
  if (bytes.length !== Math.ceil(n / per)) throw new Error(`unpackCodes: ${n} codes of ${bits} bits need ${Math.ceil(n / per)} bytes, got ${bytes.length}`);
  const qmax = qmaxOf(bits);
  const mask = 2 ** bits - 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = (bytes[Math.floor(i / per)]! >> ((i % per) * bits)) & mask;
    out[i] = bits === 1 ? (u ? 1 : -1) : u - qmax;
  }
  return out;
}

/** The file tensor of a weight's codes: packed uint8 (1-D) for 1/2/4 bits, int8 (rows, cols) otherwise. */
export function codesTensor(codes: Tensor, bits: number): Tensor {
  const flat = Float32Array.from(codes.to('float32', 'cpu').data() as Float32Array);
  if ((PACKED_BITS as readonly number[]).includes(bits)) {
    const p = packCodes(flat, bits);
    return fromBytes(p, 'uint8', [p.length]);
  }
  const i8 = Int8Array.from(flat);
  return fromBytes(new Uint8Array(i8.buffer), 'int8', codes.shape);
}

/** The shape a weight's code tensor has in the file. */
export function codesShape(rows: number, cols: number, bits: number): number[] {
  return (PACKED_BITS as readonly number[]).includes(bits) ? [Math.ceil((rows * cols * bits) / 8)] : [rows, cols];
}

/** The signed codes (float32, (rows, cols)) of a file's code tensor. */
export function codesFromTensor(t: Tensor, bits: number, rows: number, cols: number): Tensor {
  if ((PACKED_BITS as readonly number[]).includes(bits)) {
    const bytes = t.to('uint8', 'cpu').data() as Uint8Array;
    return tensor(unpackCodes(bytes, bits, rows * cols), { shape: [rows, cols] });
  }
  const v = Float32Array.from(t.to('int8', 'cpu').data() as Int8Array);
  return tensor(v, { shape: [rows, cols] });
}
