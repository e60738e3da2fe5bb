// Non-finite weights. A NaN or infinite weight makes every output NaN: scores print null, generation
// prints an empty line, and a training run keeps "improving" on NaN. Loading refuses such weights
// (unless asked), and the trainer never saves them.
import { noGrad, tidy, type Tensor } from '../tensor/index.js';

/** The first of `named` holding a NaN or infinite value, with what it holds; null when all are finite. */
export function firstNonFinite(named: Iterable<readonly [string, Tensor]>): { name: string; what: string } | null {
  for (const [name, t] of named) {
    if (!t.dtype.startsWith('float') && t.dtype !== 'bfloat16') continue;
    const bad = noGrad(() => tidy(() => {
      if (t.isfinite().all().item()) return null;
      const nan = t.isnan().sum().item();
      const total = t.shape.reduce((a, b) => a * b, 1);
      const inf = total - t.isfinite().sum().item() - nan;
      return [nan ? `${nan} NaN` : '', inf ? `${inf} infinite` : ''].filter(Boolean).join(' and ') + ` of ${total} values`;
    }));
    if (bad !== null) return { name, what: bad };
  }
  return null;
}

/**
 * Throws when a parameter of `model` is not finite. `source` names where the weights came from,
 * `override` the flag that loads them anyway (null: there is none).
 */
export function assertFiniteParameters(named: Iterable<readonly [string, Tensor]>, source: string, override: string | null): void {
  const bad = firstNonFinite(named);
  if (bad) {
    throw new Error(`${source}: weight ${bad.name} holds ${bad.what}; every output would be NaN (a diverged or damaged checkpoint). ` +
      `Use another checkpoint${override ? `, or pass ${override} to load it anyway` : ''}`);
  }
}
