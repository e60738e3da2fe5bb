// LoKr configuration, as PEFT's tuners/lokr/config.py LoKrConfig (+ LycorisConfig's rank_pattern /
// alpha_pattern), with one adapterkit extension: init_weights "soka" (SoKA-style Kronecker-SVD
// initialisation; fields soka_energy, soka_rank).
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export type LokrInit = boolean | 'lycoris' | 'soka';

export interface LokrConfig extends AdapterConfigBase {
  peftType: 'LOKR';
  r: number;
  /** Scaling alpha / r. */
  alpha: number;
  /** Training: each output row of ΔW is dropped with this probability. */
  rankDropout: number;
  /** Training: the whole adapter is skipped with this probability. */
  moduleDropout: number;
  /** Only for convolutions in PEFT; kept for the round trip, no effect on Linear layers (as PEFT). */
  useEffectiveConv2d: boolean;
  /** Also factor w1 into w1_a w1_b when r < max(a, c) / 2. */
  decomposeBoth: boolean;
  /** factorization()'s factor: -1 near the square root, else that divisor. */
  decomposeFactor: number;
  /** Rank dropout divides by the kept fraction's mean. */
  rankDropoutScale: boolean;
  /** true: w1 (or w1_a) zero, the layer starts as the base; "lycoris": w2 (or w2_b) zero; false: random; "soka": Kronecker SVD of W (adapterkit). */
  initWeights: LokrInit;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  /** SoKA: energy fraction the principal Kronecker components must reach (default 0.9). */
  sokaEnergy: number;
  /** SoKA: "elbow" (knee of the spectrum) or a fixed count; null: by sokaEnergy. Always capped at r. */
  sokaRank: 'elbow' | number | null;
}

export type LokrOptions = Partial<Omit<LokrConfig, 'extra' | 'peftType'>> & { peftType: 'LOKR'; extra?: Record<string, unknown> };

export const DEFAULT_LOKR: Omit<LokrConfig, keyof AdapterConfigBase | 'peftType'> = {
  r: 8,
  alpha: 8,
  rankDropout: 0,
  moduleDropout: 0,
  useEffectiveConv2d: false,
  decomposeBoth: false,
  decomposeFactor: -1,
  rankDropoutScale: false,
  initWeights: true,
  rankPattern: {},
  alphaPattern: {},
  sokaEnergy: 0.9,
  sokaRank: null,
};

export const LOKR_FIELDS: readonly [string, keyof LokrConfig][] = [
  ['r', 'r'], ['alpha', 'alpha'], ['rank_dropout', 'rankDropout'], ['module_dropout', 'moduleDropout'],
  ['use_effective_conv2d', 'useEffectiveConv2d'], ['decompose_both', 'decomposeBoth'], ['decompose_factor', 'decomposeFactor'],
  ['rank_dropout_scale', 'rankDropoutScale'], ['init_weights', 'initWeights'], ['rank_pattern', 'rankPattern'], ['alpha_pattern', 'alphaPattern'],
  ['soka_energy', 'sokaEnergy'], ['soka_rank', 'sokaRank'],
];

const HINTS = { rank: 'r', loraAlpha: 'alpha', lora_alpha: 'alpha', dropout: 'rankDropout', targets: 'targetModules', initLoraWeights: 'initWeights' };

const isNumMap = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'number' && Number.isFinite(x));

export function resolveLokr(partial: Partial<LokrConfig> | LokrOptions): LokrConfig {
  const c = resolveWith<LokrConfig>('LoKr config', 'LOKR', partial as Record<string, unknown>, DEFAULT_LOKR as Omit<LokrConfig, 'extra' | 'peftType'>, LOKR_FIELDS, HINTS);
  const bad = (f: string, want: string, got: unknown) => configError('LoKr config', f, want, got);
  if (!(Number.isInteger(c.r) && c.r > 0)) bad('r', 'a positive integer', c.r);
  if (!(typeof c.alpha === 'number' && Number.isFinite(c.alpha))) bad('alpha', 'a number', c.alpha);
  if (!(typeof c.rankDropout === 'number' && c.rankDropout >= 0 && c.rankDropout < 1)) bad('rank_dropout', 'in [0, 1)', c.rankDropout);
  if (!(typeof c.moduleDropout === 'number' && c.moduleDropout >= 0 && c.moduleDropout < 1)) bad('module_dropout', 'in [0, 1)', c.moduleDropout);
  if (typeof c.useEffectiveConv2d !== 'boolean') bad('use_effective_conv2d', 'true or false', c.useEffectiveConv2d);
  if (typeof c.decomposeBoth !== 'boolean') bad('decompose_both', 'true or false', c.decomposeBoth);
  if (!(Number.isInteger(c.decomposeFactor) && (c.decomposeFactor === -1 || c.decomposeFactor > 0))) bad('decompose_factor', '-1 or a positive integer', c.decomposeFactor);
  if (typeof c.rankDropoutScale !== 'boolean') bad('rank_dropout_scale', 'true or false', c.rankDropoutScale);
  if (!(typeof c.initWeights === 'boolean' || c.initWeights === 'lycoris' || c.initWeights === 'soka')) bad('init_weights', 'true, false, "lycoris" or "soka"', c.initWeights);
  if (!isNumMap(c.rankPattern) || !Object.values(c.rankPattern).every((v) => Number.isInteger(v) && v > 0)) bad('rank_pattern', '{pattern: positive integer}', c.rankPattern);
  if (!isNumMap(c.alphaPattern)) bad('alpha_pattern', '{pattern: number}', c.alphaPattern);
  if (!(typeof c.sokaEnergy === 'number' && c.sokaEnergy > 0 && c.sokaEnergy <= 1)) bad('soka_energy', 'in (0, 1]', c.sokaEnergy);
  if (!(c.sokaRank === null || c.sokaRank === 'elbow' || (Number.isInteger(c.sokaRank) && (c.sokaRank as number) > 0))) bad('soka_rank', 'null, "elbow" or a positive integer', c.sokaRank);
  return c;
}

export function lokrFromJson(raw: Record<string, unknown>, warn: (m: string) => void): LokrConfig {
  return resolveLokr(peftJsonToOptions('LoKr', 'LOKR', raw, LOKR_FIELDS, warn, ['adapterkit']) as LokrOptions);
}

export function lokrToJson(c: LokrConfig): Record<string, unknown> {
  const json = optionsToPeftJson(c, LOKR_FIELDS);
  if (c.initWeights === 'soka') {
    // The adapter's tensors are relative to the RESIDUAL base W - ΔW₀ (ΔW₀: the principal Kronecker
    // components of W at init). adapterkit recomputes that residual from the original base when it
    // loads the file (init_weights "soka" is kept for loading); PEFT cannot, so it must not load it.
    json.adapterkit = { base_modified: 'soka_residual', note: 'tensors are relative to the base minus its principal Kronecker components; load with adapterkit onto the ORIGINAL base' };
  } else delete json.adapterkit;
  return json;
}
