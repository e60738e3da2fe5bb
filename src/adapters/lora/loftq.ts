// LoftQ (Li et al. 2023; PEFT's init_lora_weights="loftq"): alternate quantizing W - B A and taking
// the rank-r SVD of the quantization residual W - Q, so that Q + s B A starts closer to W than Q
// alone. The base layer then holds Q (really quantized, as the QLoRA run it prepares will use).
import { tidy, svd, keep, type Tensor } from '../../tensor/index.js';
import { QuantizedWeight } from '../../quant/weight.js';

export interface LoftqOptions {
  /** 4 (NF4, PEFT's default) or 8 (int8 rows). */
  bits: number;
  /** Alternating steps (PEFT's loftq_iter, default 1). */
  iters: number;
}

/** PEFT's loftq_config keys, with their defaults (loftq_bits 4, loftq_iter 1). */
export function loftqOptions(raw: unknown): LoftqOptions {
  const o = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const bits = o.loftq_bits ?? 4;
  const iters = o.loftq_iter ?? 1;
  if (bits !== 4 && bits !== 8) throw new Error(`loftq_config.loftq_bits must be 4 or 8, got ${JSON.stringify(bits)}`);
  if (typeof iters !== 'number' || !Number.isInteger(iters) || iters < 1 || iters > 100) throw new Error(`loftq_config.loftq_iter must be an integer in [1, 100], got ${JSON.stringify(iters)}`);
  return { bits, iters };
}

/**
 * W (out, in) -> the quantized base Q and A (r, in), B (out, r) with Q + scaling * B A ≈ W.
 * PEFT leaves the factors unscaled (exact only when lora_alpha = r); here B is divided by the
 * scaling so the start is Q + L R whatever lora_alpha is.
 */
export function loftqInit(W: Tensor, r: number, scaling: number, o: LoftqOptions): { q: QuantizedWeight; A: Tensor; B: Tensor } {
  const format = o.bits === 4 ? 'nf4' : 'int8';
  const W32 = W.to('float32');
  let res = W32;
  let q: QuantizedWeight | null = null;
  let L: Tensor | null = null;
  let R: Tensor | null = null;
  for (let i = 0; i < o.iters; i++) {
    q?.dispose();
    // PEFT quantizes with compress_statistics=False: no double quantization here either.
    q = QuantizedWeight.quantize(res, { format, doubleQuant: false });
    const [l, rr] = tidy(() => {
      const { U, S, Vh } = svd(W32.sub(q!.dequantize('float32')));  // residual (out, in)
      const sq = S.narrow(0, 0, r).sqrt();  // (r)
      return keep([U.narrow(1, 0, r).mul(sq.unsqueeze(0)), Vh.narrow(0, 0, r).mul(sq.unsqueeze(1))]);  // L (out, r), R (r, in)
    });
    L?.dispose();
    R?.dispose();
    [L, R] = [l!, rr!];
    if (i + 1 < o.iters) {
      if (res !== W32) res.dispose();
      res = keep(W32.sub(L.matmul(R)));
    }
  }
  if (res !== W32) res.dispose();
  if (W32 !== W) W32.dispose();
  const B = L!.div(scaling);
  L!.dispose();
  return { q: q!, A: R!, B };
}
