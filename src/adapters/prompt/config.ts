// Configs of PEFT's prompt-learning methods (peft/tuners/{prompt_tuning,p_tuning,prefix_tuning}/config.py
// and PromptLearningConfig in peft/config.py): field names, defaults, the checks PEFT makes, the
// derived sizes PEFT fills in from the model (utils/other.py _prepare_prompt_learning_config), and
// the JSON written with exactly PEFT's key set.
import type { AdapterConfigBase } from '../types.js';
import type { PretrainedModel } from '../../models/types.js';
import { resolveWith, peftJsonToOptions, configError } from '../config-base.js';

export type PromptKind = 'PROMPT_TUNING' | 'P_TUNING' | 'PREFIX_TUNING';

/** PromptLearningConfig's fields (the sizes are null until filled in from the model). */
export interface PromptLearningConfig extends AdapterConfigBase {
  peftType: PromptKind;
  /** Virtual tokens P. PEFT has no default (None, required); adapterkit uses 20. */
  numVirtualTokens: number;
  /** Hidden size C (prefix tuning: Hkv * D, PEFT's GQA rule). */
  tokenDim: number | null;
  /** 1 for decoder-only and encoder models (2 is seq2seq, which adapterkit has no model for). */
  numTransformerSubmodules: number | null;
  /** Attention heads (prefix tuning: key/value heads). */
  numAttentionHeads: number | null;
  numLayers: number | null;
  /**
   * PEFT's inference_mode: the encoder is only the saved embedding (no MLP / projection), as an
   * adapter loaded from a file. Set when loading; false when creating.
   */
  inferenceMode: boolean;
}

export type PromptTuningInit = 'RANDOM' | 'TEXT' | 'SAMPLE_VOCAB';

export interface PromptTuningConfig extends PromptLearningConfig {
  peftType: 'PROMPT_TUNING';
  promptTuningInit: PromptTuningInit;
  promptTuningInitText: string | null;
  tokenizerNameOrPath: string | null;
  tokenizerKwargs: Record<string, unknown> | null;
  /**
   * adapterkit only (not saved): the token ids of promptTuningInitText, as the model's tokenizer
   * gives them with special tokens (PEFT calls tokenizer(text)["input_ids"]). Required for TEXT.
   */
  promptTuningInitIds: number[] | null;
}

export interface PTuningConfig extends PromptLearningConfig {
  peftType: 'P_TUNING';
  encoderReparameterizationType: 'MLP' | 'LSTM';
  /** MLP width H (null: tokenDim). */
  encoderHiddenSize: number | null;
  encoderNumLayers: number;
  encoderDropout: number;
}

export interface PrefixTuningConfig extends PromptLearningConfig {
  peftType: 'PREFIX_TUNING';
  /** "zero": the last projection layer (or the embedding) starts at zero; null: random. */
  initWeights: 'zero' | null;
  /** Projection width (null: tokenDim). */
  encoderHiddenSize: number | null;
  prefixProjection: boolean;
}

export type AnyPromptConfig = PromptTuningConfig | PTuningConfig | PrefixTuningConfig;

type Opts<C> = Partial<Omit<C, 'extra' | 'peftType'>> & { extra?: Record<string, unknown> };
export type PromptTuningOptions = Opts<PromptTuningConfig> & { peftType: 'PROMPT_TUNING' };
export type PTuningOptions = Opts<PTuningConfig> & { peftType: 'P_TUNING' };
export type PrefixTuningOptions = Opts<PrefixTuningConfig> & { peftType: 'PREFIX_TUNING' };

declare module '../types.js' {
  interface AdapterOptionsByType {
    PROMPT_TUNING: PromptTuningOptions;
    P_TUNING: PTuningOptions;
    PREFIX_TUNING: PrefixTuningOptions;
  }
}

const COMMON_DEFAULTS = {
  numVirtualTokens: 20,
  tokenDim: null,
  numTransformerSubmodules: null,
  numAttentionHeads: null,
  numLayers: null,
  inferenceMode: false,
};
const COMMON_FIELDS: [string, string][] = [
  ['num_virtual_tokens', 'numVirtualTokens'], ['token_dim', 'tokenDim'], ['num_transformer_submodules', 'numTransformerSubmodules'],
  ['num_attention_heads', 'numAttentionHeads'], ['num_layers', 'numLayers'], ['inference_mode', 'inferenceMode'],
];

interface Spec<C extends PromptLearningConfig> {
  what: string;
  defaults: Omit<C, 'extra' | 'peftType' | keyof AdapterConfigBase> ;
  fields: [string, string][];
  /** adapterkit-only option keys (not in the JSON). */
  local: string[];
  check(c: C): void;
}

const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
const optPosInt = (what: string, field: string, v: unknown) => { if (v !== null && !isPosInt(v)) configError(what, field, 'a positive integer or null', v); };

function checkCommon(what: string, c: PromptLearningConfig): void {
  if (!isPosInt(c.numVirtualTokens)) configError(what, 'num_virtual_tokens', 'a positive integer', c.numVirtualTokens);
  optPosInt(what, 'token_dim', c.tokenDim);
  optPosInt(what, 'num_attention_heads', c.numAttentionHeads);
  optPosInt(what, 'num_layers', c.numLayers);
  if (c.numTransformerSubmodules !== null && c.numTransformerSubmodules !== 1) {
    configError(what, 'num_transformer_submodules', '1 or null (2 is for encoder-decoder models, which adapterkit does not have)', c.numTransformerSubmodules);
  }
  if (typeof c.inferenceMode !== 'boolean') configError(what, 'inference_mode', 'true or false', c.inferenceMode);
  // PromptLearningConfig has no target selection: it would be silently ignored.
  if (c.targetModules !== null) configError(what, 'target_modules', 'null (prompt learning adds virtual tokens, it wraps no module)', c.targetModules);
  if (c.excludeModules !== null) configError(what, 'exclude_modules', 'null (prompt learning wraps no module)', c.excludeModules);
  if (c.layersToTransform !== null) configError(what, 'layers_to_transform', 'null (prompt learning wraps no module)', c.layersToTransform);
  if (c.trainableTokenIndices !== null) configError(what, 'trainable_token_indices', 'null (PEFT has no trainable tokens with prompt learning)', c.trainableTokenIndices);
}

const SPECS: { [K in PromptKind]: Spec<Extract<AnyPromptConfig, { peftType: K }>> } = {
  PROMPT_TUNING: {
    what: 'prompt tuning config',
    defaults: { ...COMMON_DEFAULTS, promptTuningInit: 'RANDOM', promptTuningInitText: null, tokenizerNameOrPath: null, tokenizerKwargs: null, promptTuningInitIds: null },
    fields: [...COMMON_FIELDS, ['prompt_tuning_init', 'promptTuningInit'], ['prompt_tuning_init_text', 'promptTuningInitText'],
      ['tokenizer_name_or_path', 'tokenizerNameOrPath'], ['tokenizer_kwargs', 'tokenizerKwargs']],
    local: ['promptTuningInitIds'],
    check(c) {
      const w = this.what;
      if (!['RANDOM', 'TEXT', 'SAMPLE_VOCAB'].includes(c.promptTuningInit)) configError(w, 'prompt_tuning_init', '"RANDOM", "TEXT" or "SAMPLE_VOCAB"', c.promptTuningInit);
      if (c.promptTuningInitText !== null && typeof c.promptTuningInitText !== 'string') configError(w, 'prompt_tuning_init_text', 'a string or null', c.promptTuningInitText);
      if (c.tokenizerKwargs && Object.keys(c.tokenizerKwargs).length && c.promptTuningInit !== 'TEXT') configError(w, 'tokenizer_kwargs', 'null unless prompt_tuning_init is "TEXT" (as PEFT)', c.tokenizerKwargs);
      const ids = c.promptTuningInitIds;
      if (ids !== null && !(Array.isArray(ids) && ids.length > 0 && ids.every((i) => Number.isInteger(i) && i >= 0))) configError(w, 'promptTuningInitIds', 'a non-empty list of token ids', ids);
      // PEFT requires the text (and a tokenizer) for TEXT; adapterkit takes the tokenizer's ids from
      // the caller. A loaded adapter (inference mode) is its saved weights: no init needed.
      if (c.promptTuningInit === 'TEXT' && !c.inferenceMode) {
        if (c.promptTuningInitText === null) configError(w, 'prompt_tuning_init_text', 'set when prompt_tuning_init is "TEXT" (as PEFT)', c.promptTuningInitText);
      }
    },
  },
  P_TUNING: {
    what: 'P-tuning config',
    defaults: { ...COMMON_DEFAULTS, encoderReparameterizationType: 'MLP', encoderHiddenSize: null, encoderNumLayers: 2, encoderDropout: 0 },
    fields: [...COMMON_FIELDS, ['encoder_reparameterization_type', 'encoderReparameterizationType'], ['encoder_hidden_size', 'encoderHiddenSize'],
      ['encoder_num_layers', 'encoderNumLayers'], ['encoder_dropout', 'encoderDropout']],
    local: [],
    check(c) {
      const w = this.what;
      if (!['MLP', 'LSTM'].includes(c.encoderReparameterizationType)) configError(w, 'encoder_reparameterization_type', '"MLP" or "LSTM"', c.encoderReparameterizationType);
      optPosInt(w, 'encoder_hidden_size', c.encoderHiddenSize);
      if (!isPosInt(c.encoderNumLayers)) configError(w, 'encoder_num_layers', 'a positive integer', c.encoderNumLayers);
      if (typeof c.encoderDropout !== 'number' || !(c.encoderDropout >= 0 && c.encoderDropout < 1)) configError(w, 'encoder_dropout', 'in [0, 1)', c.encoderDropout);
    },
  },
  PREFIX_TUNING: {
    what: 'prefix tuning config',
    defaults: { ...COMMON_DEFAULTS, initWeights: null, encoderHiddenSize: null, prefixProjection: false },
    fields: [...COMMON_FIELDS, ['init_weights', 'initWeights'], ['encoder_hidden_size', 'encoderHiddenSize'], ['prefix_projection', 'prefixProjection']],
    local: [],
    check(c) {
      const w = this.what;
      if (c.initWeights !== null && c.initWeights !== 'zero') configError(w, 'init_weights', '"zero" or null', c.initWeights);
      optPosInt(w, 'encoder_hidden_size', c.encoderHiddenSize);
      if (typeof c.prefixProjection !== 'boolean') configError(w, 'prefix_projection', 'true or false', c.prefixProjection);
    },
  },
};

/** Defaults filled in and every value checked (the first bad one named). */
export function resolvePrompt<K extends PromptKind>(kind: K, partial: Record<string, unknown>): Extract<AnyPromptConfig, { peftType: K }> {
  const spec = SPECS[kind] as unknown as Spec<PromptLearningConfig>;
  const local = spec.local.map((k) => [k, k] as [string, string]);
  const c = resolveWith<PromptLearningConfig>(spec.what, kind, partial, spec.defaults as never, [...spec.fields, ...local]);
  checkCommon(spec.what, c);
  spec.check(c);
  return c as Extract<AnyPromptConfig, { peftType: K }>;
}

export function promptFromJson<K extends PromptKind>(kind: K, raw: Record<string, unknown>, warn: (m: string) => void): Extract<AnyPromptConfig, { peftType: K }> {
  const spec = SPECS[kind] as unknown as Spec<PromptLearningConfig>;
  const opts = peftJsonToOptions(spec.what, kind, raw, spec.fields, warn);
  // peftJsonToOptions drops nulls of method fields, so a null encoder_hidden_size stays the default (null).
  return resolvePrompt(kind, opts);
}

/** PEFT's JSON: exactly PromptLearningConfig's and the method's fields (no target_modules etc.). */
export function promptToJson(c: AnyPromptConfig, model: PretrainedModel): Record<string, unknown> {
  const spec = SPECS[c.peftType] as unknown as Spec<PromptLearningConfig>;
  const out: Record<string, unknown> = { revision: null, peft_version: null, auto_mapping: null, ...c.extra };
  for (const k of ['target_modules', 'exclude_modules', 'layers_to_transform', 'layers_pattern', 'trainable_token_indices']) delete out[k];
  out.peft_type = c.peftType;
  // PEFT runs prompt learning only through a task class (PeftModelForCausalLM, …): a file without
  // task_type would load in PEFT as a plain PeftModel that adds no virtual tokens. A causal LM's
  // task is written when unset (it adds no modules_to_save); other tasks are the caller's to name.
  out.task_type = c.taskType ?? (model.task === 'causal-lm' ? 'CAUSAL_LM' : null);
  out.base_model_name_or_path = c.baseModelNameOrPath ?? (model.config._name_or_path as string | undefined) ?? null;
  out.modules_to_save = c.modulesToSave;
  for (const [j, k] of spec.fields) out[j] = (c as unknown as Record<string, unknown>)[k] ?? null;
  out.inference_mode = true;  // as PEFT's save_pretrained
  if (c.peftType === 'PROMPT_TUNING' && c.promptTuningInit === 'TEXT' && out.tokenizer_name_or_path === null) {
    // PEFT refuses a TEXT config without a tokenizer when it loads the file: name the base model's.
    out.tokenizer_name_or_path = out.base_model_name_or_path;
  }
  return out;
}

/** The sizes of the model PEFT's _prepare_prompt_learning_config reads from config.json. */
export interface ModelDims {
  numLayers: number;
  tokenDim: number;
  numAttentionHeads: number;
}

function pick(cfg: Record<string, unknown>, keys: string[]): number | null {
  for (const k of keys) if (typeof cfg[k] === 'number') return cfg[k] as number;
  return null;
}

/** PEFT's derived values for this model (prefix tuning with GQA: Hkv heads of D, token_dim = Hkv * D). */
export function modelDims(kind: PromptKind, model: PretrainedModel, tokenDim: number | null, heads: number | null): ModelDims {
  const raw = model.config as Record<string, unknown>;
  const cfg = (raw.text_config && typeof raw.text_config === 'object' ? raw.text_config : raw) as Record<string, unknown>;
  const need = (v: number | null, field: string) => {
    if (v === null) throw new Error(`${kind}: cannot read ${field} from this ${model.modelType} model's config.json; set ${field} in the adapter config`);
    return v;
  };
  const numLayers = pick(cfg, ['num_hidden_layers', 'num_layers', 'n_layer']) ?? model.numLayers;
  let dim = tokenDim ?? need(pick(cfg, ['hidden_size', 'n_embd', 'd_model']), 'token_dim');
  let h = heads ?? need(pick(cfg, ['num_attention_heads', 'n_head', 'num_heads', 'encoder_attention_heads']), 'num_attention_heads');
  if (kind === 'PREFIX_TUNING' && typeof cfg.num_key_value_heads === 'number') {
    const headDim = typeof cfg.head_dim === 'number' ? cfg.head_dim : Math.floor(dim / h);
    dim = headDim * cfg.num_key_value_heads;
    h = cfg.num_key_value_heads;
  }
  return { numLayers, tokenDim: dim, numAttentionHeads: h };
}

/**
 * Fills the derived sizes in place, as PEFT does before saving (so files match PEFT's), and checks
 * that sizes given in the config fit this model (a file made for another base model).
 */
export function fillDerived(c: AnyPromptConfig, model: PretrainedModel): void {
  const given = { numLayers: c.numLayers, tokenDim: c.tokenDim, numAttentionHeads: c.numAttentionHeads };
  // What this model needs: PEFT derives from config.json only the fields that are null; for a
  // config that arrives filled, the model's own values are computed from scratch to compare.
  const want = modelDims(c.peftType, model, null, null);
  const derived = modelDims(c.peftType, model, c.tokenDim, c.numAttentionHeads);
  c.numLayers = given.numLayers ?? derived.numLayers;
  c.tokenDim = derived.tokenDim;
  c.numAttentionHeads = derived.numAttentionHeads;
  c.numTransformerSubmodules ??= 1;
  if ('encoderHiddenSize' in c) c.encoderHiddenSize ??= c.tokenDim;
  const names: [keyof ModelDims, string][] = [['numLayers', 'num_layers'], ['tokenDim', 'token_dim'], ['numAttentionHeads', 'num_attention_heads']];
  for (const [k, j] of names) {
    // Prompt tuning needs only token_dim to fit (the heads/layers are recorded, not used).
    if (c.peftType !== 'PREFIX_TUNING' && k !== 'tokenDim') continue;
    if (c[k] !== want[k]) {
      throw new Error(`${c.peftType}: ${j} is ${c[k]} but this ${model.modelType} model needs ${want[k]} (was the adapter made for another base model?)`);
    }
  }
  if (c.peftType === 'PREFIX_TUNING' && c.tokenDim! % c.numAttentionHeads! !== 0) {
    throw new Error(`PREFIX_TUNING: token_dim ${c.tokenDim} is not divisible by num_attention_heads ${c.numAttentionHeads}`);
  }
}
