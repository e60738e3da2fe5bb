// Layer replication (PEFT's layer_replication, tuners_utils.replicate_layers): the layer list is
// rebuilt from [start, end) ranges of the current layers, e.g. [[0, 4], [2, 5]] gives layers
// 0 1 2 3 2 3 4. Every entry is a copy that SHARES the original's weights (clone_module with
// share_weights=True), renumbered for the KV cache (PEFT sets each submodule's layer_idx).
import { Module } from '../nn/module.js';
import { noGrad } from '../tensor/index.js';

/** The new layer list's source indices for a layer map; a bad range names itself. */
export function replicationPlan(map: readonly (readonly number[])[], layers: number): number[] {
  if (!Array.isArray(map) || map.length === 0) throw new Error('layer_replication must be a non-empty list of [start, end) ranges');
  const plan: number[] = [];
  for (const r of map) {
    const [start, end] = r as [number, number];
    if (!Array.isArray(r) || r.length !== 2 || !Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > layers || start >= end) {
      throw new Error(`layer_replication: ${JSON.stringify(r)} is not a range [start, end) of this model's ${layers} layers`);
    }
    for (let i = start; i < end; i++) plan.push(i);
  }
  return plan;
}

/** A copy of `layer` whose parameters are the original's tensors, its layerIdx fields set to `index`. */
export function sharedLayerCopy<M extends Module>(layer: M, index: number): M {
  const c = layer.cloneDeep();
  const own = new Map(layer.namedParameters());
  noGrad(() => {
    for (const [n] of c.namedParameters()) c.setParameter(n, own.get(n)!, own.get(n)!.requiresGrad);
  });
  for (const [, m] of c.namedModules()) {
    const f = m as unknown as { layerIdx?: unknown };
    if (typeof f.layerIdx === 'number') f.layerIdx = index;
  }
  return c;
}
