// Losses for the training tasks, as sums over predicted items plus the item count, so gradient
// accumulation can divide by the count of the whole accumulated batch (2 x 4 equals 1 x 8 exactly).
import { crossEntropy, linearCrossEntropy, type Tensor } from '../tensor/index.js';

export type TrainTask = 'causal-lm' | 'sequence-classification' | 'token-classification';

export interface LossParts {
  sum: Tensor;  // scalar, float32
  count: number;
}

export const IGNORE = -100;

/** Items that count in the loss: shifted non-ignored labels (causal LM), labels != -100, or rows. */
export function itemCount(task: TrainTask, labels: readonly (number | readonly number[])[]): number {
  if (task === 'sequence-classification') return labels.length;
  let n = 0;
  for (const row of labels as readonly (readonly number[])[]) {
    const from = task === 'causal-lm' ? 1 : 0;
    for (let i = from; i < row.length; i++) if (row[i] !== IGNORE) n++;
  }
  return n;
}

export function lossParts(task: TrainTask, logits: Tensor, labels: Tensor, labelSmoothing = 0): Tensor {
  const lg = logits.dtype === 'float32' ? logits : logits.to('float32');
  if (task === 'sequence-classification') return crossEntropy(lg, labels, { reduction: 'sum', labelSmoothing });  // (B, L) vs (B)
  if (task === 'causal-lm') {
    // Predict token t+1 from position t (HF shifts inside the model; we shift here).
    const t = lg.shape[1]!;
    const v = lg.shape[2]!;
    const pred = lg.narrow(1, 0, t - 1).reshape(-1, v);  // (B*(T-1), V)
    const gold = labels.narrow(1, 1, t - 1).reshape(-1);
    return crossEntropy(pred, gold, { reduction: 'sum', ignoreIndex: IGNORE, labelSmoothing });
  }
  const l = lg.shape[2]!;
  return crossEntropy(lg.reshape(-1, l), labels.reshape(-1), { reduction: 'sum', ignoreIndex: IGNORE, labelSmoothing });
}

/**
 * Causal-LM loss sum from the last hidden states (B, T, C) and the LM head weight (V, C), fused
 * (no full logits): position t predicts labels[t + 1].
 */
export function fusedCausalLmLoss(hidden: Tensor, headWeight: Tensor, labels: Tensor): Tensor {
  const [b, t, c] = hidden.shape as [number, number, number];
  void b;
  const h = hidden.narrow(1, 0, t - 1).reshape(-1, c);  // (B*(T-1), C)
  const gold = labels.narrow(1, 1, t - 1).reshape(-1);
  const w = headWeight.dtype === h.dtype ? headWeight : headWeight.to(h.dtype);
  return linearCrossEntropy(h, w, gold, { ignoreIndex: IGNORE });
}
