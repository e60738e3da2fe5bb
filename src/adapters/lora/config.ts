// LoRA configuration with PEFT's field names and defaults (peft/tuners/lora/config.py), plus the
// adapterkit variants PEFT lacks (DyLoRA; CorDA here computes its covariance itself).
import type { AdapterConfigBase } from '../types.js';
import { normalizeKeys } from '../config-keys.js';

/**
 * PEFT's init_lora_weights values. Creation implements true, false, gaussian, pissa, pissa_niter_N,
 * olora and corda; every value loads (on load the saved weights are the adapter, the init is moot).
 */
export type LoraInit = boolean | 'gaussian' | 'pissa' | `pissa_niter_${number}` | 'olora' | 'corda' | 'eva' | 'loftq' | 'orthogonal' | 'lora_ga' | 'mica';
export type LoraBias = 'none' | 'all' | 'lora_only';

export interface LoraConfig extends AdapterConfigBase {
  peftType: 'LORA';
  r: number;
  loraAlpha: number;
  loraDropout: number;
  bias: LoraBias;
  /** True for GPT-2's Conv1D, whose weight is stored [in, out]; set automatically when wrapping one (as PEFT does). */
  fanInFanOut: boolean;
  useRslora: boolean;
  useDora: boolean;
  /** true: kaiming-uniform A, zero B; false: random B too (B ≠ 0, for tests); gaussian; pissa; pissa_niter_N; olora; corda. */
  initLoraWeights: LoraInit;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  /** lora_B has a bias (trained, saved as lora_B.bias, merged into the base bias times the scaling). */
  loraBias: boolean;
  /** PEFT's layer_replication: [start, end) ranges of base layers stacked into a deeper model (shared weights). */
  layerReplication: [number, number][] | null;
  /** CorDA: "ipm" (instruction-previewed: the adapter takes the principal components) or "kpm" (knowledge-preserved: the smallest). */
  cordaMethod: 'ipm' | 'kpm';
  /** DyLoRA: sample a rank b in [1, r] per training step and train the nested truncation. */
  dylora: boolean;
}

/** What PeftModel.create / addAdapter take for LoRA: LoraConfig's keys, all optional. */
export type LoraOptions = Partial<Omit<LoraConfig, 'extra' | 'peftType'>> & { peftType?: 'LORA'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    LORA: LoraOptions;
  }
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
  loraBias: false,
  layerReplication: null,
  cordaMethod: 'ipm',
  dylora: false,
  targetModules: null,
  layersToTransform: null,
  layersPattern: null,
  excludeModules: null,
  modulesToSave: null,
  trainableTokenIndices: null,
  baseModelNameOrPath: null,
  taskType: null,
};

function bad(field: string, want: string, got: unknown): never {
  throw new Error(`LoRA config: ${field} must be ${want}, got ${JSON.stringify(got)}`);
}

const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

/** PEFT adapter_config.json field <-> LoraConfig key. */
const FIELDS: [string, keyof LoraConfig][] = [
  ['peft_type', 'peftType'], ['r', 'r'], ['lora_alpha', 'loraAlpha'], ['lora_dropout', 'loraDropout'], ['bias', 'bias'],
  ['fan_in_fan_out', 'fanInFanOut'], ['use_rslora', 'useRslora'], ['use_dora', 'useDora'], ['init_lora_weights', 'initLoraWeights'],
  ['rank_pattern', 'rankPattern'], ['alpha_pattern', 'alphaPattern'], ['target_modules', 'targetModules'],
  ['exclude_modules', 'excludeModules'], ['layers_to_transform', 'layersToTransform'], ['layers_pattern', 'layersPattern'],
  ['modules_to_save', 'modulesToSave'], ['lora_bias', 'loraBias'], ['trainable_token_indices', 'trainableTokenIndices'], ['layer_replication', 'layerReplication'],
  ['base_model_name_or_path', 'baseModelNameOrPath'], ['task_type', 'taskType'],
];
const ALIASES: Record<string, string> = Object.fromEntries(FIELDS.filter(([j, k]) => j !== k).map(([j, k]) => [j, k]));
ALIASES.corda_method = 'cordaMethod';
ALIASES.loftq_config = 'loftqConfig';
const KNOWN = [...FIELDS.map(([, k]) => k as string), 'cordaMethod', 'dylora', 'extra', 'loftqConfig'];
/** Names from CLIs and papers, only suggested: rank -> r, alpha -> loraAlpha, targets -> targetModules. */
const HINTS: Record<string, string> = { rank: 'r', alpha: 'loraAlpha', dropout: 'loraDropout', targets: 'targetModules', target: 'targetModules', rslora: 'useRslora', dora: 'useDora' };

const INITS = [true, false, 'gaussian', 'pissa', 'olora', 'corda', 'eva', 'loftq', 'orthogonal', 'lora_ga', 'mica'];
const isInit = (v: unknown): v is LoraInit => INITS.includes(v as never) || (typeof v === 'string' && /^pissa_niter_\d+$/.test(v));
/** Inits that need data or quantisation adapterkit does not have: accepted on load, refused on creation. */
export const LOAD_ONLY_INITS = ['eva', 'orthogonal', 'lora_ga', 'mica'];

const isNames = (v: unknown): v is string[] | string => typeof v === 'string' || (Array.isArray(v) && v.every((t) => typeof t === 'string'));

/**
 * Defaults filled in; the first bad value is named. Keys are LoraConfig's camelCase names; PEFT's
 * snake_case names are accepted as aliases; any other key is an error with a "did you mean".
 */
export function resolveLora(partial: LoraOptions | Partial<LoraConfig>): LoraConfig {
  const given = normalizeKeys('LoRA config', { ...partial } as Record<string, unknown>, KNOWN, ALIASES, HINTS);
  const c: LoraConfig = { ...DEFAULT_LORA, extra: {}, ...given } as LoraConfig;
  // LoftQ's settings (loftq_bits, loftq_iter) are an init-only field: kept in extra, as on load.
  if ('loftqConfig' in given) {
    c.extra = { ...c.extra, loftq_config: given.loftqConfig };
    delete (c as unknown as Record<string, unknown>).loftqConfig;
  }
  c.peftType = 'LORA';
  if (!isPosInt(c.r)) bad('r', 'a positive integer', c.r);
  if (typeof c.loraAlpha !== 'number' || !Number.isFinite(c.loraAlpha) || c.loraAlpha <= 0) bad('lora_alpha', 'a positive number', c.loraAlpha);
  if (typeof c.loraDropout !== 'number' || c.loraDropout < 0 || c.loraDropout >= 1) bad('lora_dropout', 'in [0, 1)', c.loraDropout);
  if (!['none', 'all', 'lora_only'].includes(c.bias)) bad('bias', '"none", "all" or "lora_only"', c.bias);
  if (!isInit(c.initLoraWeights)) bad('init_lora_weights', `one of ${INITS.map((v) => JSON.stringify(v)).join(', ')} or "pissa_niter_<n>"`, c.initLoraWeights);
  if (!['ipm', 'kpm'].includes(c.cordaMethod)) bad('corda_method', '"ipm" or "kpm"', c.cordaMethod);
  for (const [k, v] of Object.entries(c.rankPattern ?? {})) if (!isPosInt(v)) bad(`rank_pattern["${k}"]`, 'a positive integer', v);
  for (const [k, v] of Object.entries(c.alphaPattern ?? {})) if (typeof v !== 'number' || !(v > 0)) bad(`alpha_pattern["${k}"]`, 'a positive number', v);
  if (c.targetModules !== null && !isNames(c.targetModules)) bad('target_modules', 'a list of names, a regex string or "all-linear"', c.targetModules);
  if (c.excludeModules !== null && !isNames(c.excludeModules)) bad('exclude_modules', 'a list of names or a regex string', c.excludeModules);
  if (c.modulesToSave !== null && !(Array.isArray(c.modulesToSave) && c.modulesToSave.every((t) => typeof t === 'string'))) bad('modules_to_save', 'a list of module names', c.modulesToSave);
  const isIdx = (i: unknown) => Number.isInteger(i) && (i as number) >= 0;
  if (c.layersToTransform !== null && !(isIdx(c.layersToTransform) || (Array.isArray(c.layersToTransform) && c.layersToTransform.every(isIdx)))) {
    bad('layers_to_transform', 'a layer index or a list of layer indices', c.layersToTransform);
  }
  const isIds = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every(isIdx);
  const tti = c.trainableTokenIndices;
  if (tti !== null && !(isIds(tti) || (typeof tti === 'object' && !Array.isArray(tti) && Object.keys(tti).length > 0 && Object.values(tti).every(isIds)))) {
    bad('trainable_token_indices', 'a list of token ids or {module name: [token ids]}', tti);
  }
  const lr = c.layerReplication;
  if (lr !== null && !(Array.isArray(lr) && lr.length > 0 && lr.every((r) => Array.isArray(r) && r.length === 2 && r.every(isIdx) && r[0]! < r[1]!))) {
    bad('layer_replication', 'a list of [start, end) layer ranges', lr);
  }
  if (c.layersPattern !== null && !isNames(c.layersPattern)) bad('layers_pattern', 'a name or a list of names', c.layersPattern);
  // PEFT's LoraConfig.__post_init__ rules: layer selection works on list-form targets only.
  if (typeof c.targetModules === 'string' && c.layersToTransform !== null) bad('layers_to_transform', 'null when target_modules is a string (a regex must select the layers itself)', c.layersToTransform);
  if (typeof c.targetModules === 'string' && c.layersPattern !== null) bad('layers_pattern', 'null when target_modules is a string', c.layersPattern);
  const emptyPattern = c.layersPattern === null || c.layersPattern.length === 0;
  if (!emptyPattern && c.layersToTransform === null) bad('layers_to_transform', 'set when layers_pattern is set', c.layersToTransform);
  if (typeof c.loraBias !== 'boolean') bad('lora_bias', 'true or false', c.loraBias);
  if (c.loraBias && c.initLoraWeights !== true && c.initLoraWeights !== false) bad('lora_bias', `false with init_lora_weights ${JSON.stringify(c.initLoraWeights)} (PEFT allows it only with true or false)`, c.loraBias);
  if (c.loraBias && c.useDora) bad('lora_bias', 'false with use_dora (as in PEFT)', c.loraBias);
  if (c.useDora && c.dylora) bad('use_dora', 'false when DyLoRA is on (the two do not combine)', c.useDora);
  return c;
}

/**
 * PEFT LoraConfig fields beyond FIELDS, by what they do here. Every field PEFT writes is in one list;
 * the README's table follows these lists.
 */
/** Bookkeeping: kept for the round trip, no effect on the math. */
const BOOKKEEPING = ['peft_version', 'revision', 'inference_mode', 'auto_mapping', 'runtime_config', 'megatron_core'];
/** Initialisation settings: the saved weights already hold their result, so loading ignores them. */
const INIT_ONLY = ['loftq_config', 'eva_config', 'corda_config', 'lora_ga_config'];
/**
 * Fields that change the forward and that adapterkit does not implement: refused when set (not
 * null/false/empty), with the field named, instead of loading a silently different model.
 */
const REFUSED: Record<string, string> = {
  alora_invocation_tokens: 'activated LoRA (aLoRA) applies the adapter only after the invocation tokens',
  arrow_config: 'Arrow routing mixes several LoRA experts per token',
  target_parameters: 'LoRA on raw nn.Parameters (MoE experts) is not implemented',
  use_qalora: 'QA-LoRA pools the input in groups before lora_A',
  qalora_group_size: null as unknown as string,
  velora_config: 'VeLoRA changes how activations are kept for the backward pass',
  monteclora_config: 'MonteCLoRA samples the adapter weights',
  use_bdlora: 'block-diagonal LoRA changes the shapes of lora_A and lora_B',
  kasa_config: 'KaSA adds singular-value adaptation to the base weight',
  megatron_config: 'Megatron parallel layers do not exist here',
  ensure_weight_tying: 'tying adapters of a tied embedding and LM head is not implemented',
};
delete REFUSED.qalora_group_size;  // only matters with use_qalora, which is refused
/** Every field of PEFT's LoraConfig that adapterkit knows (the README lists them). */
export const PEFT_LORA_FIELDS = {
  supported: [...FIELDS.map(([j]) => j)],
  bookkeeping: BOOKKEEPING,
  initOnly: INIT_ONLY,
  refusedWhenSet: Object.keys(REFUSED),
};

/** adapterkit-only fields live under one key that PEFT ignores (newer PEFT warns, never fails). */
export const EXTRA_KEY = 'adapterkit';

const isUnset = (v: unknown) => v === null || v === undefined || v === false || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0);

export function loraFromJson(raw: Record<string, unknown>, warn: (m: string) => void): LoraConfig {
  const partial: Record<string, unknown> = {};
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    const f = FIELDS.find(([j]) => j === k);
    if (f) {
      if (v !== null || ['layerReplication', 'trainableTokenIndices', 'targetModules', 'excludeModules', 'layersToTransform', 'layersPattern', 'modulesToSave', 'baseModelNameOrPath', 'taskType'].includes(f[1])) partial[f[1]] = v;
    } else if (k === EXTRA_KEY && v && typeof v === 'object') {
      const x = v as Record<string, unknown>;
      if (x.dylora !== undefined) partial.dylora = x.dylora;
      if (x.corda_method !== undefined) partial.cordaMethod = x.corda_method;
    } else if (k in REFUSED) {
      if (!isUnset(v)) throw new Error(`adapter_config.json: "${k}" = ${JSON.stringify(v)} is not supported by adapterkit (${REFUSED[k]}); loading it would give a different model`);
      extra[k] = v;
    } else {
      extra[k] = v;
      if (BOOKKEEPING.includes(k) || INIT_ONLY.includes(k) || k === 'qalora_group_size' || isUnset(v)) continue;
      const value = JSON.stringify(v);
      warn(`adapter_config.json: field "${k}" (${value && value.length > 40 ? value.slice(0, 40) + '…' : value}) is not known to this version and is ignored`);
    }
  }
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
