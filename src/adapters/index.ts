// The adapter layer's public surface.
export { PeftModel, BASE_ROW, type AddAdapterOptions, type PeftInput } from './peft-model.js';
export { savePeftAdapters, loadPeftAdapter, readAdapterConfig, adapterDir, type SaveOptions, type LoadAdapterOptions } from './peft-format.js';
export { addWeightedAdapter, type Combination, type CombineOptions } from './combine.js';
export { registerAdapter, adapterMethod, adapterMethods } from './registry.js';
export { DEFAULT_LORA_TARGETS } from './targets.js';
export { LoraLayer, LoraEmbedding, type LoraConfig, type LoraOptions, type LoraInit, DEFAULT_LORA, PEFT_LORA_FIELDS } from './lora/index.js';
export type { AdapterConfigBase, AdapterContext, AdapterMethod, AdapterOptions, TunerLayer } from './types.js';
