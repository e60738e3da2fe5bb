// Saving and loading the tensors of one adapter's module tree, keyed as torch's state_dict names them
// (a module registered under two names, like AdapterHub's adapter_norm_before = adapter_down.0,
// appears under both). Loading accepts the keys with any adapter name in front (AdapterHub files
// carry the name they were trained under) and checks every shape.
import type { Module } from '../../nn/module.js';
import { noGrad, tidy, type Tensor } from '../../tensor/index.js';

/** `prefix + <param path>` -> tensor, every name of every parameter. */
export function stateOf(m: Module, prefix: string): Map<string, Tensor> {
  return new Map(m.namedParameters(prefix));
}

/** Distinct parameter tensors (shared ones once), without those whose path `skip` selects. */
export function distinct(m: Module, skip: (name: string) => boolean = () => false): Tensor[] {
  return [...new Set(m.namedParameters().filter(([n]) => !skip(n)).map(([, t]) => t))];
}

/**
 * Loads `state` (keys `<before><any adapter name>.<param path>`) into `m`. Each distinct tensor needs
 * one key; an unknown key, a missing tensor or a shape mismatch is an error naming the key.
 */
export function loadByName(m: Module, before: string, state: Map<string, Tensor>, path: string): void {
  const params = m.namedParameters();
  const names = params.map(([n]) => n).sort((a, b) => b.length - a.length);
  const got = new Map<Tensor, { key: string; t: Tensor }>();
  for (const [key, t] of state) {
    if (!key.startsWith(before)) throw new Error(`${path}.${key}: not a key of this bottleneck adapter part`);
    const rest = key.slice(before.length);
    const pn = names.find((n) => rest.endsWith('.' + n) && rest.length > n.length + 1);
    if (pn === undefined) throw new Error(`${path}.${key}: no such tensor in this adapter (it has ${names.join(', ')})`);
    const p = params.find(([n]) => n === pn)![1];
    if (t.shape.join() !== p.shape.join()) throw new Error(`${path}.${key}: the file has shape [${t.shape.join(', ')}] but this adapter needs [${p.shape.join(', ')}] (another reduction_factor or base model?)`);
    got.set(p, { key, t });
  }
  noGrad(() => {
    for (const [n, p] of params) {
      const g = got.get(p);
      if (!g) throw new Error(`adapter file has no ${path}.${before}<name>.${n}`);
      tidy(() => { p.copy_(g.t.to(p.dtype, p.device)); });
    }
  });
}
