// Low-bit LoRA (quantization-aware LoRA weights, packed files): one registerAdapter call (convention 3).
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import { DEFAULT_QV_TARGETS } from '../targets.js';
import type { AdapterMethod, TunerLayer } from '../types.js';
import { resolveLowbitLora, lowbitLoraFromJson, lowbitLoraToJson, type LowbitLoraConfig } from './config.js';
import { LowbitLoraLayer } from './layer.js';

export const LOWBIT_LORA: AdapterMethod<LowbitLoraConfig> = {
  peftType: 'LOWBIT_LORA',
  names: ['lowbit-lora', 'lora-1bit', 'lora-2bit', 'lora-4bit'],
  presets: { 'lora-1bit': { bits: 1 }, 'lora-2bit': { bits: 2 }, 'lora-4bit': { bits: 4 } },
  cliFlags: { r: 'r', alpha: 'loraAlpha', dropout: 'loraDropout', bits: 'bits' },
  summary: 'Low-bit LoRA: A and B trained quantization-aware to 1-8 bits (straight-through estimator, per-row scales), saved bit-packed',
  capabilities: () => ({ mergeable: true, mixedBatch: true, kvCache: true, composable: true }),
  fromJson: lowbitLoraFromJson,
  toJson: lowbitLoraToJson,
  resolve: resolveLowbitLora,
  defaultTargets: (modelType) => DEFAULT_QV_TARGETS[modelType] ?? null,
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`low-bit LoRA cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D)`);
    return new LowbitLoraLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof LowbitLoraLayer,
};

registerAdapter(LOWBIT_LORA);

export { LowbitLoraLayer } from './layer.js';
export { qmaxOf, quantize, dequantize, fakeQuant, steQuant, packCodes, unpackCodes, codesTensor, codesFromTensor, codesShape } from './quant.js';
export { type LowbitLoraConfig, type LowbitLoraOptions, resolveLowbitLora, DEFAULT_LOWBIT_LORA, LOWBIT_LORA_FIELDS } from './config.js';
