// The LoKr tuner layer, as PEFT's tuners/lokr/layer.py Linear: ΔW = scaling · w1 ⊗ w2 (torch.kron),
// w1 (a, c) and w2 (b, d) with (a, b) = factorization(out), (c, d) = factorization(in). w1 is full
// (`lokr_w1`) unless decompose_both and r < max(a, c) / 2 (then `lokr_w1_a` (a, r) @ `lokr_w1_b` (r, c));
// w2 is full (`lokr_w2`) unless r < max(b, d) / 2 (then `lokr_w2_a` (b, r) @ `lokr_w2_b` (r, d)).
// adapterkit's SoKA init (init_weights "soka") holds K principal Kronecker components of W as full
// factors, `lokr_w1` (K, a, c) and `lokr_w2` (K, b, d) (2-D when K = 1): ΔW = scaling Σ_k w1_k ⊗ w2_k,
// and the base keeps the residual W - ΔW₀, so the model is unchanged at init.
import { noGrad, tidy, zeros, type Tensor } from '../../tensor/index.js';
import type { LinearLayer } from '../../nn/layers.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions } from '../types.js';
import { patternValue } from '../targets.js';
import { seedFor } from '../lora/init.js';
import { LycorisLayer, kaimingUniform, kron } from './lycoris.js';
import { factorization, kronSvd, energyRank, elbowRank } from './kron.js';
import type { LokrConfig } from './config.js';

export const LOKR_KEYS = ['lokr_w1', 'lokr_w1_a', 'lokr_w1_b', 'lokr_w2', 'lokr_w2_a', 'lokr_w2_b'] as const;

/** PEFT's shapes for a Linear (in, out): ((a, b), (c, d)) and which factors are full. */
export function lokrShape(inF: number, outF: number, r: number, decomposeBoth: boolean, factor: number): { a: number; b: number; c: number; d: number; useW1: boolean; useW2: boolean } {
  const [c, d] = factorization(inF, factor);
  const [a, b] = factorization(outF, factor);
  return { a, b, c, d, useW1: !(decomposeBoth && r < Math.max(a, c) / 2), useW2: !(r < Math.max(b, d) / 2) };
}

export class LokrLayer extends LycorisLayer {
  readonly peftType = 'LOKR';
  /** SoKA: the number of Kronecker components per adapter (absent for ordinary LoKr). */
  readonly sokaTerms = new Map<string, number>();

  constructor(base: LinearLayer, ctx: AdapterContext) {
    super(base, ctx, LOKR_KEYS);
  }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as LokrConfig;
    if (this.adapters.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    if (c.useEffectiveConv2d) { /* PEFT sets it false for Linear layers: no effect here */ }
    const r = patternValue(c.rankPattern, path) ?? c.r;
    const alpha = patternValue(c.alphaPattern, path) ?? c.alpha;
    if (!(Number.isInteger(r) && r > 0)) throw new Error(`LoKr: r must be a positive integer, got ${r} for ${path}`);
    const state = { r, alpha, scaling: alpha / r, rankDropout: c.rankDropout, rankDropoutScale: c.rankDropoutScale, moduleDropout: c.moduleDropout };
    const { a, b, c: ci, d, useW1, useW2 } = lokrShape(this.inFeatures, this.outFeatures, r, c.decomposeBoth, c.decomposeFactor);
    const seed = (k: string) => seedFor(opts.seed, `${path}.${name}.${k}`);
    if (c.initWeights === 'soka') return this.addSoka(name, state, path, a, b, ci, d, c);
    const init = c.initWeights;
    const zeroW1 = init === true;
    const zeroW2 = init === 'lycoris';
    const t: [string, Tensor][] = [];
    noGrad(() => {
      if (useW1) t.push(['lokr_w1', zeroW1 ? zeros([a, ci]) : kaimingUniform([a, ci], seed('lokr_w1'))]);
      else t.push(['lokr_w1_a', zeroW1 ? zeros([a, r]) : kaimingUniform([a, r], seed('lokr_w1_a'))], ['lokr_w1_b', kaimingUniform([r, ci], seed('lokr_w1_b'))]);
      if (useW2) t.push(['lokr_w2', zeroW2 ? zeros([b, d]) : kaimingUniform([b, d], seed('lokr_w2'))]);
      else t.push(['lokr_w2_a', kaimingUniform([b, r], seed('lokr_w2_a'))], ['lokr_w2_b', zeroW2 ? zeros([r, d]) : kaimingUniform([r, d], seed('lokr_w2_b'))]);
    });
    this.addParams(name, state, t);
  }

  /**
   * SoKA: W (O, I) = Σ_j σ_j A_j ⊗ B_j (Kronecker SVD); K components chosen by soka_rank / soka_energy,
   * capped at r; w1_k = √(σ_k/s) A_k, w2_k = √(σ_k/s) B_k (s = alpha / r, split evenly as PiSSA), and
   * the base keeps W - s Σ_k w1_k ⊗ w2_k.
   */
  private addSoka(name: string, state: { r: number; alpha: number; scaling: number; rankDropout: number; rankDropoutScale: boolean; moduleDropout: number }, path: string, a: number, b: number, c: number, d: number, cfg: LokrConfig): void {
    const s = state.scaling;
    if (!(s > 0)) throw new Error(`LoKr init_weights "soka" needs alpha / r > 0, got alpha ${state.alpha} on ${path}`);
    const W = this.baseWeightOI();
    const { w1, w2, residual, k } = noGrad(() => tidy(() => {
      const { S, A, B } = kronSvd(W, a, b, c, d);
      const sigma = Array.from(S.data() as Float32Array);
      let k = cfg.sokaRank === 'elbow' ? elbowRank(sigma) : typeof cfg.sokaRank === 'number' ? cfg.sokaRank : energyRank(sigma, cfg.sokaEnergy);
      k = Math.max(1, Math.min(k, state.r, sigma.length));
      const f = S.narrow(0, 0, k).div(s).sqrt().reshape(k, 1, 1);
      const w1 = A.narrow(0, 0, k).mul(f);  // (K, a, c)
      const w2 = B.narrow(0, 0, k).mul(f);  // (K, b, d)
      const residual = W.to('float32').sub(sokaDelta(w1, w2).mul(s));
      return { w1: k === 1 ? w1.reshape(a, c) : w1, w2: k === 1 ? w2.reshape(b, d) : w2, residual, k };
    }));
    noGrad(() => {
      const w = this.base_layer.weight;
      const res = this.fanInFanOut ? residual.transpose(0, 1).contiguous() : residual;
      this.base_layer.setParameter('weight', res.to(w.dtype), w.requiresGrad);
      residual.dispose();
    });
    this.sokaTerms.set(name, k);
    this.addParams(name, state, [['lokr_w1', w1], ['lokr_w2', w2]]);
  }

  override deleteAdapter(name: string): void {
    super.deleteAdapter(name);
    this.sokaTerms.delete(name);
  }

  rawDelta(name: string): Tensor {
    return tidy(() => {
      const s = this.adapters.get(name)!.scaling;
      const w1 = this.has(name, 'lokr_w1') ? this.weightOf(name, 'lokr_w1') : this.weightOf(name, 'lokr_w1_a').matmul(this.weightOf(name, 'lokr_w1_b'));
      const w2 = this.has(name, 'lokr_w2') ? this.weightOf(name, 'lokr_w2') : this.weightOf(name, 'lokr_w2_a').matmul(this.weightOf(name, 'lokr_w2_b'));
      const d = w1.shape.length === 3 ? sokaDelta(w1, w2) : kron(w1, w2);  // (O, I)
      return d.mul(s);
    });
  }
}

/** Σ_k w1_k ⊗ w2_k for w1 (K, a, c), w2 (K, b, d) -> (a b, c d). */
export function sokaDelta(w1: Tensor, w2: Tensor): Tensor {
  const [K, a, c] = w1.shape as [number, number, number];
  const [, b, d] = w2.shape as [number, number, number];
  return w1.reshape(K, a, 1, c, 1).mul(w2.reshape(K, 1, b, 1, d)).sum(0).reshape(a * b, c * d);
}
