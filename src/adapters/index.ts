// The adapter layer's public surface.
export { PeftModel, type AddAdapterOptions, type PeftInput } from './peft-model.js';
export { savePeftAdapters, loadPeftAdapter, readAdapterConfig, adapterDir, type SaveOptions, type LoadAdapterOptions } from './peft-format.js';
export { addWeightedAdapter, type Combination, type CombineOptions } from './combine.js';
export { registerAdapter, adapterMethod, adapterMethods } from './registry.js';
export { DEFAULT_LORA_TARGETS } from './targets.js';
export { LoraLayer, type LoraConfig, DEFAULT_LORA } from './lora/index.js';
export type { AdapterConfigBase, AdapterContext, AdapterMethod, TunerLayer } from './types.js';
