// (IA)³: one registerAdapter call (convention 3). PEFT's IA3 with its file format exactly.
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import type { AdapterMethod, TunerLayer } from '../types.js';
import { resolveIa3, ia3FromJson, ia3ToJson, DEFAULT_IA3_TARGETS, type Ia3Config } from './config.js';
import { Ia3Layer } from './layer.js';

export const IA3: AdapterMethod<Ia3Config> = {
  peftType: 'IA3',
  names: ['ia3'],
  summary: '(IA)³ (Liu et al. 2022): learned vectors that rescale attention keys/values and the feed-forward input',
  capabilities: () => ({ mergeable: true, mixedBatch: true, kvCache: true, composable: true }),
  fromJson: ia3FromJson,
  toJson: ia3ToJson,
  resolve: resolveIa3,
  defaultTargets: (modelType) => DEFAULT_IA3_TARGETS[modelType]?.targets ?? null,
  // nn.Linear and GPT-2's Conv1D, as PEFT's IA3 (which also wraps Conv2d/3d, absent here).
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`IA3 cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D)`);
    return new Ia3Layer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof Ia3Layer,
  // PEFT's IA3Model._prepare_adapter_config: missing target_modules / feedforward_modules take the
  // model type's defaults and are written into the config (so the saved JSON names them).
  prepareModel: (config, model) => {
    const d = DEFAULT_IA3_TARGETS[model.modelType];
    if (config.targetModules === null) {
      if (!d) throw new Error(`IA3: no default target_modules for ${model.modelType} models: set target_modules (and feedforward_modules)`);
      config.targetModules = [...d.targets];
    }
    if (config.feedforwardModules === null) {
      if (!d) throw new Error(`IA3: no default feedforward_modules for ${model.modelType} models: set feedforward_modules ([] for none)`);
      config.feedforwardModules = [...d.feedforward];
    }
  },
  // PEFT sets fan_in_fan_out from the layer type (true for a transformers Conv1D), so a GPT-2 config says true.
  afterWrap: (config, layers) => {
    if (layers.length) config.fanInFanOut = layers.some((l) => (l as Ia3Layer).fanInFanOut);
  },
};

registerAdapter(IA3);

export { Ia3Layer } from './layer.js';
export { type Ia3Config, type Ia3Options, resolveIa3, DEFAULT_IA3, DEFAULT_IA3_TARGETS, IA3_FIELDS } from './config.js';
