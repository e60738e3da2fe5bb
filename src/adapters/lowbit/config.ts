// Low-bit LoRA configuration: LoRA whose A and B are trained quantization-aware to 1–8 bits (straight-
// through estimator, per-row scales) and stored packed. PEFT has no such method: adapterkit writes
// PEFT-style folders with peft_type "LOWBIT_LORA", LoRA's field names and `bits`.
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export interface LowbitLoraConfig extends AdapterConfigBase {
  peftType: 'LOWBIT_LORA';
  r: number;
  /** Scaling alpha / r. */
  loraAlpha: number;
  loraDropout: number;
  /** Bits per weight of A and B (1: sign · mean|w| per row; 2–8: symmetric per-row absmax). */
  bits: number;
  /** true: kaiming-uniform A, zero B (the layer starts as the base); false: random B too (tests). */
  initLoraWeights: boolean;
}

export type LowbitLoraOptions = Partial<Omit<LowbitLoraConfig, 'extra' | 'peftType'>> & { peftType: 'LOWBIT_LORA'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    LOWBIT_LORA: LowbitLoraOptions;
  }
}

export const DEFAULT_LOWBIT_LORA: Pick<LowbitLoraConfig, 'r' | 'loraAlpha' | 'loraDropout' | 'bits' | 'initLoraWeights'> = {
  r: 8,
  loraAlpha: 8,
  loraDropout: 0,
  bits: 4,
  initLoraWeights: true,
};

export const LOWBIT_LORA_FIELDS: readonly [string, keyof LowbitLoraConfig][] = [
  ['r', 'r'], ['lora_alpha', 'loraAlpha'], ['lora_dropout', 'loraDropout'], ['bits', 'bits'], ['init_lora_weights', 'initLoraWeights'],
];

const HINTS = { rank: 'r', alpha: 'loraAlpha', dropout: 'loraDropout', targets: 'targetModules', nbits: 'bits' };

export function resolveLowbitLora(partial: Partial<LowbitLoraConfig> | LowbitLoraOptions): LowbitLoraConfig {
  const c = resolveWith<LowbitLoraConfig>('Low-bit LoRA config', 'LOWBIT_LORA', partial as Record<string, unknown>, DEFAULT_LOWBIT_LORA as Omit<LowbitLoraConfig, 'extra' | 'peftType'>, LOWBIT_LORA_FIELDS, HINTS);
  const bad = (f: string, want: string, got: unknown) => configError('Low-bit LoRA config', f, want, got);
  if (!(typeof c.r === 'number' && Number.isInteger(c.r) && c.r > 0)) bad('r', 'a positive integer', c.r);
  if (!(typeof c.loraAlpha === 'number' && Number.isFinite(c.loraAlpha) && c.loraAlpha > 0)) bad('lora_alpha', 'a positive number', c.loraAlpha);
  if (!(typeof c.loraDropout === 'number' && c.loraDropout >= 0 && c.loraDropout < 1)) bad('lora_dropout', 'in [0, 1)', c.loraDropout);
  if (!(typeof c.bits === 'number' && Number.isInteger(c.bits) && c.bits >= 1 && c.bits <= 8)) bad('bits', 'an integer from 1 to 8', c.bits);
  if (typeof c.initLoraWeights !== 'boolean') bad('init_lora_weights', 'true or false', c.initLoraWeights);
  return c;
}

export function lowbitLoraFromJson(raw: Record<string, unknown>, warn: (m: string) => void): LowbitLoraConfig {
  return resolveLowbitLora(peftJsonToOptions('Low-bit LoRA', 'LOWBIT_LORA', raw, LOWBIT_LORA_FIELDS, warn) as LowbitLoraOptions);
}

export function lowbitLoraToJson(c: LowbitLoraConfig): Record<string, unknown> {
  return optionsToPeftJson(c, LOWBIT_LORA_FIELDS);
}
