// Hydra configuration (Kim et al. 2023, "Hydra: Multi-head Low-rank Adaptation for Parameter
// Efficient Fine-tuning"). PEFT has no Hydra: adapterkit writes PEFT-style folders with peft_type
// "HYDRA" and the fields below (snake_case, named after LoRA's).
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export interface HydraConfig extends AdapterConfigBase {
  peftType: 'HYDRA';
  /** Rank of both branches. */
  r: number;
  /** Scaling alpha / r of both branches. */
  hydraAlpha: number;
  /** Dropout on each branch's input (x for the parallel branch, the base output for the sequential one). */
  hydraDropout: number;
  /** true: kaiming-uniform A, zero B (the layer starts as the base); false: random B too (tests). */
  initHydraWeights: boolean;
}

export type HydraOptions = Partial<Omit<HydraConfig, 'extra' | 'peftType'>> & { peftType: 'HYDRA'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    HYDRA: HydraOptions;
  }
}

export const DEFAULT_HYDRA: Pick<HydraConfig, 'r' | 'hydraAlpha' | 'hydraDropout' | 'initHydraWeights'> = {
  r: 8,
  hydraAlpha: 8,
  hydraDropout: 0,
  initHydraWeights: true,
};

export const HYDRA_FIELDS: readonly [string, keyof HydraConfig][] = [
  ['r', 'r'], ['hydra_alpha', 'hydraAlpha'], ['hydra_dropout', 'hydraDropout'], ['init_hydra_weights', 'initHydraWeights'],
];

const HINTS = { rank: 'r', alpha: 'hydraAlpha', dropout: 'hydraDropout', loraAlpha: 'hydraAlpha', lora_alpha: 'hydraAlpha', targets: 'targetModules' };

export function resolveHydra(partial: Partial<HydraConfig> | HydraOptions): HydraConfig {
  const c = resolveWith<HydraConfig>('Hydra config', 'HYDRA', partial as Record<string, unknown>, DEFAULT_HYDRA as Omit<HydraConfig, 'extra' | 'peftType'>, HYDRA_FIELDS, HINTS);
  const bad = (f: string, want: string, got: unknown) => configError('Hydra config', f, want, got);
  if (!(typeof c.r === 'number' && Number.isInteger(c.r) && c.r > 0)) bad('r', 'a positive integer', c.r);
  if (!(typeof c.hydraAlpha === 'number' && Number.isFinite(c.hydraAlpha) && c.hydraAlpha > 0)) bad('hydra_alpha', 'a positive number', c.hydraAlpha);
  if (!(typeof c.hydraDropout === 'number' && c.hydraDropout >= 0 && c.hydraDropout < 1)) bad('hydra_dropout', 'in [0, 1)', c.hydraDropout);
  if (typeof c.initHydraWeights !== 'boolean') bad('init_hydra_weights', 'true or false', c.initHydraWeights);
  return c;
}

export function hydraFromJson(raw: Record<string, unknown>, warn: (m: string) => void): HydraConfig {
  return resolveHydra(peftJsonToOptions('Hydra', 'HYDRA', raw, HYDRA_FIELDS, warn) as HydraOptions);
}

export function hydraToJson(c: HydraConfig): Record<string, unknown> {
  return optionsToPeftJson(c, HYDRA_FIELDS);
}
