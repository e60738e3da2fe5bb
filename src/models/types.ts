// What every model file provides, so loading, generation, scoring and adapters work on any family.
import type { Module } from '../nn/module.js';
import type { Tensor, DType } from '../tensor/index.js';
import type { KVStore } from './cache.js';
import type { ModelSegments } from './segments.js';
import type { ModelHooks } from './hooks.js';

export type Task = 'causal-lm' | 'masked-lm' | 'sequence-classification' | 'token-classification' | 'base';

export interface ModelInput {
  inputIds: Tensor;  // (B, T) int64
  /** (B, S) 1 for real tokens, 0 for padding, over past + new positions. */
  attentionMask?: Tensor | null;
  /** (B, T); decoders default to positions counted from the attention mask (as HF generate does). */
  positionIds?: Tensor | null;
  tokenTypeIds?: Tensor | null;  // (B, T), encoders
  /** Decoders: keys and values of earlier positions; updated in place. */
  cache?: KVStore | null;
  /** Causal LM: compute logits only for the last this many positions (generation needs 1). */
  logitsToKeep?: number;
  /** Causal LM: skip the LM head (logits are then the hidden states); training fuses it with the loss. */
  skipLmHead?: boolean;
}

export interface ModelOutput {
  /** causal/masked LM (B, T, V); sequence classification (B, L); token classification (B, T, L). */
  logits: Tensor;
  /** The base model's last hidden states (B, T, C). */
  hiddenStates: Tensor;
}

/** Raw config.json fields (HF's names). */
export type RawConfig = Record<string, unknown>;

export interface PretrainedModel extends Module {
  readonly modelType: string;
  readonly task: Task;
  readonly config: RawConfig;
  /** The state-dict prefix of the base model inside task models ("transformer", "model", "bert", ...). */
  readonly basePrefix: string;
  readonly isDecoder: boolean;
  readonly numLayers: number;
  readonly dtype: DType;
  /** Where adapters that are not wrapped layers hook in (prompt/prefix tuning, invertible adapters); see hooks.ts. */
  readonly hooks: ModelHooks;
  forward(input: ModelInput): ModelOutput;
  /** Parameter names that are tied to another parameter (not stored in checkpoints when tied). */
  tiedParameters(): Map<string, string>;
  /** Newly initialised task-head parameters may be missing from a base checkpoint. */
  isHeadParameter(name: string): boolean;
  /** Checkpoint keys HF ignores for this architecture (mask buffers, rotary caches, ...). */
  isIgnoredKey(key: string): boolean;
  /** The LM head's weight (V, C) when it is a plain bias-free linear layer (not wrapped by an adapter). */
  lmHeadWeight(): Tensor | null;
  /** The forward pass as segments (embedding, blocks, final norm, head): gradient checkpointing. */
  segments(input: ModelInput): ModelSegments;
  /**
   * PEFT's layer_replication: rebuilds the layer list from [start, end) ranges of the current
   * layers, the copies sharing weights (see models/replicate.ts). Families without it refuse.
   */
  replicateLayers?(map: readonly (readonly number[])[]): void;
}

export interface ModelBuildOptions {
  task: Task;
  dtype: DType;
  numLabels?: number;
}
