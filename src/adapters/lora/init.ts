// LoRA initialisations, as PEFT's LoraLayer.reset_lora_parameters / pissa_init / corda_init:
// A [r, in] and B [out, r] for a base weight W in [out, in] orientation.
import { tidy, svd, qr, inv, eye, zeros, empty, type Tensor } from '../../tensor/index.js';
import type { LoraInit } from './config.js';

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
export function seedFor(seed: number, key: string): number {
  return (seed * 1_000_003 + hash(key)) % 2 ** 31;
}

/** Random or zero A and B: kaiming-uniform(a=√5) A, zero B (PEFT's default); gaussian A ~ N(0, 1/r). */
export function randomInit(init: LoraInit, r: number, inF: number, outF: number, seed: number, key: string): { A: Tensor; B: Tensor } {
  const A = empty([r, inF]);
  const B = zeros([outF, r]);
  // kaiming_uniform_(a=√5) on a [fan_out, fan_in] weight draws U(-b, b) with b = 1/√fan_in.
  if (init === 'gaussian') A.normal_(0, 1 / r, seedFor(seed, key + '.A'));
  else A.uniform_(-1 / Math.sqrt(inF), 1 / Math.sqrt(inF), seedFor(seed, key + '.A'));
  // init_lora_weights=false keeps nn.Linear's default init for B as well (B ≠ 0: a non-identity start).
  if (init === false) B.uniform_(-1 / Math.sqrt(r), 1 / Math.sqrt(r), seedFor(seed, key + '.B'));
  return { A, B };
}

/**
 * PiSSA: the r principal singular directions of W go into the adapter, scaled so that
 * scaling * B A equals them; the rest stays in the base: W_res = W - scaling * B A.
 */
export function pissaInit(W: Tensor, r: number, scaling: number): { A: Tensor; B: Tensor; residual: Tensor } {
  return tidy(() => {
    const w = W.to('float32');
    const { U, S, Vh } = svd(w);  // W = U diag(S) Vh
    const s = S.narrow(0, 0, r).div(scaling).sqrt();  // (r)
    const A = Vh.narrow(0, 0, r).mul(s.unsqueeze(1));  // (r, in)
    const B = U.narrow(1, 0, r).mul(s.unsqueeze(0));  // (out, r)
    return { A, B, residual: w.sub(B.matmul(A).mul(scaling)) };
  });
}

/**
 * OLoRA (PEFT LoraLayer.olora_init): W = Q R (reduced QR, float32); B = Q[:, :r], A = R[:r], and the
 * base keeps W - scaling * B A. PEFT takes the QR of the stored weight as is; for a Conv1D ([in, out])
 * that would give A, B of the wrong shapes, so the [out, in] view is used for every layer here.
 */
export function oloraInit(W: Tensor, r: number, scaling: number): { A: Tensor; B: Tensor; residual: Tensor } {
  return tidy(() => {
    const w = W.to('float32');
    const { Q, R } = qr(w);  // (O, K), (K, I)
    const B = Q.narrow(1, 0, r).contiguous();  // (O, R)
    const A = R.narrow(0, 0, r).contiguous();  // (R, I)
    return { A, B, residual: w.sub(B.matmul(A).mul(scaling)) };
  });
}

/**
 * CorDA (PEFT corda.py): decompose W C with C the input covariance (damped until invertible),
 * W C = U S Vh, so W = U S (Vh C⁻¹). "ipm" puts the r largest components in the adapter, "kpm" the
 * r smallest (keeping the knowledge-bearing principal ones frozen in the base).
 */
export function cordaInit(W: Tensor, covariance: Tensor, r: number, scaling: number, method: 'ipm' | 'kpm'): { A: Tensor; B: Tensor; residual: Tensor } {
  return tidy(() => {
    const w = W.to('float32');
    const c = covariance.to('float32');
    const n = c.shape[0]!;
    let damp = 0.01;
    let fixed: Tensor;
    let cinv: Tensor;
    const diagMean = c.mul(eye(n)).sum().item() / n;
    for (;;) {
      fixed = c.add(eye(n).mul(diagMean * damp));
      cinv = inv(fixed);
      const err = fixed.matmul(cinv).sub(eye(n)).norm().item();
      if (err < 0.05 || damp > 1e6) break;
      damp *= 2;
    }
    const { U, S, Vh } = svd(w.matmul(fixed!));
    const V = Vh.matmul(cinv!).transpose(0, 1);  // (in, min)
    const k = S.shape[0]!;
    const start = method === 'ipm' ? 0 : k - r;
    const s = S.narrow(0, start, r).div(scaling).sqrt();
    const A = V.narrow(1, start, r).transpose(0, 1).mul(s.unsqueeze(1));  // (r, in)
    const B = U.narrow(1, start, r).mul(s.unsqueeze(0));  // (out, r)
    return { A: A.contiguous(), B: B.contiguous(), residual: w.sub(B.matmul(A).mul(scaling)) };
  });
}
