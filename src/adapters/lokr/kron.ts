// Kronecker-product helpers: PEFT's factorization() (copied by PEFT from LyCORIS) and SoKA's
// Kronecker-product SVD (Van Loan & Pitsianis 1993) with the rank rules adapterkit offers.
import { tidy, svd, type Tensor } from '../../tensor/index.js';

/**
 * PEFT's lokr/layer.py factorization(dimension, factor): two numbers m <= n with m * n = dimension.
 * A positive factor that divides the dimension is taken as is; otherwise (factor -1: no limit) m
 * climbs through the divisors of dimension while m + n does not grow and m stays <= factor.
 */
export function factorization(dimension: number, factor = -1): [number, number] {
  if (factor > 0 && dimension % factor === 0) return [factor, dimension / factor];
  if (factor === -1) factor = dimension;
  let m = 1;
  let n = dimension;
  const length = m + n;  // as PEFT: fixed at 1 + dimension, never updated in the loop
  while (m < n) {
    let newM = m + 1;
    while (dimension % newM !== 0) newM++;
    const newN = dimension / newM;
    if (newM + newN > length || newM > factor) break;
    m = newM;
    n = newN;
  }
  if (m > n) [m, n] = [n, m];
  return [m, n];
}

/**
 * Van Loan–Pitsianis rearrangement of W (o1 o2, i1 i2): R (o1 i1, o2 i2) with
 * R[p i1 + s, q i2 + t] = W[p o2 + q, s i2 + t], so that A ⊗ B rearranges to vec(A) vec(B)ᵀ and
 * W = Σ_k σ_k A_k ⊗ B_k is the SVD of R.
 */
export function kronRearrange(W: Tensor, o1: number, o2: number, i1: number, i2: number): Tensor {
  return W.reshape(o1, o2, i1, i2).permute(0, 2, 1, 3).reshape(o1 * i1, o2 * i2);
}

/** Kronecker SVD: σ (descending), A_k (k, o1, i1), B_k (k, o2, i2) for every k. */
export function kronSvd(W: Tensor, o1: number, o2: number, i1: number, i2: number): { S: Tensor; A: Tensor; B: Tensor } {
  return tidy(() => {
    const { U, S, Vh } = svd(kronRearrange(W.to('float32'), o1, o2, i1, i2));  // U (o1 i1, m), Vh (m, o2 i2)
    const m = S.shape[0]!;
    return { S, A: U.transpose(0, 1).contiguous().reshape(m, o1, i1), B: Vh.contiguous().reshape(m, o2, i2) };
  });
}

/** Smallest k with Σ_{j<k} σ_j² >= energy · Σ σ² (at least 1). */
export function energyRank(sigma: readonly number[], energy: number): number {
  const e = sigma.map((s) => s * s);
  const total = e.reduce((a, b) => a + b, 0);
  if (!(total > 0)) return 1;
  let acc = 0;
  for (let k = 0; k < e.length; k++) {
    acc += e[k]!;
    if (acc >= energy * total * (1 - 1e-12)) return k + 1;
  }
  return e.length;
}

/**
 * The elbow of the spectrum (adapterkit's choice; the paper gives no formula): on the points
 * (j / (m-1), σ_j² / σ_0²), j = 0..m-1, the index farthest below the chord from the first point to the
 * last (the "knee" of Satopää et al. 2011); k = that index: the components before the elbow point
 * (a spectrum 1, .01, .005, … gives k = 1).
 */
export function elbowRank(sigma: readonly number[]): number {
  const m = sigma.length;
  if (m <= 2 || !(sigma[0]! > 0)) return 1;
  const y = sigma.map((s) => (s * s) / (sigma[0]! * sigma[0]!));
  const yl = y[m - 1]!;
  let best = 0;
  let bestD = -Infinity;
  for (let j = 0; j < m; j++) {
    const x = j / (m - 1);
    const chord = 1 + (yl - 1) * x;
    const d = chord - y[j]!;
    if (d > bestD) { bestD = d; best = j; }
  }
  return Math.max(1, best);
}
