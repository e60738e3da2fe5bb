// LoRA: one registerAdapter call (convention 3).
import { registerAdapter } from '../registry.js';
import { isLinearLayer, Embedding } from '../../nn/layers.js';
import { DEFAULT_LORA_TARGETS } from '../targets.js';
import { isTunerLayer, type AdapterMethod, type TunerLayer } from '../types.js';
import { resolveLora, loraFromJson, loraToJson, type LoraConfig } from './config.js';
import { LoraLayer } from './layer.js';
import { LoraEmbedding } from './embedding.js';
import type { Module } from '../../nn/module.js';

export const LORA: AdapterMethod<LoraConfig> = {
  peftType: 'LORA',
  fromJson: loraFromJson,
  toJson: loraToJson,
  resolve: resolveLora,
  defaultTargets: (modelType) => DEFAULT_LORA_TARGETS[modelType] ?? null,
  // Linear layers (nn.Linear, GPT-2's Conv1D) and embeddings (named in target_modules; "all-linear"
  // never includes them), as PEFT's LoRA.
  canWrap: (m: Module) => isLinearLayer(m) || m instanceof Embedding,
  wrap: (base, ctx) => {
    if (base instanceof Embedding) return new LoraEmbedding(base, ctx);
    if (!isLinearLayer(base)) throw new Error(`LoRA cannot wrap a ${base.constructor.name}`);
    return new LoraLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => isTunerLayer(m) && (m instanceof LoraLayer || m instanceof LoraEmbedding),
  // PEFT's dispatch_default overwrites lora_config.fan_in_fan_out with the layer type (True for a
  // transformers Conv1D, False for nn.Linear), so a saved GPT-2 config says true.
  // PEFT's LoraModel._prepare_model: layer_replication rebuilds the layer list (shared weights)
  // before targets are matched, so the adapter's module paths count the replicated layers.
  prepareModel: (config, model, firstAdapter, ctx) => {
    if (config.layerReplication === null) return;
    if (!model.replicateLayers) throw new Error(`layer_replication is not supported for ${model.modelType} models (PEFT supports LLaMA-style and BERT layer lists)`);
    if (!firstAdapter) throw new Error('layer_replication can only be set on the first adapter of a model (the layers are replicated once)');
    model.replicateLayers(config.layerReplication);
    ctx.sharedBaseWeights = true;
  },
  afterWrap: (config, layers) => {
    if (layers.length) config.fanInFanOut = layers.some((l) => (l as LoraLayer | LoraEmbedding).fanInFanOut);
  },
};

registerAdapter(LORA);

export { LoraLayer } from './layer.js';
export { LoraEmbedding } from './embedding.js';
export { type LoraConfig, type LoraOptions, type LoraInit, resolveLora, DEFAULT_LORA, PEFT_LORA_FIELDS } from './config.js';
