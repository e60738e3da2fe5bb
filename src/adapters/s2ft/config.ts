// S2FT configuration (Yang et al. 2024, "S2FT: Efficient, Scalable and Generalizable LLM Fine-tuning
// by Structured Sparsity"). PEFT has no S2FT: adapterkit writes PEFT-style folders with peft_type
// "S2FT" and the fields below.
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export interface S2ftConfig extends AdapterConfigBase {
  peftType: 'S2FT';
  /** Attention heads trained per layer: their slice of the output projection's input columns. */
  numHeads: number;
  /** Feed-forward channels trained per layer: their columns of the down projection. */
  numChannels: number;
  /** The heads to train in every layer (null: numHeads chosen at random, seeded per module path). */
  headIndices: number[] | null;
  /** The intermediate channels to train in every layer (null: numChannels at random, seeded per path). */
  channelIndices: number[] | null;
}

export type S2ftOptions = Partial<Omit<S2ftConfig, 'extra' | 'peftType'>> & { peftType: 'S2FT'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    S2FT: S2ftOptions;
  }
}

export const DEFAULT_S2FT: Pick<S2ftConfig, 'numHeads' | 'numChannels' | 'headIndices' | 'channelIndices'> = {
  numHeads: 1,
  numChannels: 32,
  headIndices: null,
  channelIndices: null,
};

export const S2FT_FIELDS: readonly [string, keyof S2ftConfig][] = [
  ['num_heads', 'numHeads'], ['num_channels', 'numChannels'], ['head_indices', 'headIndices'], ['channel_indices', 'channelIndices'],
];

/** The attention output projections and FFN down projections of each family. */
export const DEFAULT_S2FT_TARGETS: Readonly<Record<string, string[]>> = {
  gpt2: ['attn.c_proj', 'mlp.c_proj'],
  llama: ['o_proj', 'down_proj'],
  mistral: ['o_proj', 'down_proj'],
  qwen2: ['o_proj', 'down_proj'],
  bert: ['attention.output.dense', 'output.dense'],
  roberta: ['attention.output.dense', 'output.dense'],
  'xlm-roberta': ['attention.output.dense', 'output.dense'],
};

const HINTS = { heads: 'numHeads', channels: 'numChannels', targets: 'targetModules' };
const isIdxList = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every((i) => Number.isInteger(i) && i >= 0) && new Set(v).size === v.length;

export function resolveS2ft(partial: Partial<S2ftConfig> | S2ftOptions): S2ftConfig {
  const c = resolveWith<S2ftConfig>('S2FT config', 'S2FT', partial as Record<string, unknown>, DEFAULT_S2FT as Omit<S2ftConfig, 'extra' | 'peftType'>, S2FT_FIELDS, HINTS);
  const bad = (f: string, want: string, got: unknown) => configError('S2FT config', f, want, got);
  if (!(typeof c.numHeads === 'number' && Number.isInteger(c.numHeads) && c.numHeads > 0)) bad('num_heads', 'a positive integer', c.numHeads);
  if (!(typeof c.numChannels === 'number' && Number.isInteger(c.numChannels) && c.numChannels > 0)) bad('num_channels', 'a positive integer', c.numChannels);
  if (c.headIndices !== null && !isIdxList(c.headIndices)) bad('head_indices', 'null or a list of distinct head indices', c.headIndices);
  if (c.channelIndices !== null && !isIdxList(c.channelIndices)) bad('channel_indices', 'null or a list of distinct channel indices', c.channelIndices);
  return c;
}

export function s2ftFromJson(raw: Record<string, unknown>, warn: (m: string) => void): S2ftConfig {
  return resolveS2ft(peftJsonToOptions('S2FT', 'S2FT', raw, S2FT_FIELDS, warn) as S2ftOptions);
}

export function s2ftToJson(c: S2ftConfig): Record<string, unknown> {
  return optionsToPeftJson(c, S2FT_FIELDS);
}

/**
 * True for an attention OUTPUT projection (its input columns are the heads' outputs, head by head):
 * o_proj / out_proj, or c_proj / dense under an attention module. Anything else is taken as a
 * feed-forward down projection (its input columns are the intermediate channels).
 */
export function isAttentionOutput(path: string): boolean {
  const parts = path.split('.');
  const last = parts[parts.length - 1]!;
  if (last === 'o_proj' || last === 'out_proj') return true;
  return (last === 'c_proj' || last === 'dense') && parts.slice(0, -1).some((p) => /^(attn|attention|self_attn|self_attention)$/.test(p));
}
