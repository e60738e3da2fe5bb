// Generation with a KV cache (batched, left-padded), streaming through an async iterator, and
// scoring (per-token log-probabilities).
import { tidy, keep, noGrad, cat, ones, tensor, type Tensor } from '../tensor/index.js';
import { KVCache } from './cache.js';
import { nextTokens, type SamplingOptions } from './sampling.js';
import type { PretrainedModel } from './types.js';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens?: number;
  /** Token ids that end a row (e.g. EOS); the stop id itself is kept in the output. */
  stopIds?: readonly number[];
  /** Called after each new token of a row; true ends that row (stop strings use this). */
  stopWhen?: (row: number, newIds: readonly number[]) => boolean | Promise<boolean>;
  /** Written into finished rows (default: the first stop id, else 0). */
  padId?: number;
  /** Recompute the whole sequence every step instead of using the cache (for checking the cache). */
  noCache?: boolean;
}

export interface GenerateStep {
  step: number;
  /** The token each row produced at this step (null for rows already finished). */
  tokens: (number | null)[];
}

/**
 * The longest sequence the model was built for (max_position_embeddings, GPT-2's n_positions), or
 * null when the config names none. Past it GPT-2 has no position embedding and RoPE models run
 * on positions they never saw in training, so generation stops there and scoring refuses.
 */
export function contextLength(model: PretrainedModel): number | null {
  const v = model.config.max_position_embeddings ?? model.config.n_positions;
  if (!(typeof v === 'number' && Number.isInteger(v) && v > 0)) return null;
  // Virtual tokens of prompt/prefix tuning take positions before the caller's.
  const virtual = (model.hooks.prompt?.()?.length ?? 0) + (model.hooks.prefix?.()?.length ?? 0);
  return v - virtual;
}

function requireCausalLM(model: PretrainedModel): void {
  if (!model.isDecoder || model.task !== 'causal-lm') throw new Error(`generation needs a causal LM; this model is ${model.modelType} (${model.task})`);
}

/**
 * Streams generated tokens. `inputIds` (B, T) int64, left-padded with `attentionMask` (B, T) when
 * rows differ in length.
 */
export async function* generateStream(model: PretrainedModel, inputIds: Tensor, attentionMask: Tensor | null, o: GenerateOptions = {}): AsyncGenerator<GenerateStep> {
  requireCausalLM(model);
  const ctx = contextLength(model);
  const promptLength = inputIds.shape[1]!;
  if (ctx !== null && promptLength >= ctx) {
    throw new RangeError(`the prompt is ${promptLength} tokens, but the model's context holds ${ctx} positions (max_position_embeddings) and generation needs room for one more; shorten the prompt`);
  }
  // Stop at the context limit, keeping what was generated, rather than failing on the next step.
  const max = Math.min(o.maxNewTokens ?? 32, ctx === null ? Infinity : ctx - promptLength);
  const b = inputIds.shape[0]!;
  const stop = new Set(o.stopIds ?? []);
  const padId = o.padId ?? (o.stopIds?.[0] ?? 0);
  const cache = o.noCache ? null : new KVCache(model.numLayers);
  let ids = keep(inputIds.clone());  // (B, S) everything so far
  const device = inputIds.device;  // sampling, ids and masks stay on the model's device
  let mask = keep(attentionMask ? attentionMask.to('int64') : ones(inputIds.shape, { dtype: 'int64', device }));
  const done = new Array<boolean>(b).fill(false);
  const produced: number[][] = Array.from({ length: b }, () => []);
  try {
    for (let step = 0; step < max; step++) {
      const next = noGrad(() => tidy(() => {
        const feed = cache && step > 0 ? ids.narrow(1, ids.shape[1]! - 1, 1) : ids;  // (B, T)
        const out = model.forward({ inputIds: feed, attentionMask: mask, cache, logitsToKeep: 1 });
        const scores = out.logits.select(1, -1).to('float32');  // (B, V)
        return Array.from(nextTokens(scores, ids, o, step).data() as BigInt64Array, Number);
      }));
      const tokens = next.map((t, r) => (done[r] ? null : t));
      const col = next.map((t, r) => (done[r] ? padId : t));
      const newIds = keep(cat([ids, tensor([col], { dtype: 'int64', device }).transpose(0, 1)], 1));
      const newMask = keep(cat([mask, ones([b, 1], { dtype: 'int64', device })], 1));
      ids.dispose();
      mask.dispose();
      ids = newIds;
      mask = newMask;
      for (let r = 0; r < b; r++) {
        const t = tokens[r];
        if (t === null || t === undefined) continue;
        produced[r]!.push(t);
        if (stop.has(t) || (o.stopWhen && (await o.stopWhen(r, produced[r]!)))) done[r] = true;
      }
      yield { step, tokens };
      if (done.every(Boolean)) break;
    }
  } finally {
    cache?.dispose();
    ids.dispose();
    mask.dispose();
  }
}

/** Generates and returns the new token ids of each row. */
export async function generate(model: PretrainedModel, inputIds: Tensor, attentionMask: Tensor | null, o: GenerateOptions = {}): Promise<number[][]> {
  const rows: number[][] = Array.from({ length: inputIds.shape[0]! }, () => []);
  for await (const s of generateStream(model, inputIds, attentionMask, o)) s.tokens.forEach((t, r) => t !== null && rows[r]!.push(t));
  return rows;
}

export interface ScoreResult {
  ids: number[];
  /** logprobs[i] = log p(ids[i+1] | ids[0..i]) */
  logprobs: number[];
  /** Mean negative log-likelihood per predicted token. */
  nll: number;
}

/** Per-token log-probabilities of one sequence under a causal LM. */
export function score(model: PretrainedModel, ids: readonly number[]): ScoreResult {
  requireCausalLM(model);
  if (ids.length < 2) throw new Error('scoring needs at least two tokens');
  const ctx = contextLength(model);
  if (ctx !== null && ids.length > ctx) {
    throw new RangeError(`${ids.length} tokens are more than the model's context of ${ctx} positions (max_position_embeddings); score at most ${ctx} tokens at a time`);
  }
  return noGrad(() => tidy(() => {
    const x = tensor([ids as number[]], { dtype: 'int64', device: model.device });  // (1, T)
    const logits = model.forward({ inputIds: x }).logits.to('float32');  // (1, T, V)
    const lp = logits.narrow(1, 0, ids.length - 1).logSoftmax(-1);  // (1, T-1, V)
    const target = x.narrow(1, 1, ids.length - 1).unsqueeze(-1);  // (1, T-1, 1)
    const logprobs = Array.from(lp.gather(2, target).view(-1).data() as Float32Array);
    const nll = -logprobs.reduce((a, c) => a + c, 0) / logprobs.length;
    return { ids: [...ids], logprobs, nll };
  }));
}
