// LoHa configuration, as PEFT's tuners/loha/config.py LoHaConfig (+ LycorisConfig's rank_pattern /
// alpha_pattern).
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export interface LohaConfig extends AdapterConfigBase {
  peftType: 'LOHA';
  r: number;
  /** Scaling alpha / r. */
  alpha: number;
  /** Training: each output row of ΔW is dropped with this probability (the kept rows rescaled, as PEFT). */
  rankDropout: number;
  /** Training: the whole adapter is skipped with this probability. */
  moduleDropout: number;
  /** Only for convolutions in PEFT; kept for the round trip, no effect on Linear layers. */
  useEffectiveConv2d: boolean;
  /** true: hada_w2_b zero (the layer starts as the base); false: every factor random. */
  initWeights: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
}

export type LohaOptions = Partial<Omit<LohaConfig, 'extra' | 'peftType'>> & { peftType: 'LOHA'; extra?: Record<string, unknown> };

export const DEFAULT_LOHA: Omit<LohaConfig, keyof AdapterConfigBase | 'peftType'> = {
  r: 8,
  alpha: 8,
  rankDropout: 0,
  moduleDropout: 0,
  useEffectiveConv2d: false,
  initWeights: true,
  rankPattern: {},
  alphaPattern: {},
};

export const LOHA_FIELDS: readonly [string, keyof LohaConfig][] = [
  ['r', 'r'], ['alpha', 'alpha'], ['rank_dropout', 'rankDropout'], ['module_dropout', 'moduleDropout'],
  ['use_effective_conv2d', 'useEffectiveConv2d'], ['init_weights', 'initWeights'], ['rank_pattern', 'rankPattern'], ['alpha_pattern', 'alphaPattern'],
];

const HINTS = { rank: 'r', loraAlpha: 'alpha', lora_alpha: 'alpha', dropout: 'rankDropout', targets: 'targetModules', initLoraWeights: 'initWeights' };

const isNumMap = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'number' && Number.isFinite(x));

export function resolveLoha(partial: Partial<LohaConfig> | LohaOptions): LohaConfig {
  const c = resolveWith<LohaConfig>('LoHa config', 'LOHA', partial as Record<string, unknown>, DEFAULT_LOHA as Omit<LohaConfig, 'extra' | 'peftType'>, LOHA_FIELDS, HINTS);
  const bad = (f: string, want: string, got: unknown) => configError('LoHa config', f, want, got);
  if (!(Number.isInteger(c.r) && c.r > 0)) bad('r', 'a positive integer', c.r);
  if (!(typeof c.alpha === 'number' && Number.isFinite(c.alpha))) bad('alpha', 'a number', c.alpha);
  if (!(typeof c.rankDropout === 'number' && c.rankDropout >= 0 && c.rankDropout < 1)) bad('rank_dropout', 'in [0, 1)', c.rankDropout);
  if (!(typeof c.moduleDropout === 'number' && c.moduleDropout >= 0 && c.moduleDropout < 1)) bad('module_dropout', 'in [0, 1)', c.moduleDropout);
  if (typeof c.useEffectiveConv2d !== 'boolean') bad('use_effective_conv2d', 'true or false', c.useEffectiveConv2d);
  if (typeof c.initWeights !== 'boolean') bad('init_weights', 'true or false', c.initWeights);
  if (!isNumMap(c.rankPattern) || !Object.values(c.rankPattern).every((v) => Number.isInteger(v) && v > 0)) bad('rank_pattern', '{pattern: positive integer}', c.rankPattern);
  if (!isNumMap(c.alphaPattern)) bad('alpha_pattern', '{pattern: number}', c.alphaPattern);
  return c;
}

export function lohaFromJson(raw: Record<string, unknown>, warn: (m: string) => void): LohaConfig {
  return resolveLoha(peftJsonToOptions('LoHa', 'LOHA', raw, LOHA_FIELDS, warn) as LohaOptions);
}

export function lohaToJson(c: LohaConfig): Record<string, unknown> {
  return optionsToPeftJson(c, LOHA_FIELDS);
}
