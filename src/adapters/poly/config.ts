// Poly / MHR configuration with PEFT's field names and defaults (peft/tuners/poly/config.py):
// Polytropon (Ponti et al. 2022) and Multi-Head Routing (Caccia et al. 2022, n_splits > 1).
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export interface PolyConfig extends AdapterConfigBase {
  peftType: 'POLY';
  /** Rank of each skill's LoRA (the update is divided by r, as PEFT). */
  r: number;
  /** true: B starts at zero (the layer starts as the base); false: B as nn.Linear's default too (tests). */
  initWeights: boolean;
  /** The router's kind; PEFT has "poly" only. */
  polyType: 'poly';
  /** Tasks of the multitask setting: the router holds one row of logits per task. */
  nTasks: number;
  /** Skills (LoRA modules) in the inventory of each layer. */
  nSkills: number;
  /** Splits of each LoRA (in and out features divided into heads); > 1 is Multi-Head Routing (MHR). */
  nSplits: number;
}

export type PolyOptions = Partial<Omit<PolyConfig, 'extra' | 'peftType'>> & { peftType: 'POLY'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    POLY: PolyOptions;
  }
}

export const DEFAULT_POLY: Pick<PolyConfig, 'r' | 'initWeights' | 'polyType' | 'nTasks' | 'nSkills' | 'nSplits'> = {
  r: 8,
  initWeights: true,
  polyType: 'poly',
  nTasks: 1,
  nSkills: 4,
  nSplits: 1,
};

/** PEFT adapter_config.json field <-> PolyConfig key (beyond the shared ones). */
export const POLY_FIELDS: readonly [string, keyof PolyConfig][] = [
  ['r', 'r'], ['init_weights', 'initWeights'], ['poly_type', 'polyType'], ['n_tasks', 'nTasks'], ['n_skills', 'nSkills'], ['n_splits', 'nSplits'],
];

const HINTS = { rank: 'r', tasks: 'nTasks', skills: 'nSkills', splits: 'nSplits', targets: 'targetModules', initPolyWeights: 'initWeights' };

const posInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v > 0;

export function resolvePoly(partial: Partial<PolyConfig> | PolyOptions): PolyConfig {
  const c = resolveWith<PolyConfig>('Poly config', 'POLY', partial as Record<string, unknown>, DEFAULT_POLY as Omit<PolyConfig, 'extra' | 'peftType'>, POLY_FIELDS, HINTS);
  const bad = (f: string, want: string, got: unknown) => configError('Poly config', f, want, got);
  if (!posInt(c.r)) bad('r', 'a positive integer', c.r);
  if (typeof c.initWeights !== 'boolean') bad('init_weights', 'true or false', c.initWeights);
  if (c.polyType !== 'poly') bad('poly_type', '"poly" (the only router PEFT has)', c.polyType);
  if (!posInt(c.nTasks)) bad('n_tasks', 'a positive integer', c.nTasks);
  if (!posInt(c.nSkills)) bad('n_skills', 'a positive integer', c.nSkills);
  if (!posInt(c.nSplits)) bad('n_splits', 'a positive integer (> 1 for Multi-Head Routing)', c.nSplits);
  return c;
}

export function polyFromJson(raw: Record<string, unknown>, warn: (m: string) => void): PolyConfig {
  return resolvePoly(peftJsonToOptions('Poly', 'POLY', raw, POLY_FIELDS, warn) as PolyOptions);
}

/** PEFT's PolyConfig has no layers_to_transform / layers_pattern / trainable_token_indices: written only when set. */
export function polyToJson(c: PolyConfig): Record<string, unknown> {
  const out = optionsToPeftJson(c, POLY_FIELDS);
  for (const k of ['layers_to_transform', 'layers_pattern', 'trainable_token_indices']) if (out[k] === null) delete out[k];
  return out;
}
