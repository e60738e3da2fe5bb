// Configurations of the sparse fine-tuning methods, with PEFT's field names (SHiRA: peft/tuners/shira/
// config.py) and adapterkit's own for LT-SFT and SPT (PEFT has neither), written the same way.
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

/** Marks a config made for loading saved weights: the file holds the mask, so no selection runs. */
export const FROM_FILE: unique symbol = Symbol('sparse-from-file');
type Loadable = { [FROM_FILE]?: true };

function keepMark<C>(partial: unknown, c: C): C {
  if ((partial as Loadable)[FROM_FILE]) (c as Loadable)[FROM_FILE] = true;
  return c;
}
export const isFromFile = (c: unknown): boolean => (c as Loadable)[FROM_FILE] === true;
export const forLoad = <C>(c: C): C => ({ ...c, [FROM_FILE]: true } as C);

// ---------------------------------------------------------------- SHiRA
export interface ShiraConfig extends AdapterConfigBase {
  peftType: 'SHIRA';
  /** Entries per target: r * (in + out) (as many parameters as a rank-r LoRA; the delta is not rank r). */
  r: number;
  /** "random": PEFT's random_mask (a seeded randperm over the weight). */
  maskType: 'random';
  /** Seed of the mask's torch.Generator; null: a fresh generator (torch's default seed), as PEFT. */
  randomSeed: number | null;
  /** Set from the wrapped layers (true for GPT-2 Conv1D, which PEFT's SHiRA does not wrap). */
  fanInFanOut: boolean;
  /** true: values start at zero; false: N(0, 1) (tests). */
  initWeights: boolean;
}
export type ShiraOptions = Partial<Omit<ShiraConfig, 'extra' | 'peftType'>> & { peftType: 'SHIRA'; extra?: Record<string, unknown> };
export const DEFAULT_SHIRA: Omit<ShiraConfig, keyof AdapterConfigBase> = { r: 32, maskType: 'random', randomSeed: null, fanInFanOut: false, initWeights: true };
export const SHIRA_FIELDS: readonly [string, keyof ShiraConfig][] = [
  ['r', 'r'], ['mask_type', 'maskType'], ['random_seed', 'randomSeed'], ['fan_in_fan_out', 'fanInFanOut'], ['init_weights', 'initWeights'],
];

export function resolveShira(partial: Partial<ShiraConfig> | ShiraOptions): ShiraConfig {
  const c = resolveWith<ShiraConfig>('SHiRA config', 'SHIRA', partial as Record<string, unknown>, DEFAULT_SHIRA as Omit<ShiraConfig, 'extra' | 'peftType'>, SHIRA_FIELDS, { rank: 'r', seed: 'randomSeed' });
  if (!Number.isInteger(c.r) || c.r <= 0) configError('SHiRA config', 'r', 'a positive integer', c.r);
  if (c.maskType !== 'random') configError('SHiRA config', 'mask_type', '"random" (a custom mask_fn cannot be stored in a config file)', c.maskType);
  if (c.randomSeed !== null && !(Number.isInteger(c.randomSeed) && c.randomSeed >= 0)) configError('SHiRA config', 'random_seed', 'null or a non-negative integer', c.randomSeed);
  if (typeof c.fanInFanOut !== 'boolean') configError('SHiRA config', 'fan_in_fan_out', 'true or false', c.fanInFanOut);
  if (typeof c.initWeights !== 'boolean') configError('SHiRA config', 'init_weights', 'true or false', c.initWeights);
  return keepMark(partial, c);
}
export const shiraFromJson = (raw: Record<string, unknown>, warn: (m: string) => void): ShiraConfig =>
  resolveShira(peftJsonToOptions('SHiRA', 'SHIRA', raw, SHIRA_FIELDS, warn) as ShiraOptions);
export const shiraToJson = (c: ShiraConfig): Record<string, unknown> => optionsToPeftJson(c, SHIRA_FIELDS);

// ---------------------------------------------------------------- LT-SFT
export interface LtSftConfig extends AdapterConfigBase {
  peftType: 'LT_SFT';
  /** Fraction of each target weight's entries kept (k = max(1, floor(density * numel))). */
  density: number;
  /** Entries kept per target weight; overrides density when set. */
  numParams: number | null;
  /** SGD steps of the dense phase (one batch of data per step, cycled); null: one pass over data. */
  fullFtSteps: number | null;
  /** Learning rate of the dense phase's plain SGD. */
  fullFtLr: number;
  /** Without data, select on two seeded batches of random token ids instead of refusing (smoke tests only). */
  syntheticData: boolean;
  fanInFanOut: boolean;
}
export type LtSftOptions = Partial<Omit<LtSftConfig, 'extra' | 'peftType'>> & { peftType: 'LT_SFT'; extra?: Record<string, unknown> };
export const DEFAULT_LT_SFT: Omit<LtSftConfig, keyof AdapterConfigBase> = { density: 0.01, numParams: null, fullFtSteps: null, fullFtLr: 0.01, syntheticData: false, fanInFanOut: false };
export const LT_SFT_FIELDS: readonly [string, keyof LtSftConfig][] = [
  ['density', 'density'], ['num_params', 'numParams'], ['full_ft_steps', 'fullFtSteps'], ['full_ft_lr', 'fullFtLr'], ['synthetic_data', 'syntheticData'], ['fan_in_fan_out', 'fanInFanOut'],
];

/** LT-SFT and SPT select over every linear layer unless told otherwise (the papers tune all weights). */
function allLinearByDefault(partial: object): Record<string, unknown> {
  const p = { ...partial } as Record<string, unknown>;
  if ((p.targetModules ?? null) === null && (p.target_modules ?? null) === null) { delete p.target_modules; p.targetModules = 'all-linear'; }
  return p;
}
const isDensity = (d: unknown) => typeof d === 'number' && d > 0 && d <= 1;
export function resolveLtSft(partial: Partial<LtSftConfig> | LtSftOptions): LtSftConfig {
  const c = resolveWith<LtSftConfig>('LT-SFT config', 'LT_SFT', allLinearByDefault(partial), DEFAULT_LT_SFT as Omit<LtSftConfig, 'extra' | 'peftType'>, LT_SFT_FIELDS);
  if (!isDensity(c.density)) configError('LT-SFT config', 'density', 'a fraction in (0, 1]', c.density);
  if (c.numParams !== null && !(Number.isInteger(c.numParams) && c.numParams > 0)) configError('LT-SFT config', 'num_params', 'null or a positive integer', c.numParams);
  if (c.fullFtSteps !== null && !(Number.isInteger(c.fullFtSteps) && c.fullFtSteps > 0)) configError('LT-SFT config', 'full_ft_steps', 'null or a positive integer', c.fullFtSteps);
  if (!(typeof c.fullFtLr === 'number' && c.fullFtLr > 0 && Number.isFinite(c.fullFtLr))) configError('LT-SFT config', 'full_ft_lr', 'a positive number', c.fullFtLr);
  if (typeof c.syntheticData !== 'boolean') configError('LT-SFT config', 'synthetic_data', 'true or false', c.syntheticData);
  return keepMark(partial, c);
}
export const ltSftFromJson = (raw: Record<string, unknown>, warn: (m: string) => void): LtSftConfig =>
  resolveLtSft(peftJsonToOptions('LT-SFT', 'LT_SFT', raw, LT_SFT_FIELDS, warn) as LtSftOptions);
export const ltSftToJson = (c: LtSftConfig): Record<string, unknown> => optionsToPeftJson(c, LT_SFT_FIELDS);

// ---------------------------------------------------------------- SPT
export interface SptConfig extends AdapterConfigBase {
  peftType: 'SPT';
  /** Fraction of all target parameters trained: k = max(1, floor(budget * Σ numel)), chosen globally. */
  budget: number;
  /** Without data, score on two seeded batches of random token ids instead of refusing (smoke tests only). */
  syntheticData: boolean;
  fanInFanOut: boolean;
}
export type SptOptions = Partial<Omit<SptConfig, 'extra' | 'peftType'>> & { peftType: 'SPT'; extra?: Record<string, unknown> };
export const DEFAULT_SPT: Omit<SptConfig, keyof AdapterConfigBase> = { budget: 0.01, syntheticData: false, fanInFanOut: false };
export const SPT_FIELDS: readonly [string, keyof SptConfig][] = [['budget', 'budget'], ['synthetic_data', 'syntheticData'], ['fan_in_fan_out', 'fanInFanOut']];

export function resolveSpt(partial: Partial<SptConfig> | SptOptions): SptConfig {
  const c = resolveWith<SptConfig>('SPT config', 'SPT', allLinearByDefault(partial), DEFAULT_SPT as Omit<SptConfig, 'extra' | 'peftType'>, SPT_FIELDS);
  if (!isDensity(c.budget)) configError('SPT config', 'budget', 'a fraction of the target parameters in (0, 1]', c.budget);
  if (typeof c.syntheticData !== 'boolean') configError('SPT config', 'synthetic_data', 'true or false', c.syntheticData);
  return keepMark(partial, c);
}
export const sptFromJson = (raw: Record<string, unknown>, warn: (m: string) => void): SptConfig =>
  resolveSpt(peftJsonToOptions('SPT', 'SPT', raw, SPT_FIELDS, warn) as SptOptions);
export const sptToJson = (c: SptConfig): Record<string, unknown> => optionsToPeftJson(c, SPT_FIELDS);

declare module '../types.js' {
  interface AdapterOptionsByType {
    SHIRA: ShiraOptions;
    LT_SFT: LtSftOptions;
    SPT: SptOptions;
  }
}
