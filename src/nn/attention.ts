// Attention building blocks shared by the model files: the boolean mask (padding, causality, sliding
// window), scaled dot-product attention with grouped-query heads, and rotary position embeddings.
// Shapes: B batch, H query heads, Hkv key/value heads, T queries, S keys (past + new), D head dim.
import { arange, tensor, where, cat, TorchError, type Tensor, type Device } from '../tensor/index.js';

export interface MaskOptions {
  /** (B, S) 1 for real tokens, 0 for padding; null: every key is real. */
  attentionMask: Tensor | null;
  batch: number;
  queries: number;  // T
  keys: number;  // S
  causal: boolean;
  /** Keys before the first query (the KV cache length). Query i sits at absolute position past + i. */
  past?: number;
  /** Where the mask is built (the activations' device; default cpu). */
  device?: Device;
  /** Mistral: a query at position i sees keys j with i - j < window. */
  slidingWindow?: number | null;
}

/** Boolean mask (B, 1, T, S): true where a query may attend to a key. */
export function attentionAllowed(o: MaskOptions): Tensor {
  const past = o.past ?? 0;
  const dev = { device: o.device ?? 'cpu' } as const;
  const q = arange(past, past + o.queries, 1, dev).view(o.queries, 1);  // (T, 1) absolute query positions
  const k = arange(0, o.keys, 1, dev).view(1, o.keys);  // (1, S)
  let allowed = o.causal ? k.le(q) : q.ge(0).logicalAnd(k.ge(0));  // (T, S)
  if (o.slidingWindow != null) allowed = allowed.logicalAnd(q.sub(k).lt(o.slidingWindow));
  let m = allowed.view(1, 1, o.queries, o.keys);  // (1, 1, T, S)
  if (o.attentionMask) {
    if (o.attentionMask.shape[1] !== o.keys) {
      throw new TorchError('attention', [`mask ${o.attentionMask.shape}`], `attention mask covers ${o.attentionMask.shape[1]} positions but there are ${o.keys} keys (past + new)`);
    }
    m = m.logicalAnd(o.attentionMask.ne(0).view(o.batch, 1, 1, o.keys));  // (B, 1, T, S)
  }
  return m;
}

/**
 * softmax(q k^T * scale, masked) v. Masked scores get the dtype's lowest value rather than -inf, as
 * HF does, so a fully masked row (a padding query) yields a uniform average instead of NaN.
 * The softmax runs in float32 whatever the activations' dtype.
 * Grouped-query heads (H = Hkv x n) never copy the keys and values n times (HF's repeat_kv): the n query
 * heads that share a key/value head are laid out as n x T rows of one product per key/value head, so
 * a decode step reads the cache once instead of writing an n-times larger copy of it first.
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, allowed: Tensor | null, scale: number): Tensor {
  const [b, h, t, d] = q.shape as [number, number, number, number];
  const hkv = k.shape[1]!;
  const nRep = h / hkv;
  const s = k.shape[2]!;
  // (B, Hkv, n*T, D): query head j = g*n + i (g its key/value head, in HF repeat_kv's order) at rows i*T..
  const qg = nRep === 1 ? q : q.reshape(b, hkv, nRep * t, d);
  let scores = qg.matmul(k.transpose(-2, -1)).mul(scale);  // (B, Hkv, n*T, S)
  if (nRep !== 1) scores = scores.view(b, h, t, s);  // (B, H, T, S)
  if (scores.dtype !== 'float32') scores = scores.to('float32');
  if (allowed) scores = scores.maskedFill(allowed.logicalNot(), -3.4028234663852886e38);
  let probs = scores.softmax(-1);
  if (probs.dtype !== v.dtype) probs = probs.to(v.dtype);
  if (nRep === 1) return probs.matmul(v);  // (B, H, T, D)
  return probs.view(b, hkv, nRep * t, s).matmul(v).view(b, h, t, d);  // (B, H, T, D)
}

// ---- rotary position embeddings (RoPE) ----

export interface RopeScaling {
  rope_type?: string;
  type?: string;  // older configs
  factor?: number;
  low_freq_factor?: number;
  high_freq_factor?: number;
  original_max_position_embeddings?: number;
}

/**
 * Inverse frequencies 1 / theta^(2i/d), adjusted for rope_scaling as HF's modeling_rope_utils.py:
 * "default", "linear" (positions divided by factor), "llama3" (long wavelengths divided by factor,
 * a smooth blend in between).
 */
export function ropeInvFreq(headDim: number, theta: number, scaling: RopeScaling | null | undefined): Float64Array {
  const half = headDim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / headDim);
  const type = scaling ? scaling.rope_type ?? scaling.type ?? 'default' : 'default';
  if (type === 'default') return inv;
  const factor = scaling!.factor;
  if (typeof factor !== 'number' || !(factor > 0)) throw new TorchError('rope', [JSON.stringify(scaling)], 'rope_scaling.factor must be a positive number');
  if (type === 'linear') return inv.map((f) => f / factor);
  if (type === 'llama3') {
    const lowF = scaling!.low_freq_factor ?? 1;
    const highF = scaling!.high_freq_factor ?? 4;
    const oldCtx = scaling!.original_max_position_embeddings ?? 8192;
    const lowWavelen = oldCtx / lowF;
    const highWavelen = oldCtx / highF;
    return inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return f;  // high frequency: unchanged
      if (wavelen > lowWavelen) return f / factor;  // low frequency: scaled
      const smooth = (oldCtx / wavelen - lowF) / (highF - lowF);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
  }
  throw new TorchError('rope', [JSON.stringify(scaling)], `unsupported rope_scaling type "${type}" (supported: default, linear, llama3)`);
}

/** cos and sin tables for position ids (B, T): each (B, T, D), the half-frequencies repeated twice. */
export function ropeCosSin(positionIds: Tensor, invFreq: Tensor, dtype: Tensor['dtype']): { cos: Tensor; sin: Tensor } {
  const freqs = positionIds.to('float32').unsqueeze(-1).mul(invFreq);  // (B, T, D/2)
  const emb = cat([freqs, freqs], -1);  // (B, T, D)
  return { cos: emb.cos().to(dtype), sin: emb.sin().to(dtype) };
}

/** x * cos + rotate_half(x) * sin, for x (B, H, T, D) and tables (B, T, D). */
export function applyRope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const d = x.shape[3]!;
  const x1 = x.narrow(-1, 0, d / 2);
  const x2 = x.narrow(-1, d / 2, d / 2);
  const rotated = cat([x2.neg(), x1], -1);  // rotate_half
  return x.mul(cos.unsqueeze(1)).add(rotated.mul(sin.unsqueeze(1)));
}

/** Position ids for a (left- or right-)padded batch: count of real tokens before each, from 0. */
export function positionIdsFromMask(attentionMask: Tensor, past = 0): Tensor {
  const pos = attentionMask.to('int64').cumsum(-1).sub(1);
  const clamped = where(pos.lt(0), 0, pos);
  return past === 0 ? clamped : clamped.narrow(1, past, clamped.shape[1]! - past);
}

/** A plain (1, T) position range starting at `past`. */
export function positionRange(t: number, past = 0, device: Device = 'cpu'): Tensor {
  return arange(past, past + t, 1, { device }).view(1, t);
}

export function invFreqTensor(inv: Float64Array): Tensor {
  return tensor(Float32Array.from(inv));
}
