// model_type -> architecture. Adding a family is one registerModel call.
import { ConfigError } from './config.js';
import { buildGPT2 } from './gpt2.js';
import { buildLlama } from './llama.js';
import { buildBert } from './bert.js';
import type { ModelBuildOptions, PretrainedModel, RawConfig, Task } from './types.js';

export interface ModelFamily {
  build(config: RawConfig, o: ModelBuildOptions): PretrainedModel & { initWeights(seed: number, only?: (path: string) => boolean): void };
  /** The task used when config.json's "architectures" says nothing. */
  defaultTask: Task;
  tasks: readonly Task[];
}

const REGISTRY = new Map<string, ModelFamily>();

export function registerModel(modelType: string, family: ModelFamily): void {
  if (REGISTRY.has(modelType)) throw new Error(`model type "${modelType}" is already registered`);
  REGISTRY.set(modelType, family);
}

export function modelFamily(modelType: unknown): ModelFamily {
  if (typeof modelType !== 'string') throw new ConfigError(`config.json has no "model_type" string (supported: ${supportedModelTypes().join(', ')})`);
  const f = REGISTRY.get(modelType);
  if (!f) throw new ConfigError(`unsupported model_type "${modelType}" (supported: ${supportedModelTypes().join(', ')})`);
  return f;
}

export function supportedModelTypes(): string[] {
  return [...REGISTRY.keys()];
}

/** The task named by config.json's architectures[0] (e.g. "LlamaForCausalLM" -> causal-lm). */
export function taskFromArchitectures(config: RawConfig): Task | null {
  const a = Array.isArray(config.architectures) ? config.architectures[0] : undefined;
  if (typeof a !== 'string') return null;
  if (/(ForCausalLM|LMHeadModel)$/.test(a)) return 'causal-lm';
  if (/(ForMaskedLM|ForPreTraining)$/.test(a)) return 'masked-lm';
  if (/ForSequenceClassification$/.test(a)) return 'sequence-classification';
  if (/ForTokenClassification$/.test(a)) return 'token-classification';
  if (/Model$/.test(a)) return 'base';
  return null;
}

const DECODER_TASKS: readonly Task[] = ['causal-lm', 'sequence-classification', 'token-classification', 'base'];
const ENCODER_TASKS: readonly Task[] = ['masked-lm', 'sequence-classification', 'token-classification', 'base'];

registerModel('gpt2', { build: buildGPT2, defaultTask: 'causal-lm', tasks: DECODER_TASKS });
for (const f of ['llama', 'mistral', 'qwen2'] as const) registerModel(f, { build: buildLlama(f), defaultTask: 'causal-lm', tasks: DECODER_TASKS });
for (const f of ['bert', 'roberta', 'xlm-roberta'] as const) registerModel(f, { build: buildBert(f), defaultTask: 'masked-lm', tasks: ENCODER_TASKS });
