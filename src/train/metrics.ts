// Evaluation metrics: accuracy, macro-F1 (mean over classes of 2PR/(P+R), classes absent from both
// predictions and labels skipped), perplexity = exp(mean token NLL).
export function accuracy(pred: readonly number[], gold: readonly number[]): number {
  if (pred.length !== gold.length) throw new Error('predictions and labels differ in length');
  if (!gold.length) return NaN;
  let ok = 0;
  for (let i = 0; i < gold.length; i++) if (pred[i] === gold[i]) ok++;
  return ok / gold.length;
}

export function macroF1(pred: readonly number[], gold: readonly number[]): number {
  const classes = new Set([...pred, ...gold]);
  let sum = 0;
  for (const c of classes) {
    let tp = 0, fp = 0, fn = 0;
    for (let i = 0; i < gold.length; i++) {
      if (pred[i] === c && gold[i] === c) tp++;
      else if (pred[i] === c) fp++;
      else if (gold[i] === c) fn++;
    }
    sum += tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn);
  }
  return classes.size ? sum / classes.size : NaN;
}

export function perplexity(meanNll: number): number {
  return Math.exp(meanNll);
}

/** The accuracy of always predicting the most frequent label. */
export function majorityAccuracy(gold: readonly number[]): number {
  const counts = new Map<number, number>();
  for (const g of gold) counts.set(g, (counts.get(g) ?? 0) + 1);
  return Math.max(...counts.values()) / gold.length;
}
