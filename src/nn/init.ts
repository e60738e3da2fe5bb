// Hugging Face's default weight initialisation (PreTrainedModel._init_weights): linear and
// embedding weights ~ N(0, initializer_range), biases 0, norm weights 1 and biases 0.
// Seeded per parameter so a model is reproducible whatever the construction order.
import { noGrad } from '../tensor/index.js';
import type { Module } from './module.js';
import { Linear, Conv1D, Embedding, LayerNorm, RMSNorm } from './layers.js';

export interface InitOptions {
  std: number;
  seed: number;
  /** Override the std for some parameters (GPT-2 scales c_proj by 1/sqrt(2 n_layer)). */
  stdFor?: (path: string) => number | undefined;
  /** Only initialise these module paths (e.g. a new task head); default all. */
  only?: (path: string) => boolean;
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

export function initWeights(root: Module, o: InitOptions): void {
  noGrad(() => {
    for (const [path, m] of root.namedModules()) {
      if (o.only && !o.only(path)) continue;
      const seedOf = (name: string) => (o.seed * 1000003 + hash(`${path}.${name}`)) % 2 ** 31;
      if (m instanceof Linear || m instanceof Conv1D || m instanceof Embedding) {
        const std = o.stdFor?.(`${path}.weight`) ?? o.std;
        m.weight.normal_(0, std, seedOf('weight'));
        if (!(m instanceof Embedding) && m.bias) m.bias.zero_();
      } else if (m instanceof LayerNorm) {
        m.weight.fill_(1);
        m.bias?.zero_();
      } else if (m instanceof RMSNorm) {
        m.weight.fill_(1);
      }
    }
  });
}
