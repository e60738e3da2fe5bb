// LoRA configuration with PEFT's field names and defaults (peft/tuners/lora/config.py), plus the
// adapterkit variants PEFT lacks (DyLoRA; CorDA here computes its covariance itself).
import type { AdapterConfigBase } from '../types.js';

export type LoraInit = boolean | 'gaussian' | 'pissa' | 'corda';
export type LoraBias = 'none' | 'all' | 'lora_only';

export interface LoraConfig extends AdapterConfigBase {
  peftType: 'LORA';
  r: number;
  loraAlpha: number;
  loraDropout: number;
  bias: LoraBias;
  /** True for GPT-2's Conv1D, whose weight is stored [in, out]; set automatically when wrapping one. */
  fanInFanOut: boolean;
  useRslora: boolean;
  useDora: boolean;
  /** true: kaiming-uniform A, zero B; false: random B too (B ≠ 0, for tests); gaussian; pissa; corda. */
  initLoraWeights: LoraInit;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  /** CorDA: "ipm" (instruction-previewed: the adapter takes the principal components) or "kpm" (knowledge-preserved: the smallest). */
  cordaMethod: 'ipm' | 'kpm';
  /** DyLoRA: sample a rank b in [1, r] per training step and train the nested truncation. */
  dylora: boolean;
}

export const DEFAULT_LORA: Omit<LoraConfig, 'extra'> = {
  peftType: 'LORA',
  r: 8,
  loraAlpha: 8,
  loraDropout: 0,
  bias: 'none',
  fanInFanOut: false,
  useRslora: false,
  useDora: false,
  initLoraWeights: true,
  rankPattern: {},
  alphaPattern: {},
  cordaMethod: 'ipm',
  dylora: false,
  targetModules: null,
  layersToTransform: null,
  layersPattern: null,
  modulesToSave: null,
  baseModelNameOrPath: null,
  taskType: null,
};

function bad(field: string, want: string, got: unknown): never {
  throw new Error(`LoRA config: ${field} must be ${want}, got ${JSON.stringify(got)}`);
}

const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

/** Defaults filled in; the first bad value is named. */
export function resolveLora(partial: Partial<LoraConfig>): LoraConfig {
  const c: LoraConfig = { ...DEFAULT_LORA, extra: {}, ...partial } as LoraConfig;
  if (!isPosInt(c.r)) bad('r', 'a positive integer', c.r);
  if (typeof c.loraAlpha !== 'number' || !Number.isFinite(c.loraAlpha) || c.loraAlpha <= 0) bad('lora_alpha', 'a positive number', c.loraAlpha);
  if (typeof c.loraDropout !== 'number' || c.loraDropout < 0 || c.loraDropout >= 1) bad('lora_dropout', 'in [0, 1)', c.loraDropout);
  if (!['none', 'all', 'lora_only'].includes(c.bias)) bad('bias', '"none", "all" or "lora_only"', c.bias);
  if (![true, false, 'gaussian', 'pissa', 'corda'].includes(c.initLoraWeights)) bad('init_lora_weights', 'true, false, "gaussian", "pissa" or "corda"', c.initLoraWeights);
  if (!['ipm', 'kpm'].includes(c.cordaMethod)) bad('corda_method', '"ipm" or "kpm"', c.cordaMethod);
  for (const [k, v] of Object.entries(c.rankPattern)) if (!isPosInt(v)) bad(`rank_pattern["${k}"]`, 'a positive integer', v);
  for (const [k, v] of Object.entries(c.alphaPattern)) if (typeof v !== 'number' || !(v > 0)) bad(`alpha_pattern["${k}"]`, 'a positive number', v);
  if (c.targetModules !== null && typeof c.targetModules !== 'string' && !(Array.isArray(c.targetModules) && c.targetModules.every((t) => typeof t === 'string'))) {
    bad('target_modules', 'a list of names, a regex string or "all-linear"', c.targetModules);
  }
  if (c.layersToTransform !== null && !(Array.isArray(c.layersToTransform) && c.layersToTransform.every((i) => Number.isInteger(i) && i >= 0))) {
    bad('layers_to_transform', 'a list of layer indices', c.layersToTransform);
  }
  if (c.useDora && c.dylora) bad('use_dora', 'false when DyLoRA is on (the two do not combine)', c.useDora);
  return c;
}

/** PEFT adapter_config.json field <-> LoraConfig key. */
const FIELDS: [string, keyof LoraConfig][] = [
  ['peft_type', 'peftType'], ['r', 'r'], ['lora_alpha', 'loraAlpha'], ['lora_dropout', 'loraDropout'], ['bias', 'bias'],
  ['fan_in_fan_out', 'fanInFanOut'], ['use_rslora', 'useRslora'], ['use_dora', 'useDora'], ['init_lora_weights', 'initLoraWeights'],
  ['rank_pattern', 'rankPattern'], ['alpha_pattern', 'alphaPattern'], ['target_modules', 'targetModules'],
  ['layers_to_transform', 'layersToTransform'], ['layers_pattern', 'layersPattern'], ['modules_to_save', 'modulesToSave'],
  ['base_model_name_or_path', 'baseModelNameOrPath'], ['task_type', 'taskType'],
];

/** Fields of PEFT's LoraConfig that change nothing here (bookkeeping, or features off by default). */
const INERT = new Set(['revision', 'inference_mode', 'auto_mapping', 'megatron_config', 'megatron_core', 'loftq_config', 'layer_replication', 'runtime_config', 'exclude_modules', 'eva_config', 'corda_config', 'lora_bias', 'use_qalora', 'qalora_group_size', 'target_parameters', 'trainable_token_indices', 'alora_invocation_tokens', 'arrow_config', 'ensure_weight_tying']);

/** adapterkit-only fields live under one key that PEFT ignores (newer PEFT warns, never fails). */
export const EXTRA_KEY = 'adapterkit';

export function loraFromJson(raw: Record<string, unknown>, warn: (m: string) => void): LoraConfig {
  const partial: Record<string, unknown> = {};
  const extra: Record<string, unknown> = {};
  const known = new Set(FIELDS.map(([k]) => k));
  for (const [k, v] of Object.entries(raw)) {
    const f = FIELDS.find(([j]) => j === k);
    if (f) {
      if (v !== null || ['targetModules', 'layersToTransform', 'layersPattern', 'modulesToSave', 'baseModelNameOrPath', 'taskType'].includes(f[1])) partial[f[1]] = v;
    } else if (k === EXTRA_KEY && v && typeof v === 'object') {
      const x = v as Record<string, unknown>;
      if (x.dylora !== undefined) partial.dylora = x.dylora;
      if (x.corda_method !== undefined) partial.cordaMethod = x.corda_method;
    } else if (!known.has(k)) {
      extra[k] = v;
      const value = JSON.stringify(v);
      const harmless = v === null || v === false || (Array.isArray(v) && v.length === 0) || INERT.has(k);
      if (!harmless) warn(`adapter_config.json: field "${k}" (${value && value.length > 40 ? value.slice(0, 40) + '…' : value}) is not supported by this version and is ignored`);
    }
  }
  if (typeof raw.layers_pattern === 'object' && Array.isArray(raw.layers_pattern)) partial.layersPattern = (raw.layers_pattern as string[]).join('|');
  if (partial.peftType !== undefined && String(partial.peftType).toUpperCase() !== 'LORA') bad('peft_type', '"LORA"', partial.peftType);
  partial.peftType = 'LORA';
  return resolveLora({ ...(partial as Partial<LoraConfig>), extra });
}

export function loraToJson(c: LoraConfig): Record<string, unknown> {
  const out: Record<string, unknown> = { ...c.extra };
  for (const [k, f] of FIELDS) out[k] = c[f];
  out.inference_mode = true;
  if (c.dylora || c.initLoraWeights === 'corda') out[EXTRA_KEY] = { dylora: c.dylora, corda_method: c.cordaMethod };
  return out;
}
