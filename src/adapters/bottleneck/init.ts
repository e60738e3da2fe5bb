// Initialisations of AdapterHub's Adapter (modeling.py): "bert" N(0, 0.02) weights and zero biases,
// "mam_adapter" kaiming-uniform(a=√5) down and zero up, "houlsby" truncated N(0, 1e-2) in ±2e-2.
// Every draw is seeded from (seed, module path), so an adapter is reproducible and independent of
// the order in which others were created.
import { noGrad, where, type Tensor } from '../../tensor/index.js';

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

export function seedFor(seed: number, key: string): number {
  return (seed * 1_000_003 + hash(key)) % 2 ** 31;
}

/**
 * torch.nn.init.trunc_normal_(mean 0, std, a=-bound, b=bound) in place: values outside the bounds
 * are redrawn until none is left (the distribution is the same as torch's inverse-CDF method).
 */
export function truncNormal_(t: Tensor, std: number, bound: number, seed: number): Tensor {
  noGrad(() => {
    t.normal_(0, std, seed);
    for (let i = 1; i < 100; i++) {
      const out = t.abs().gt(bound);
      const any = out.any().item() !== 0;
      if (!any) {
        out.dispose();
        break;
      }
      const fresh = t.clone().normal_(0, std, seed + i * 7919);
      const next = where(out, fresh, t);
      t.copy_(next);
      for (const x of [out, fresh, next]) x.dispose();
    }
  });
  return t;
}
