// SSF (scale and shift features): one registerAdapter call (convention 3).
import { registerAdapter } from '../registry.js';
import { isLinearLayer, LayerNorm, RMSNorm } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import type { AdapterMethod, TunerLayer } from '../types.js';
import { resolveSsf, ssfFromJson, ssfToJson, DEFAULT_SSF_TARGETS, type SsfConfig } from './config.js';
import { SsfLayer } from './layer.js';

export const SSF: AdapterMethod<SsfConfig> = {
  peftType: 'SSF',
  names: ['ssf'],
  summary: 'SSF (Lian et al. 2022): a learned per-feature scale and shift after each adapted linear layer or norm',
  capabilities: () => ({ mergeable: true, mixedBatch: true, kvCache: true, composable: true }),
  fromJson: ssfFromJson,
  toJson: ssfToJson,
  resolve: resolveSsf,
  defaultTargets: (modelType) => DEFAULT_SSF_TARGETS[modelType] ?? null,
  // Linear layers (also through "all-linear") and norms named in target_modules.
  canWrap: (m: Module) => isLinearLayer(m) || m instanceof LayerNorm || m instanceof RMSNorm,
  wrap: (base, ctx) => {
    if (!(isLinearLayer(base) || base instanceof LayerNorm || base instanceof RMSNorm)) throw new Error(`SSF cannot wrap a ${base.constructor.name} (it needs a Linear, Conv1D, LayerNorm or RMSNorm)`);
    return new SsfLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof SsfLayer,
};

registerAdapter(SSF);

export { SsfLayer } from './layer.js';
export { type SsfConfig, type SsfOptions, type SsfInit, resolveSsf, DEFAULT_SSF, DEFAULT_SSF_TARGETS, SSF_FIELDS } from './config.js';
