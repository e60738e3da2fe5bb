// Pieces shared by the task heads of the model files.
import { arange, TorchError, type Tensor } from '../tensor/index.js';
import type { ModelInput, ModelOutput } from './types.js';

/**
 * Index of the last real token of each row, as HF's *ForSequenceClassification for decoders: the
 * rightmost token that is not pad_token_id (works with left and right padding). Without a pad token
 * id, an attention mask is used when given; else a batch of one uses its last token and a larger
 * batch is an error (as in HF).
 */
export function lastTokenIndex(inputIds: Tensor, padTokenId: number | null, attentionMask: Tensor | null | undefined): Tensor {
  const [b, t] = inputIds.shape as [number, number];
  const idx = arange(0, t, 1, { device: inputIds.device }).view(1, t);  // (1, T)
  if (padTokenId !== null) return idx.mul(inputIds.ne(padTokenId)).argmax(-1);  // (B)
  if (attentionMask) return idx.mul(attentionMask.narrow(1, attentionMask.shape[1]! - t, t).ne(0)).argmax(-1);
  if (b !== 1) throw new TorchError('sequence-classification', [`batch ${b}`], 'cannot find the last token of padded rows: the config has no pad_token_id and no attention mask was given');
  return arange(t - 1, t, 1, { device: inputIds.device });
}

/** hidden (B, T, C) at one index per row (B) -> (B, C). */
export function pickRows(hidden: Tensor, index: Tensor): Tensor {
  const [b, , c] = hidden.shape as [number, number, number];
  return hidden.gather(1, index.view(b, 1, 1).expand(b, 1, c)).squeeze(1);
}

/** A causal-LM head's output: logits for all (or the last logitsToKeep) positions, or none when skipLmHead. */
export function lmHeadOutput(lmHead: { forward(x: Tensor): Tensor }, hidden: Tensor, input: ModelInput): ModelOutput {
  if (input.skipLmHead) return { logits: hidden, hiddenStates: hidden };
  const keep = input.logitsToKeep;
  const hs = keep ? hidden.narrow(1, hidden.shape[1]! - keep, keep) : hidden;
  return { logits: lmHead.forward(hs), hiddenStates: hidden };  // (B, T, V)
}

/** A decoder's sequence-classification output: the score of each row's last real token. */
export function lastTokenOutput(score: { forward(x: Tensor): Tensor }, hidden: Tensor, input: ModelInput, padTokenId: number | null): ModelOutput {
  const idx = lastTokenIndex(input.inputIds, padTokenId, input.attentionMask);  // (B)
  return { logits: score.forward(pickRows(hidden, idx)), hiddenStates: hidden };  // (B, L)
}
