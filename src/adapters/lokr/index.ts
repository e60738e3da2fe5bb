// LoKr (Low-Rank Kronecker product; LyCORIS, Yeh et al. 2023 "Navigating Text-To-Image Customization:
// From LyCORIS Fine-Tuning to Model Evaluation"), PEFT's peft_type "LOKR": one registerAdapter call.
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import { DEFAULT_QV_TARGETS } from '../targets.js';
import type { AdapterMethod, TunerLayer } from '../types.js';
import { resolveLokr, lokrFromJson, lokrToJson, type LokrConfig, type LokrOptions } from './config.js';
import { LokrLayer } from './layer.js';

declare module '../types.js' {
  interface AdapterOptionsByType {
    LOKR: LokrOptions;
  }
}

export const LOKR: AdapterMethod<LokrConfig> = {
  peftType: 'LOKR',
  names: ['lokr', 'soka'],
  presets: { soka: { initWeights: 'soka' } },
  cliFlags: { r: 'r', alpha: 'alpha', dropout: 'rankDropout' },
  summary: 'LoKr (LyCORIS, Yeh et al. 2023): a Kronecker product w1 ⊗ w2 (low-rank factors) added to each weight; soka: SoKA-style Kronecker-SVD init (principal components in the adapter, residual in the base)',
  capabilities: () => ({ mergeable: true, mixedBatch: true, kvCache: true, composable: true }),
  fromJson: lokrFromJson,
  toJson: lokrToJson,
  resolve: resolveLokr,
  // PEFT's TRANSFORMERS_MODELS_TO_LOKR_TARGET_MODULES_MAPPING is a copy of LoRA's (q/v projections).
  defaultTargets: (modelType) => DEFAULT_QV_TARGETS[modelType] ?? null,
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`LoKr cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D; convolutions are not supported)`);
    return new LokrLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof LokrLayer,
};

registerAdapter(LOKR);

export { LokrLayer, lokrShape, sokaDelta, LOKR_KEYS } from './layer.js';
export { factorization, kronRearrange, kronSvd, energyRank, elbowRank } from './kron.js';
export { LycorisLayer, kron } from './lycoris.js';
export { type LokrConfig, type LokrOptions, type LokrInit, resolveLokr, DEFAULT_LOKR, LOKR_FIELDS } from './config.js';
