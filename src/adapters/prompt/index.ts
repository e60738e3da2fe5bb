// PEFT's prompt-learning methods (prompt tuning, P-tuning, prefix tuning): three registerAdapter calls
// sharing one part (`prompt_encoder`) and one file format (PEFT's bare `prompt_embeddings` key).
import { registerAdapter } from '../registry.js';
import { isTunerLayer, type AdapterCapabilities, type AdapterFileFormat, type AdapterMethod, type InjectArgs } from '../types.js';
import { Embedding } from '../../nn/layers.js';
import { randint, noGrad, type Tensor } from '../../tensor/index.js';
import type { Module } from '../../nn/module.js';
import type { PretrainedModel } from '../../models/types.js';
import {
  resolvePrompt, promptFromJson, promptToJson, fillDerived,
  type AnyPromptConfig, type PromptKind, type PromptTuningConfig,
} from './config.js';
import { PromptEmbedding, PTuningEncoder, PrefixEncoder, embeddingRows, seedFor, type PromptEncoderBase } from './encoders.js';
import { PromptEncoderPart, PART_PATH, STATE_KEY } from './part.js';

const CAPABILITIES: AdapterCapabilities = { mergeable: false, mixedBatch: false, kvCache: true, composable: false };

/**
 * PEFT's files for prompt learning: the part's tensor is the bare key `prompt_embeddings`; other
 * tensors (modules_to_save heads) keep PEFT's `base_model.` prefix — for prompt learning PEFT's
 * base_model is the transformers model itself (no tuner wrapper), so a head is `base_model.score.weight`.
 */
const PROMPT_PREFIX = 'base_model.';
export const PROMPT_FORMAT: AdapterFileFormat = {
  weightsFile: 'adapter_model.safetensors',
  fileKey: (path, key) => (path === PART_PATH ? key : `${PROMPT_PREFIX}${path ? `${path}.` : ''}${key}`),
  modelKey: (fileKey) => {
    if (fileKey === STATE_KEY) return `${PART_PATH}.${STATE_KEY}`;
    return fileKey.startsWith(PROMPT_PREFIX) ? fileKey.slice(PROMPT_PREFIX.length) : null;
  },
  alternatives: ['adapter_model.bin'],
};

/** The model's input word embedding weight (V, C): embed_tokens / wte / word_embeddings (unwrapped). */
export function wordEmbeddingWeight(model: PretrainedModel): Tensor {
  for (const [path, m] of model.namedModules()) {
    if (!/(^|\.)(embed_tokens|wte|word_embeddings)$/.test(path)) continue;
    const base: Module = isTunerLayer(m) ? m.baseLayer : ((m as { baseLayer?: Module }).baseLayer ?? m);
    if (base instanceof Embedding) return base.weight;
  }
  throw new Error(`this ${model.modelType} model has no input embedding named embed_tokens / wte / word_embeddings`);
}

/** PEFT's PromptEmbedding init: TEXT (ids repeated / truncated to P) or SAMPLE_VOCAB rows, else null (RANDOM). */
function promptInit(c: PromptTuningConfig, model: PretrainedModel, seed: number, key: string): Tensor | null {
  if (c.inferenceMode || c.promptTuningInit === 'RANDOM') return null;
  const w = wordEmbeddingWeight(model);  // (V, C)
  const total = c.numVirtualTokens * c.numTransformerSubmodules!;
  const vocab = w.shape[0]!;
  let ids: number[];
  if (c.promptTuningInit === 'SAMPLE_VOCAB') {
    const t = randint(0, vocab, [total], { seed: seedFor(seed, `${key}.sample_vocab`) });
    ids = noGrad(() => [...(t.toArray() as Iterable<number>)].map(Number));
    t.dispose();
  } else {
    const given = c.promptTuningInitIds;
    if (given === null || given.length === 0) {
      throw new Error(`prompt tuning: prompt_tuning_init "TEXT" needs the token ids of ${JSON.stringify(c.promptTuningInitText)}: pass promptTuningInitIds (the tokenizer's ids of the text, special tokens included; adapterkit train tokenizes the text itself)`);
    }
    const bad = given.find((i) => i >= vocab);
    if (bad !== undefined) throw new Error(`prompt tuning: promptTuningInitIds holds token id ${bad}, outside this model's vocabulary of ${vocab}`);
    // PEFT: truncate to P, or repeat the whole list ceil(P / n) times and truncate.
    ids = given.length >= total ? given.slice(0, total) : Array.from({ length: Math.ceil(total / given.length) }, () => given).flat().slice(0, total);
  }
  return embeddingRows(w, ids, w.device);
}

function buildEncoder(c: AnyPromptConfig, model: PretrainedModel, seed: number, key: string): PromptEncoderBase {
  switch (c.peftType) {
    case 'PROMPT_TUNING': {
      const init = promptInit(c, model, seed, key);
      try {
        return new PromptEmbedding(c, seed, key, init);
      } finally {
        init?.dispose();
      }
    }
    case 'P_TUNING': return new PTuningEncoder(c, seed, key);
    case 'PREFIX_TUNING': return new PrefixEncoder(c, seed, key);
  }
}

/** Adds the adapter's encoder to the model's `prompt_encoder` (created, and its hook installed, for the first one). */
function inject<C extends AnyPromptConfig>({ peft, name, config, seed }: InjectArgs<C>): void {
  const model = peft.model;
  fillDerived(config, model);
  let part = model.child(PART_PATH);
  if (part === null) {
    const p = new PromptEncoderPart(config.peftType, peft.ctx, model);
    p.install(model);
    model.addSubmodule(PART_PATH, p);
    part = p;
  } else if (!(part instanceof PromptEncoderPart)) {
    throw new Error(`${config.peftType}: the model already has a submodule "${PART_PATH}" that is not a prompt encoder`);
  } else if (part.peftType !== config.peftType) {
    throw new Error(`${config.peftType}: this model's ${PART_PATH} holds ${part.peftType} adapters (${part.adapterNames().join(', ')}); PEFT allows one prompt-learning method per model: delete them first`);
  }
  const enc = buildEncoder(config, model, seed, `${PART_PATH}.${name}`);
  enc.to(model.device);
  (part as PromptEncoderPart).addAdapter(name, config, enc);
}

function method<K extends PromptKind>(kind: K, names: string[], summary: string, textOptions?: Record<string, string>): AdapterMethod<Extract<AnyPromptConfig, { peftType: K }>> {
  type C = Extract<AnyPromptConfig, { peftType: K }>;
  return {
    peftType: kind,
    names,
    summary,
    ...(textOptions ? { textOptions } : {}),
    cliFlags: { 'virtual-tokens': 'numVirtualTokens' },
    capabilities: () => CAPABILITIES,
    format: PROMPT_FORMAT,
    fromJson: (raw, warn) => promptFromJson(kind, raw, warn),
    toJson: (config, ctx) => promptToJson(config, ctx.model),
    resolve: (partial) => resolvePrompt(kind, partial as Record<string, unknown>),
    // A saved adapter is its computed prompt_embeddings: PEFT loads it in inference mode (no MLP).
    forLoad: (config) => ({ ...config, inferenceMode: true }) as C,
    inject: (args) => inject(args),
    // The computed prompt_embeddings are temporaries: handed to the writer and freed after it.
    saveTransform: ({ name, parts }) => {
      const states = new Map<string, Map<string, Tensor>>();
      const temps: Tensor[] = [];
      for (const [path, part] of parts) {
        if (!(part instanceof PromptEncoderPart)) continue;
        const s = part.adapterState(name);
        states.set(path, s);
        temps.push(...s.values());
      }
      return { states, temps };
    },
  };
}

export const PROMPT_TUNING = method('PROMPT_TUNING', ['prompt', 'prompt-tuning', 'prompt_tuning'],
  'Prompt tuning (Lester et al. 2021): P trained virtual-token embeddings before the input',
  // A runner with a tokenizer turns prompt_tuning_init_text into ids (PEFT: tokenizer(text)["input_ids"]).
  { promptTuningInitText: 'promptTuningInitIds' });
export const P_TUNING = method('P_TUNING', ['p-tuning', 'p_tuning', 'ptuning'],
  'P-tuning (Liu et al. 2021): virtual-token embeddings produced by a trained MLP (prompt encoder)');
export const PREFIX_TUNING = method('PREFIX_TUNING', ['prefix', 'prefix-tuning', 'prefix_tuning'],
  'Prefix tuning (Li & Liang 2021): trained keys and values of P virtual positions in every attention layer');

registerAdapter(PROMPT_TUNING);
registerAdapter(P_TUNING);
registerAdapter(PREFIX_TUNING);

export { PromptEncoderPart, PART_PATH, STATE_KEY } from './part.js';
export { PromptEmbedding, PTuningEncoder, PrefixEncoder } from './encoders.js';
export type { PromptTuningConfig, PTuningConfig, PrefixTuningConfig, PromptTuningOptions, PTuningOptions, PrefixTuningOptions, PromptTuningInit } from './config.js';
