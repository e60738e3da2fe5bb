// (IA)³ configuration with PEFT's field names and defaults (peft/tuners/ia3/config.py) and PEFT's
// default targets per model type (utils/constants.py TRANSFORMERS_MODELS_TO_IA3_*_MAPPING).
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export interface Ia3Config extends AdapterConfigBase {
  peftType: 'IA3';
  /**
   * Modules whose INPUT is scaled (a (1, in) vector; PEFT's is_feedforward); the other targets scale
   * their output. Names matched by plain suffix (no "." boundary, as PEFT) or a full-match regex;
   * null: the model type's default, written into the config when the adapter is added (as PEFT).
   */
  feedforwardModules: string[] | string | null;
  /** True for GPT-2's Conv1D ([in, out] weights); set from the wrapped layers, as PEFT does. */
  fanInFanOut: boolean;
  /** true: the vectors start at ones (the layer starts as the base); false: N(0, 1), as PEFT's torch.randn (tests). */
  initIa3Weights: boolean;
}

export type Ia3Options = Partial<Omit<Ia3Config, 'extra' | 'peftType'>> & { peftType: 'IA3'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    IA3: Ia3Options;
  }
}

export const DEFAULT_IA3: Pick<Ia3Config, 'feedforwardModules' | 'fanInFanOut' | 'initIa3Weights'> = {
  feedforwardModules: null,
  fanInFanOut: false,
  initIa3Weights: true,
};

/** PEFT adapter_config.json field <-> Ia3Config key (beyond the shared ones). */
export const IA3_FIELDS: readonly [string, keyof Ia3Config][] = [
  ['feedforward_modules', 'feedforwardModules'], ['fan_in_fan_out', 'fanInFanOut'], ['init_ia3_weights', 'initIa3Weights'],
];

/**
 * PEFT's TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING / _FEEDFORWARD_MODULES_MAPPING. PEFT has
 * no entry for xlm-roberta (it asks for target_modules); adapterkit uses RoBERTa's, whose module
 * names XLM-R shares. Qwen2 targets q_proj (not k_proj), exactly as PEFT's table.
 */
export const DEFAULT_IA3_TARGETS: Readonly<Record<string, { targets: string[]; feedforward: string[] }>> = {
  gpt2: { targets: ['c_attn', 'mlp.c_proj'], feedforward: ['mlp.c_proj'] },
  llama: { targets: ['k_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
  mistral: { targets: ['k_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
  qwen2: { targets: ['q_proj', 'v_proj', 'down_proj'], feedforward: ['down_proj'] },
  bert: { targets: ['key', 'value', 'output.dense'], feedforward: ['output.dense'] },
  roberta: { targets: ['key', 'value', 'output.dense'], feedforward: ['output.dense'] },
  'xlm-roberta': { targets: ['key', 'value', 'output.dense'], feedforward: ['output.dense'] },
};

const isNames = (v: unknown): v is string[] | string => typeof v === 'string' || (Array.isArray(v) && v.every((t) => typeof t === 'string'));

export function resolveIa3(partial: Partial<Ia3Config> | Ia3Options): Ia3Config {
  const c = resolveWith<Ia3Config>('IA3 config', 'IA3', partial as Record<string, unknown>, DEFAULT_IA3 as Omit<Ia3Config, 'extra' | 'peftType'>, IA3_FIELDS, { targets: 'targetModules', feedforward: 'feedforwardModules' });
  if (c.feedforwardModules !== null && !isNames(c.feedforwardModules)) configError('IA3 config', 'feedforward_modules', 'a list of module names or a regex string', c.feedforwardModules);
  if (typeof c.fanInFanOut !== 'boolean') configError('IA3 config', 'fan_in_fan_out', 'true or false', c.fanInFanOut);
  if (typeof c.initIa3Weights !== 'boolean') configError('IA3 config', 'init_ia3_weights', 'true or false', c.initIa3Weights);
  // PEFT's IA3Config.__post_init__: checked only when both are lists (sets in PEFT).
  if (Array.isArray(c.feedforwardModules) && Array.isArray(c.targetModules)) {
    const missing = c.feedforwardModules.filter((f) => !(c.targetModules as string[]).includes(f));
    if (missing.length) configError('IA3 config', 'feedforward_modules', `a subset of target_modules ${JSON.stringify(c.targetModules)} (as PEFT requires; not in it: ${missing.join(', ')})`, c.feedforwardModules);
  }
  return c;
}

/** PEFT's _check_target_module_feedforward: a regex must match the whole path; a list entry is a plain suffix. */
export function isFeedforward(path: string, ff: string[] | string | null): boolean {
  if (ff === null) return false;
  if (typeof ff === 'string') return new RegExp(`^(?:${ff})$`).test(path);
  return ff.some((f) => path.endsWith(f));
}

export function ia3FromJson(raw: Record<string, unknown>, warn: (m: string) => void): Ia3Config {
  return resolveIa3(peftJsonToOptions('IA3', 'IA3', raw, IA3_FIELDS, warn) as Ia3Options);
}

export function ia3ToJson(c: Ia3Config): Record<string, unknown> {
  return optionsToPeftJson(c, IA3_FIELDS);
}
