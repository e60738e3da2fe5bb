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

/** One entity: its type and first/last token positions (over the concatenated sequences). */
export interface Entity { type: string; start: number; end: number }

/**
 * Entities in tag sequences with seqeval's default (lenient IOB/IOBES) rules (seqeval.metrics.
 * sequence_labeling.get_entities): a chunk starts at B/S, at I/E after O or after another type,
 * and ends before B/S/O, after E/S, or where the type changes. Sequences are joined with an "O"
 * between them, as seqeval does, so an entity never spans two sentences.
 */
export function entities(seqs: readonly (readonly string[])[]): Entity[] {
  const flat: string[] = [];
  for (const s of seqs) flat.push(...s, 'O');
  const out: Entity[] = [];
  let prevTag = 'O';
  let prevType = '';
  let begin = 0;
  [...flat, 'O'].forEach((chunk, i) => {
    const tag = chunk[0] ?? 'O';
    const rest = chunk.slice(1);  // python: chunk[1:].split('-', maxsplit=1)[-1] or '_'
    const type = (rest.includes('-') ? rest.slice(rest.indexOf('-') + 1) : rest) || '_';
    if (endOfChunk(prevTag, tag, prevType, type)) out.push({ type: prevType, start: begin, end: i - 1 });
    if (startOfChunk(prevTag, tag, prevType, type)) begin = i;
    prevTag = tag;
    prevType = type;
  });
  return out;
}

function endOfChunk(pt: string, t: string, pType: string, type: string): boolean {
  if (pt === 'E' || pt === 'S') return true;
  if ((pt === 'B' || pt === 'I') && (t === 'B' || t === 'S' || t === 'O')) return true;
  return pt !== 'O' && pt !== '.' && pType !== type;
}

function startOfChunk(pt: string, t: string, pType: string, type: string): boolean {
  if (t === 'B' || t === 'S') return true;
  if ((pt === 'E' || pt === 'S' || pt === 'O') && (t === 'E' || t === 'I')) return true;
  return t !== 'O' && t !== '.' && pType !== type;
}

/**
 * Entity-level precision, recall and F1 (seqeval's default micro average): an entity counts only
 * when its type and both boundaries match. Nothing predicted or nothing to find gives 0, as seqeval.
 */
export function entityScores(pred: readonly (readonly string[])[], gold: readonly (readonly string[])[]): { precision: number; recall: number; f1: number } {
  if (pred.length !== gold.length || pred.some((p, i) => p.length !== gold[i]!.length)) throw new Error('predicted and gold tag sequences differ in shape');
  const key = (e: Entity) => `${e.type}\u0000${e.start}\u0000${e.end}`;
  const p = new Set(entities(pred).map(key));
  const g = new Set(entities(gold).map(key));
  let tp = 0;
  for (const k of p) if (g.has(k)) tp++;
  const precision = p.size ? tp / p.size : 0;
  const recall = g.size ? tp / g.size : 0;
  return { precision, recall, f1: precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0 };
}
