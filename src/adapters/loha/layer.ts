// The LoHa tuner layer, as PEFT's tuners/loha/layer.py Linear (FedPara's Hadamard product of two
// low-rank matrices): ΔW = scaling · (hada_w1_a @ hada_w1_b) ⊙ (hada_w2_a @ hada_w2_b), with
// w1_a, w2_a (O, r) and w1_b, w2_b (r, I). The rest (forward, dropouts, merge, mixed batch) is
// LycorisLayer's. Init as PEFT: kaiming-uniform(a=√5) everywhere, hada_w2_b zero unless init false.
import { noGrad, tidy, zeros, type Tensor } from '../../tensor/index.js';
import type { LinearLayer } from '../../nn/layers.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions } from '../types.js';
import { patternValue } from '../targets.js';
import { seedFor } from '../lora/init.js';
import { LycorisLayer, kaimingUniform } from '../lokr/lycoris.js';
import type { LohaConfig } from './config.js';

export const LOHA_KEYS = ['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b'] as const;

export class LohaLayer extends LycorisLayer {
  readonly peftType = 'LOHA';

  constructor(base: LinearLayer, ctx: AdapterContext) {
    super(base, ctx, LOHA_KEYS);
  }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as LohaConfig;
    if (this.adapters.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    const r = patternValue(c.rankPattern, path) ?? c.r;
    const alpha = patternValue(c.alphaPattern, path) ?? c.alpha;
    if (!(Number.isInteger(r) && r > 0)) throw new Error(`LoHa: r must be a positive integer, got ${r} for ${path}`);
    // PEFT's LoHa always divides the rank-dropout mask by its mean (no rank_dropout_scale field).
    const state = { r, alpha, scaling: alpha / r, rankDropout: c.rankDropout, rankDropoutScale: true, moduleDropout: c.moduleDropout };
    const O = this.outFeatures;
    const I = this.inFeatures;
    const seed = (k: string) => seedFor(opts.seed, `${path}.${name}.${k}`);
    const t = noGrad((): [string, Tensor][] => [
      ['hada_w1_a', kaimingUniform([O, r], seed('hada_w1_a'))],
      ['hada_w1_b', kaimingUniform([r, I], seed('hada_w1_b'))],
      ['hada_w2_a', kaimingUniform([O, r], seed('hada_w2_a'))],
      ['hada_w2_b', c.initWeights ? zeros([r, I]) : kaimingUniform([r, I], seed('hada_w2_b'))],
    ]);
    this.addParams(name, state, t);
  }

  rawDelta(name: string): Tensor {
    return tidy(() => {
      const p = (k: string) => this.weightOf(name, k);
      return p('hada_w1_a').matmul(p('hada_w1_b')).mul(p('hada_w2_a').matmul(p('hada_w2_b'))).mul(this.adapters.get(name)!.scaling);  // (O, I)
    });
  }
}
