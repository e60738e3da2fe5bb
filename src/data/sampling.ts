// Data order, all of it a pure function of a seed: the train/validation split, and the batches of
// an epoch — shuffled per (seed, epoch), optionally bucketed by length so that a batch holds rows
// of similar length and pads little.
import { mixSeed, mulberry32, permutation, shuffleInPlace } from './prng.js';

export interface SplitOptions {
  /** Share of rows for validation, in [0, 1). */
  valFraction: number;
  seed?: number; // default 0
}

/**
 * Splits rows by a seeded shuffle: round(n * valFraction) rows go to validation. Membership is
 * random; each side keeps the input order (the loader shuffles per epoch anyway, and ordered
 * splits are easy to diff). The same seed and rows give the same split on every machine.
 */
export function trainValSplit<T>(items: readonly T[], o: SplitOptions): { train: T[]; validation: T[] } {
  const f = o.valFraction;
  if (!(typeof f === 'number' && f >= 0 && f < 1)) throw new Error(`valFraction must be in [0, 1), got ${f}`);
  const nVal = Math.round(items.length * f);
  if (f > 0 && (nVal === 0 || nVal === items.length)) {
    throw new Error(`valFraction ${f} of ${items.length} rows leaves an empty ${nVal === 0 ? 'validation' : 'training'} split`);
  }
  const perm = permutation(items.length, mulberry32(mixSeed(o.seed ?? 0, 0x5eed)));
  const isVal = new Uint8Array(items.length);
  for (let k = 0; k < nVal; k++) isVal[perm[k]!] = 1;
  const train: T[] = [];
  const validation: T[] = [];
  items.forEach((x, i) => (isVal[i] ? validation : train).push(x));
  return { train, validation };
}

export interface BatchOrderOptions {
  batchSize: number;
  seed?: number; // default 0
  /** Shuffle per epoch (default true); false gives batches in data order (evaluation). */
  shuffle?: boolean;
  /** Drop the final short batch (default false). */
  dropLast?: boolean;
  /**
   * Length bucketing: sort by length within chunks of this many batches, cut the chunks into
   * batches, then shuffle the batches. Larger chunks pad less but order rows less randomly.
   * 0 or absent: no bucketing.
   */
  bucketBatches?: number;
}

export function checkBatchOrder(o: BatchOrderOptions): void {
  if (!(Number.isSafeInteger(o.batchSize) && o.batchSize > 0)) throw new Error(`batchSize must be a positive integer, got ${o.batchSize}`);
  const b = o.bucketBatches ?? 0;
  if (!(Number.isSafeInteger(b) && b >= 0)) throw new Error(`bucketBatches must be a non-negative integer, got ${b}`);
  if (!Number.isSafeInteger(o.seed ?? 0)) throw new Error(`seed must be a safe integer, got ${o.seed}`);
}

/**
 * The batches of one epoch as lists of example indices. Every index appears exactly once (once
 * at most with dropLast). `lengths[i]` is example i's length; only bucketing reads the values.
 */
export function epochBatches(lengths: readonly number[], epoch: number, o: BatchOrderOptions): number[][] {
  checkBatchOrder(o);
  const n = lengths.length;
  const B = o.batchSize;
  const shuffle = o.shuffle ?? true;
  // One stream per (seed, epoch): any epoch can be recomputed without replaying earlier ones.
  const rand = mulberry32(mixSeed(o.seed ?? 0, epoch));
  const order = shuffle ? permutation(n, rand) : Array.from({ length: n }, (_, i) => i);
  const bucket = o.bucketBatches ?? 0;
  const batches: number[][] = [];
  const cut = (idx: number[]) => { for (let s = 0; s < idx.length; s += B) batches.push(idx.slice(s, s + B)); };
  if (bucket > 0) {
    const chunk = bucket * B;
    for (let s = 0; s < n; s += chunk) {
      // Longest first within a chunk (as HF's LengthGroupedSampler); Array.sort is stable, so ties
      // keep their shuffled order.
      cut(order.slice(s, s + chunk).sort((a, b) => lengths[b]! - lengths[a]!));
    }
  } else {
    cut(order);
  }
  // Only the very last batch can be short: chunks are whole multiples of B except the final one.
  if ((o.dropLast ?? false) && batches.length && batches[batches.length - 1]!.length < B) batches.pop();
  if (shuffle && bucket > 0) shuffleInPlace(batches, rand);
  return batches;
}
