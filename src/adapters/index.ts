// The adapter layer's public surface.
export { PeftModel, BASE_ROW, type AddAdapterOptions, type PeftInput } from './peft-model.js';
export { savePeftAdapters, loadPeftAdapter, readAdapterConfig, adapterDir, type SaveOptions, type LoadAdapterOptions } from './peft-format.js';
export { registerAdapter, adapterMethod, adapterMethods, adapterMethodList, methodByName, defaultAdapterMethod } from './registry.js';
export { PEFT_FORMAT } from './format.js';
export { resolveWith, peftJsonToOptions, optionsToPeftJson, BASE_FIELDS, BASE_DEFAULTS } from './config-base.js';
export { DEFAULT_LORA_TARGETS } from './targets.js';
export { LoraLayer, LoraEmbedding, type LoraConfig, type LoraOptions, type LoraInit, DEFAULT_LORA, PEFT_LORA_FIELDS, LoraRuntime, loraRuntime, setDyloraRank, addWeightedAdapter, type Combination, type CombineOptions } from './lora/index.js';
export type { AdapterConfigBase, AdapterContext, AdapterMethod, AdapterOptions, TunerLayer, AdapterPart, AdapterCapabilities, AdapterFileFormat, MethodRuntime, InjectArgs, SaveTransformArgs, AddLayerOptions } from './types.js';
export { isTunerLayer, isAdapterPart } from './types.js';
