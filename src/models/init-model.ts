// `adapterkit init-model`: a random Hugging Face-format checkpoint (config.json, model.safetensors,
// tokenizer.json, tokenizer_config.json) of any supported family, for tests and for trying things.
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';
import { byteLevelBpe } from '../tokenizer/bytelevel.js';
import { createModel, saveModel } from './load.js';
import { ConfigError } from './config.js';
import { prepareOutputDir } from '../io/output-dir.js';
import { supportedModelTypes } from './registry.js';
import type { RawConfig } from './types.js';

export interface InitModelOptions {
  arch: string;
  out: string;
  layers?: number;
  hidden?: number;
  heads?: number;
  vocab?: number;
  seed?: number;
  maxPositions?: number;
  /** Write into an existing non-empty folder (its config and weights are replaced). */
  force?: boolean;
}

const CHATML = "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

interface ArchSpec {
  config: (o: Required<Omit<InitModelOptions, 'arch' | 'out' | 'force'>>) => RawConfig;
  first: string[];
  last: string[];
  bos: string;
  eos: string;
  pad: string;
  template?: { cls: string; sep: string };
  chat?: boolean;
}

const llamaLike = (type: string, arch: string, extra: RawConfig = {}) => (o: Required<Omit<InitModelOptions, 'arch' | 'out' | 'force'>>): RawConfig => ({
  architectures: [arch], model_type: type, vocab_size: o.vocab, hidden_size: o.hidden, intermediate_size: 4 * o.hidden,
  num_hidden_layers: o.layers, num_attention_heads: o.heads, num_key_value_heads: o.heads % 2 === 0 ? o.heads / 2 : o.heads,
  hidden_act: 'silu', max_position_embeddings: o.maxPositions, rms_norm_eps: 1e-6, rope_theta: 10000, initializer_range: 0.02,
  tie_word_embeddings: false, ...extra,
});
const bertLike = (type: string, arch: string, pad: number) => (o: Required<Omit<InitModelOptions, 'arch' | 'out' | 'force'>>): RawConfig => ({
  architectures: [arch], model_type: type, vocab_size: o.vocab, hidden_size: o.hidden, num_hidden_layers: o.layers,
  num_attention_heads: o.heads, intermediate_size: 4 * o.hidden, hidden_act: 'gelu', hidden_dropout_prob: 0.1,
  attention_probs_dropout_prob: 0.1, max_position_embeddings: o.maxPositions + (type === 'bert' ? 0 : pad + 1),
  type_vocab_size: type === 'bert' ? 2 : 1, layer_norm_eps: 1e-12, pad_token_id: pad, initializer_range: 0.02,
});

const SPECS: Record<string, ArchSpec> = {
  gpt2: {
    config: (o) => ({
      architectures: ['GPT2LMHeadModel'], model_type: 'gpt2', vocab_size: o.vocab, n_positions: o.maxPositions, n_embd: o.hidden,
      n_layer: o.layers, n_head: o.heads, activation_function: 'gelu_new', layer_norm_epsilon: 1e-5, initializer_range: 0.02,
      resid_pdrop: 0.1, embd_pdrop: 0.1, attn_pdrop: 0.1, tie_word_embeddings: true,
    }),
    first: [], last: ['<|endoftext|>'], bos: '<|endoftext|>', eos: '<|endoftext|>', pad: '<|endoftext|>',
  },
  llama: { config: llamaLike('llama', 'LlamaForCausalLM'), first: ['<unk>', '<s>', '</s>'], last: ['<|im_start|>', '<|im_end|>'], bos: '<s>', eos: '</s>', pad: '</s>', chat: true },
  mistral: { config: llamaLike('mistral', 'MistralForCausalLM', { sliding_window: 4096 }), first: ['<unk>', '<s>', '</s>'], last: ['<|im_start|>', '<|im_end|>'], bos: '<s>', eos: '</s>', pad: '</s>', chat: true },
  qwen2: {
    config: llamaLike('qwen2', 'Qwen2ForCausalLM', { tie_word_embeddings: true, use_sliding_window: false }),
    first: [], last: ['<|endoftext|>', '<|im_start|>', '<|im_end|>'], bos: '<|endoftext|>', eos: '<|im_end|>', pad: '<|endoftext|>', chat: true,
  },
  bert: { config: bertLike('bert', 'BertForMaskedLM', 0), first: ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'], last: [], bos: '[CLS]', eos: '[SEP]', pad: '[PAD]', template: { cls: '[CLS]', sep: '[SEP]' } },
  roberta: { config: bertLike('roberta', 'RobertaForMaskedLM', 1), first: ['<s>', '<pad>', '</s>', '<unk>', '<mask>'], last: [], bos: '<s>', eos: '</s>', pad: '<pad>', template: { cls: '<s>', sep: '</s>' } },
  'xlm-roberta': { config: bertLike('xlm-roberta', 'XLMRobertaForMaskedLM', 1), first: ['<s>', '<pad>', '</s>', '<unk>', '<mask>'], last: [], bos: '<s>', eos: '</s>', pad: '<pad>', template: { cls: '<s>', sep: '</s>' } },
};

/** Writes the checkpoint; returns its config. */
export function initModel(o: InitModelOptions): RawConfig {
  const spec = SPECS[o.arch];
  if (!spec) throw new ConfigError(`unknown --arch "${o.arch}" (supported: ${supportedModelTypes().join(', ')})`);
  const full = { layers: o.layers ?? 2, hidden: o.hidden ?? 64, heads: o.heads ?? 4, vocab: o.vocab ?? 512, seed: o.seed ?? 0, maxPositions: o.maxPositions ?? 256 };
  const { json, vocab } = byteLevelBpe({ specialsFirst: spec.first, specialsLast: spec.last, template: spec.template });
  if (full.vocab < vocab.size) throw new ConfigError(`--vocab ${full.vocab} is smaller than the tokenizer (${vocab.size} tokens: 256 bytes + special tokens)`);
  if (full.hidden % full.heads !== 0) throw new ConfigError(`--hidden ${full.hidden} must be divisible by --heads ${full.heads}`);
  const config: RawConfig = {
    ...spec.config(full),
    bos_token_id: vocab.get(spec.bos), eos_token_id: vocab.get(spec.eos), pad_token_id: vocab.get(spec.pad), torch_dtype: 'float32',
  };
  // An existing checkpoint (or any non-empty folder) is never replaced without force.
  prepareOutputDir(o.out, { flag: '--out', force: o.force, forceFlag: '--force' });
  const model = createModel(config, { seed: full.seed });
  mkdirSync(o.out, { recursive: true });
  try {
    saveModel(model, o.out);
  } finally {
    model.dispose();
  }
  const enc = new TextEncoder();
  writeFileAtomic(join(o.out, 'tokenizer.json'), enc.encode(JSON.stringify(json, null, 1) + '\n'));
  const tcfg: RawConfig = {
    bos_token: spec.bos, eos_token: spec.eos, pad_token: spec.pad, model_max_length: full.maxPositions,
    padding_side: spec.template ? 'right' : 'left', tokenizer_class: 'PreTrainedTokenizerFast',
  };
  if (spec.chat) tcfg.chat_template = CHATML;
  writeFileAtomic(join(o.out, 'tokenizer_config.json'), enc.encode(JSON.stringify(tcfg, null, 2) + '\n'));
  return config;
}
