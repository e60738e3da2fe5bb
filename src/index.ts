/**
 * adapterkit: parameter-efficient fine-tuning for TypeScript on libtorch.
 *
 * @example
 * import { tensor, tidy } from 'adapterkit';
 * const y = tidy(() => tensor([[1, 2], [3, 4]]).matmul(tensor([[1], [1]])));
 * console.log(y.toArray()); // [[3], [7]]
 */
export * from './tensor/index.js';
export * from './adapters/index.js';
export { loadModel, createModel, saveModel, CheckpointMismatchError, type LoadOptions } from './models/load.js';
export { generate, generateStream, score, type GenerateOptions, type ScoreResult } from './models/generate.js';
export type { PretrainedModel, ModelInput, ModelOutput, Task } from './models/types.js';
export { KVCache, type KVStore } from './models/cache.js';
export { HFTokenizer, type ChatMessage } from './tokenizer/tokenizer.js';
export { SafetensorsFile, readSafetensors, writeSafetensors, SafetensorsError } from './io/safetensors.js';
export { CheckpointReader, writeSharded } from './io/checkpoint.js';
export { Module, Container, ModuleList } from './nn/module.js';
export { Linear, Conv1D, Embedding, LayerNorm, RMSNorm, Dropout, isLinearLayer, type LinearLayer } from './nn/layers.js';
export * from './train/index.js';
export * from './data/index.js';
export { runTraining, type RunConfig } from './train/run.js';
export * from './distributed/index.js';
export { initModel } from './models/init-model.js';
export { defaultModelDir } from './models/default-model.js';
export { startRouter, type RouterOptions, type RunningRouter } from './serve/router.js';
export { HashRing, pickBounded, loadBound } from './serve/hash-ring.js';
export { ReplicaSet, Replica } from './serve/replica-set.js';
export { VERSION } from './version.js';
