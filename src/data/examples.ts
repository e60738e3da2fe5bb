// Tokenized examples (plain number arrays; tensors are made per batch by toTensors) and the
// encoding helpers the task builders share.
import type { HFTokenizer } from '../tokenizer/tokenizer.js';
import type { SkipReport } from './records.js';

/** The label value that cross-entropy ignores (PyTorch's default ignore_index, used by HF). */
export const IGNORE_INDEX = -100;

/** Per-token labels: causal LM, instruction tuning, token classification. */
export interface TokenExample {
  inputIds: number[];
  labels: number[];
  /** `source:line` of the row it came from (absent for packed blocks, which span rows). */
  origin?: string;
}

/** One label per sequence: sequence classification. */
export interface ClassExample {
  inputIds: number[];
  label: number;
  origin?: string;
}

export type Example = TokenExample | ClassExample;

export interface BuildResult<E> extends SkipReport {
  examples: E[];
  /** Examples cut to fit `maxLength` / `blockSize`. */
  truncated: number;
}

const affixCache = new WeakMap<HFTokenizer, { prefix: number[]; suffix: number[] }>();

/**
 * The special tokens the tokenizer's post-processor wraps around one sequence (e.g. [CLS] … [SEP]
 * for BERT, <s> … for LLaMA, nothing for GPT-2), found by encoding a probe with and without them.
 */
export async function specialAffixes(tok: HFTokenizer): Promise<{ prefix: number[]; suffix: number[] }> {
  const hit = affixCache.get(tok);
  if (hit) return hit;
  const probe = 'a';
  const full = await tok.encode(probe, { addSpecialTokens: true });
  const plain = await tok.encode(probe, { addSpecialTokens: false });
  let at = -1;
  for (let i = 0; i + plain.length <= full.length && at < 0; i++) {
    if (plain.every((v, k) => full[i + k] === v)) at = i;
  }
  if (plain.length === 0 || at < 0) throw new Error('cannot locate the special tokens this tokenizer adds (probe "a" did not encode as a contiguous run)');
  const r = { prefix: full.slice(0, at), suffix: full.slice(at + plain.length) };
  affixCache.set(tok, r);
  return r;
}

/**
 * Encodes text and, when longer than maxLength, cuts the text's own tokens while keeping the
 * special tokens (as HF transformers truncation does; HFTokenizer's maxLength would cut [SEP]).
 * The cut side is the tokenizer's truncationSide.
 */
export async function encodeFit(tok: HFTokenizer, text: string, o: { addSpecialTokens: boolean; maxLength?: number }): Promise<{ ids: number[]; truncated: boolean }> {
  const ids = await tok.encode(text, { addSpecialTokens: o.addSpecialTokens });
  if (o.maxLength === undefined || ids.length <= o.maxLength) return { ids, truncated: false };
  const { prefix, suffix } = o.addSpecialTokens ? await specialAffixes(tok) : { prefix: [], suffix: [] };
  const body = o.addSpecialTokens ? await tok.encode(text, { addSpecialTokens: false }) : ids;
  const room = o.maxLength - prefix.length - suffix.length;
  if (room < 1) throw new Error(`maxLength ${o.maxLength} leaves no room for text next to ${prefix.length + suffix.length} special tokens`);
  const kept = tok.truncationSide === 'left' ? body.slice(body.length - room) : body.slice(0, room);
  return { ids: [...prefix, ...kept, ...suffix], truncated: true };
}

export function checkPositiveInt(name: string, v: number | undefined): void {
  if (v !== undefined && !(Number.isSafeInteger(v) && v > 0)) throw new Error(`${name} must be a positive integer, got ${v}`);
}

export function requireEos(tok: HFTokenizer, why: string): number {
  const eos = tok.eosTokenId;
  if (eos === null) throw new Error(`the tokenizer has no EOS token (needed to ${why}); set eos_token in tokenizer_config.json, or pass appendEos: false`);
  return eos;
}
