// PaCA (partial connection adaptation): one registerAdapter call (convention 3).
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import type { AdapterMethod, TunerLayer } from '../types.js';
import { resolvePaca, pacaFromJson, pacaToJson, type PacaConfig } from './config.js';
import { PacaLayer } from './layer.js';

export const PACA: AdapterMethod<PacaConfig> = {
  peftType: 'PACA',
  names: ['paca'],
  cliFlags: { r: 'r' },
  summary: 'PaCA (Woo et al. 2025): r random input columns of every linear weight trained in place (merge writes them back)',
  capabilities: () => ({ mergeable: true, mixedBatch: true, kvCache: true, composable: true }),
  fromJson: pacaFromJson,
  toJson: pacaToJson,
  resolve: resolvePaca,
  // The paper adapts every linear layer of the blocks (as LoRA on all of them): without target_modules
  // the config gets "all-linear", written into the saved JSON.
  prepareModel: (config) => {
    if (config.targetModules === null) config.targetModules = 'all-linear';
  },
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`PaCA cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D)`);
    return new PacaLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof PacaLayer,
};

registerAdapter(PACA);

export { PacaLayer } from './layer.js';
export { ColumnSliceLayer, seededColumns } from './column-layer.js';
export { type PacaConfig, type PacaOptions, resolvePaca, DEFAULT_PACA, PACA_FIELDS } from './config.js';
