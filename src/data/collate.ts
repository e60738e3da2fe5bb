// Collation: a list of examples to one batch padded to its longest row (plain arrays), and the
// step from such a batch to int64 tensors. Padding: input ids with the pad id, attention mask
// 1 over real tokens and 0 over padding, per-token labels with IGNORE_INDEX so padding adds no
// loss. Left padding is what batched generation and many decoder-only recipes want; right is
// HF's default for training.
import type { HFTokenizer } from '../tokenizer/tokenizer.js';
import { tensor, type Device, type Tensor } from '../tensor/index.js';
import { IGNORE_INDEX, type ClassExample, type Example, type TokenExample } from './examples.js';

export interface CollateOptions {
  padId: number;
  paddingSide?: 'left' | 'right'; // default 'right'
  /** Fill for per-token labels (default IGNORE_INDEX, -100). */
  labelPadId?: number;
  /** Round the padded length up to a multiple of this (e.g. 8 for tensor cores). */
  padToMultipleOf?: number;
}

/** Batch shapes, with B rows and T the padded length. */
export interface TokenBatch {
  inputIds: number[][]; // (B, T)
  attentionMask: number[][]; // (B, T)
  labels: number[][]; // (B, T)
}
export interface ClassBatch {
  inputIds: number[][]; // (B, T)
  attentionMask: number[][]; // (B, T)
  labels: number[]; // (B)
}
export type Batch = TokenBatch | ClassBatch;
export type BatchOf<E extends Example> = E extends ClassExample ? ClassBatch : TokenBatch;

/** Collate options from a tokenizer: its pad id (else EOS, see HFTokenizer.padTokenId) and padding side. */
export function collateOptions(tok: HFTokenizer, o: Partial<CollateOptions> = {}): CollateOptions {
  const padId = o.padId ?? tok.padTokenId;
  if (padId === null) throw new Error('the tokenizer has neither a pad nor an EOS token; pass padId explicitly');
  return { ...o, padId, paddingSide: o.paddingSide ?? tok.paddingSide };
}

function padRow(row: readonly number[], len: number, fill: number, left: boolean): number[] {
  const pad = new Array<number>(len - row.length).fill(fill);
  return left ? [...pad, ...row] : [...row, ...pad];
}

/**
 * Example:
 * ```ts
 * const batch = collate(examples.slice(0, 8), collateOptions(tok));
 * using t = toTensors(batch); // int64 (B, T) tensors, freed at the end of the block
 * ```
 */
export function collate(examples: readonly TokenExample[], o: CollateOptions): TokenBatch;
export function collate(examples: readonly ClassExample[], o: CollateOptions): ClassBatch;
export function collate(examples: readonly Example[], o: CollateOptions): Batch;
export function collate(examples: readonly Example[], o: CollateOptions): Batch {
  if (examples.length === 0) throw new Error('collate: no examples');
  if (!Number.isSafeInteger(o.padId)) throw new Error(`collate: padId must be an integer, got ${o.padId}`);
  const left = (o.paddingSide ?? 'right') === 'left';
  if (o.paddingSide !== undefined && o.paddingSide !== 'left' && o.paddingSide !== 'right') throw new Error(`collate: paddingSide must be 'left' or 'right', got ${JSON.stringify(o.paddingSide)}`);
  const labelPad = o.labelPadId ?? IGNORE_INDEX;
  let len = Math.max(...examples.map((e) => e.inputIds.length));
  const m = o.padToMultipleOf;
  if (m !== undefined) {
    if (!(Number.isSafeInteger(m) && m > 0)) throw new Error(`collate: padToMultipleOf must be a positive integer, got ${m}`);
    len = Math.ceil(len / m) * m;
  }
  const perToken = 'labels' in examples[0]!;
  const inputIds: number[][] = [];
  const attentionMask: number[][] = [];
  const tokenLabels: number[][] = [];
  const classLabels: number[] = [];
  examples.forEach((e, i) => {
    if (('labels' in e) !== perToken) throw new Error(`collate: example ${i} mixes per-token labels and sequence labels with example 0`);
    inputIds.push(padRow(e.inputIds, len, o.padId, left));
    attentionMask.push(padRow(e.inputIds.map(() => 1), len, 0, left));
    if ('labels' in e) {
      if (e.labels.length !== e.inputIds.length) throw new Error(`collate: example ${i}${e.origin ? ` (${e.origin})` : ''} has ${e.inputIds.length} ids but ${e.labels.length} labels`);
      tokenLabels.push(padRow(e.labels, len, labelPad, left));
    } else {
      classLabels.push(e.label);
    }
  });
  return perToken ? { inputIds, attentionMask, labels: tokenLabels } : { inputIds, attentionMask, labels: classLabels };
}

/** A batch as int64 tensors, owned by the caller: dispose it, or hold it with `using`. */
export interface TensorBatch {
  inputIds: Tensor; // (B, T)
  attentionMask: Tensor; // (B, T)
  labels: Tensor; // (B, T) or (B)
  dispose(): void;
  [Symbol.dispose](): void;
}

/** Makes int64 tensors (what embedding lookups and cross-entropy targets take) from a batch. */
export function toTensors(batch: Batch, o: { device?: Device } = {}): TensorBatch {
  const made: Tensor[] = [];
  const make = (data: number[][] | number[]) => {
    const t = tensor(data, { dtype: 'int64', ...(o.device ? { device: o.device } : {}) });
    made.push(t);
    return t;
  };
  try {
    const inputIds = make(batch.inputIds);
    const attentionMask = make(batch.attentionMask);
    const labels = make(batch.labels);
    const dispose = () => { for (const t of made) if (!t.isDisposed) t.dispose(); };
    return { inputIds, attentionMask, labels, dispose, [Symbol.dispose]: dispose };
  } catch (e) {
    // A half-made batch must not leak the tensors already made.
    for (const t of made) t.dispose();
    throw e;
  }
}
