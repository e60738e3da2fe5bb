// LoHa (Low-rank Hadamard product; FedPara, Hyeon-Woo et al. 2022, via LyCORIS), PEFT's peft_type
// "LOHA": one registerAdapter call.
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import { DEFAULT_QV_TARGETS } from '../targets.js';
import type { AdapterMethod, TunerLayer } from '../types.js';
import { resolveLoha, lohaFromJson, lohaToJson, type LohaConfig, type LohaOptions } from './config.js';
import { LohaLayer } from './layer.js';

declare module '../types.js' {
  interface AdapterOptionsByType {
    LOHA: LohaOptions;
  }
}

export const LOHA: AdapterMethod<LohaConfig> = {
  peftType: 'LOHA',
  names: ['loha'],
  cliFlags: { r: 'r', alpha: 'alpha', dropout: 'rankDropout' },
  summary: 'LoHa (FedPara, Hyeon-Woo et al. 2022; LyCORIS): the Hadamard product of two low-rank matrices added to each weight',
  capabilities: () => ({ mergeable: true, mixedBatch: true, kvCache: true, composable: true }),
  fromJson: lohaFromJson,
  toJson: lohaToJson,
  resolve: resolveLoha,
  // PEFT's TRANSFORMERS_MODELS_TO_LOHA_TARGET_MODULES_MAPPING is a copy of LoRA's (q/v projections).
  defaultTargets: (modelType) => DEFAULT_QV_TARGETS[modelType] ?? null,
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`LoHa cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D; convolutions are not supported)`);
    return new LohaLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof LohaLayer,
};

registerAdapter(LOHA);

export { LohaLayer, LOHA_KEYS } from './layer.js';
export { type LohaConfig, type LohaOptions, resolveLoha, DEFAULT_LOHA, LOHA_FIELDS } from './config.js';
