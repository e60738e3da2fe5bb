// Logits processing for generation, with Hugging Face's semantics (generation/logits_process.py):
// repetition penalty, temperature, top-k, top-p, then greedy argmax or a seeded draw.
import { full, zeros, where, multinomial, type Tensor } from '../tensor/index.js';

export interface SamplingOptions {
  /** Sample (true) or take the argmax (false, the default, as HF's do_sample=False). */
  doSample?: boolean;
  temperature?: number;
  /** Keep the k most likely tokens (0: off). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1: off). */
  topP?: number;
  /** > 1 discourages tokens already in the sequence (CTRL paper; HF's RepetitionPenaltyLogitsProcessor). */
  repetitionPenalty?: number;
  seed?: number;
}

const NEG_INF = -Infinity;

/** scores (B, V) float32, previous ids (B, S) -> next ids (B) int64. */
export function nextTokens(scores: Tensor, previous: Tensor, o: SamplingOptions, step: number): Tensor {
  let s = scores;
  const penalty = o.repetitionPenalty ?? 1;
  if (penalty !== 1) {
    const seen = s.gather(1, previous);  // (B, S)
    s = s.scatter(1, previous, where(seen.lt(0), seen.mul(penalty), seen.div(penalty)));
  }
  if (!o.doSample) return s.argmax(-1);
  const temp = o.temperature ?? 1;
  if (!(temp > 0)) throw new RangeError(`temperature must be > 0 when sampling, got ${temp}`);
  if (temp !== 1) s = s.div(temp);
  const k = o.topK ?? 0;
  if (k > 0 && k < s.shape[1]!) {
    const kth = s.topk(k, -1).values.narrow(1, k - 1, 1);  // (B, 1)
    s = s.maskedFill(s.lt(kth), NEG_INF);
  }
  const p = o.topP ?? 1;
  if (p < 1) {
    const { values, indices } = s.sort(-1, false);  // ascending
    const cum = values.softmax(-1).cumsum(-1);
    const dropSorted = cum.le(1 - p);
    const v = s.shape[1]!;
    // Always keep the most likely token (min_tokens_to_keep = 1).
    const dev = s.device;
    const keepLast = zeros([1, v], { dtype: 'bool', device: dev }).scatter(1, full([1, 1], v - 1, { dtype: 'int64', device: dev }), 1).logicalNot();
    const drop = zeros(s.shape, { dtype: 'bool', device: dev }).scatter(1, indices, dropSorted.logicalAnd(keepLast));
    s = s.maskedFill(drop, NEG_INF);
  }
  const seed = o.seed === undefined ? undefined : (o.seed * 1_000_003 + step) % 2 ** 31;
  return multinomial(s.softmax(-1), 1, { seed }).squeeze(1);
}
