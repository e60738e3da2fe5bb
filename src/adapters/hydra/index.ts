// Hydra (parallel + sequential low-rank branches): one registerAdapter call (convention 3).
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import { DEFAULT_QV_TARGETS } from '../targets.js';
import type { AdapterMethod, TunerLayer } from '../types.js';
import { resolveHydra, hydraFromJson, hydraToJson, type HydraConfig } from './config.js';
import { HydraLayer } from './layer.js';

export const HYDRA: AdapterMethod<HydraConfig> = {
  peftType: 'HYDRA',
  names: ['hydra'],
  cliFlags: { r: 'r', alpha: 'hydraAlpha', dropout: 'hydraDropout' },
  summary: 'Hydra (Kim et al. 2023): a parallel low-rank branch on the input plus a sequential one on the layer output',
  capabilities: () => ({ mergeable: true, mixedBatch: true, kvCache: true, composable: true }),
  fromJson: hydraFromJson,
  toJson: hydraToJson,
  resolve: resolveHydra,
  // The paper builds on LoRA and adapts the same attention projections.
  defaultTargets: (modelType) => DEFAULT_QV_TARGETS[modelType] ?? null,
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`Hydra cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D)`);
    return new HydraLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof HydraLayer,
};

registerAdapter(HYDRA);

export { HydraLayer } from './layer.js';
export { type HydraConfig, type HydraOptions, resolveHydra, DEFAULT_HYDRA, HYDRA_FIELDS } from './config.js';
