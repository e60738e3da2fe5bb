// LoRA: one registerAdapter call (convention 3).
import { registerAdapter } from '../registry.js';
import { isLinearLayer, Embedding } from '../../nn/layers.js';
import { DEFAULT_QV_TARGETS as DEFAULT_LORA_TARGETS } from '../targets.js';
import { isTunerLayer, type AdapterMethod, type TunerLayer } from '../types.js';
import { resolveLora, loraFromJson, loraToJson, type LoraConfig } from './config.js';
import { LoraLayer } from './layer.js';
import { LoraEmbedding } from './embedding.js';
import type { Module } from '../../nn/module.js';
import { PEFT_FORMAT } from '../format.js';
import { LoraRuntime } from './dylora.js';
import { loraSaveTransform } from './save.js';
import { collectCovariances } from './covariance.js';

export const LORA: AdapterMethod<LoraConfig> = {
  peftType: 'LORA',
  names: ['lora', 'dora', 'rslora', 'dylora', 'pissa', 'olora', 'corda'],
  presets: { dora: { useDora: true }, rslora: { useRslora: true }, dylora: { dylora: true }, pissa: { initLoraWeights: 'pissa' }, olora: { initLoraWeights: 'olora' }, corda: { initLoraWeights: 'corda' } },
  cliFlags: { r: 'r', alpha: 'loraAlpha', dropout: 'loraDropout', dora: 'useDora', rslora: 'useRslora' },
  summary: 'LoRA (Hu et al. 2021): y = Wx + (alpha/r) B A x on linear layers and embeddings; variants DoRA, rsLoRA, DyLoRA, PiSSA, OLoRA, CorDA',
  compositions: ['Average'],
  capabilities: (c) => ({ mergeable: true, mixedBatch: !c.useDora, kvCache: true, composable: true }),
  format: {
    ...PEFT_FORMAT,
    // Older PEFT files keep the adapter name in the key (lora_A.default.weight).
    modelKey: (key, model) => {
      const k = PEFT_FORMAT.modelKey(key, model);
      return k === null ? null : k.replace(/\.(lora_[AB]|lora_embedding_[AB])\.[^.]+\.(weight|bias)$/, '.$1.$2').replace(/\.lora_embedding_([AB])\.[^.]+$/, '.lora_embedding_$1').replace(/\.lora_magnitude_vector\.[^.]+$/, '.lora_magnitude_vector');
    },
  },
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
  // The saved weights are the adapter: load as a plain LoRA (no PiSSA/CorDA surgery on the base).
  forLoad: (c) => ({ ...c, initLoraWeights: true }),
  // CorDA: each target's input covariance from the sample batches.
  prepareAdapter: ({ config, model, paths, data }) => (config.initLoraWeights === 'corda' ? collectCovariances(model, paths, data) : new Map()),
  biasMode: (c) => (c.bias === 'all' ? 'all' : c.bias === 'lora_only' ? 'wrapped' : 'none'),
  runtime: (peft) => new LoraRuntime(peft.ctx, () => [...peft.configs.values()].filter((c): c is LoraConfig => c.peftType === 'LORA')),
  saveTransform: loraSaveTransform,
};

registerAdapter(LORA);

export { LoraLayer } from './layer.js';
export { DEFAULT_LORA_TARGETS };
export { LoraEmbedding } from './embedding.js';
export { LoraRuntime, loraRuntime, setDyloraRank } from './dylora.js';
export { addWeightedAdapter, type Combination, type CombineOptions } from './combine.js';
export { type LoraConfig, type LoraOptions, type LoraInit, resolveLora, DEFAULT_LORA, PEFT_LORA_FIELDS } from './config.js';
