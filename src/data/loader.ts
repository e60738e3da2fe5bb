// A resumable loader over tokenized examples: batches in the order epochBatches gives for
// (seed, epoch), collated to padded arrays. Its state is two numbers (epoch, batches consumed)
// plus the settings that order depends on; since an epoch's order is recomputed from the seed,
// a loader restored from saved JSON continues with exactly the batches the first one would have
// produced, with no replay.
import { collate, type BatchOf, type CollateOptions } from './collate.js';
import type { Example } from './examples.js';
import { checkBatchOrder, epochBatches, type BatchOrderOptions } from './sampling.js';

export interface LoaderOptions extends BatchOrderOptions {
  collate: CollateOptions;
}

/** JSON-safe; save with JSON.stringify, continue with `loader.restore(JSON.parse(text))`. */
export interface LoaderState {
  version: 1;
  epoch: number;
  /** Batches of `epoch` already handed out. */
  position: number;
  seed: number;
  batchSize: number;
  shuffle: boolean;
  dropLast: boolean;
  bucketBatches: number;
  size: number;
  /** A hash of the example lengths: catches resuming over different data of the same size. */
  lengthsHash: number;
}

export interface LoaderItem<E extends Example> {
  batch: BatchOf<E>;
  /** Indices into the examples array. */
  indices: number[];
  epoch: number;
  /** This batch's place in its epoch (0-based). */
  position: number;
}

function hashLengths(lengths: readonly number[]): number {
  let h = 0x811c9dc5; // FNV-1a over the lengths as 32-bit words
  for (const l of lengths) h = Math.imul(h ^ l, 0x01000193);
  return h >>> 0;
}

/**
 * Example:
 * ```ts
 * const loader = new DataLoader(train, { batchSize: 8, seed: 1, bucketBatches: 50, collate: collateOptions(tok) });
 * if (saved) loader.restore(JSON.parse(saved));
 * while (loader.epoch < 3) {
 *   for (const { batch } of loader.iterEpoch()) { step(batch); save(JSON.stringify(loader.state())); }
 * }
 * ```
 */
export class DataLoader<E extends Example> {
  private _epoch = 0;
  private _position = 0;
  private plan: number[][] = [];
  private planFor = -1;
  private readonly lengths: number[];

  constructor(private readonly examples: readonly E[], private readonly o: LoaderOptions) {
    checkBatchOrder(o);
    this.lengths = examples.map((e) => e.inputIds.length);
    if (this.batchesPerEpoch === 0) throw new Error(`no batches: ${examples.length} examples, batchSize ${o.batchSize}${o.dropLast ? ', dropLast' : ''}`);
  }

  get epoch(): number { return this._epoch; }
  get position(): number { return this._position; }
  get batchesPerEpoch(): number {
    const n = this.examples.length;
    const B = this.o.batchSize;
    return this.o.dropLast ? Math.floor(n / B) : Math.ceil(n / B);
  }

  private planOf(epoch: number): number[][] {
    if (this.planFor !== epoch) {
      this.plan = epochBatches(this.lengths, epoch, this.o);
      this.planFor = epoch;
    }
    return this.plan;
  }

  /** The next batch; after the last batch of an epoch the loader moves to the next epoch. */
  next(): LoaderItem<E> {
    const plan = this.planOf(this._epoch);
    const indices = plan[this._position]!;
    const item: LoaderItem<E> = {
      batch: collate(indices.map((i) => this.examples[i]!), this.o.collate) as BatchOf<E>,
      indices: [...indices],
      epoch: this._epoch,
      position: this._position,
    };
    if (++this._position === plan.length) {
      this._epoch++;
      this._position = 0;
    }
    return item;
  }

  /** The rest of the current epoch (all of it from a fresh start). */
  *iterEpoch(): Generator<LoaderItem<E>> {
    const e = this._epoch;
    while (this._epoch === e) yield this.next();
  }

  state(): LoaderState {
    return {
      version: 1,
      epoch: this._epoch,
      position: this._position,
      seed: this.o.seed ?? 0,
      batchSize: this.o.batchSize,
      shuffle: this.o.shuffle ?? true,
      dropLast: this.o.dropLast ?? false,
      bucketBatches: this.o.bucketBatches ?? 0,
      size: this.examples.length,
      lengthsHash: hashLengths(this.lengths),
    };
  }

  /** Continues from a saved state; refuses one saved under other settings or other data. */
  restore(s: LoaderState): void {
    if (s === null || typeof s !== 'object' || s.version !== 1) throw new Error(`loader state: expected {version: 1, …}, got ${JSON.stringify(s)}`);
    const mine = this.state();
    const keys = ['seed', 'batchSize', 'shuffle', 'dropLast', 'bucketBatches', 'size', 'lengthsHash'] as const;
    const diff = keys.filter((k) => s[k] !== mine[k]).map((k) => `${k}: saved ${JSON.stringify(s[k])}, now ${JSON.stringify(mine[k])}`);
    if (diff.length) throw new Error(`loader state was saved for another data order (${diff.join('; ')})`);
    if (!Number.isSafeInteger(s.epoch) || s.epoch < 0) throw new Error(`loader state: bad epoch ${s.epoch}`);
    if (!Number.isSafeInteger(s.position) || s.position < 0 || s.position >= this.batchesPerEpoch) {
      throw new Error(`loader state: position ${s.position} outside 0..${this.batchesPerEpoch - 1}`);
    }
    this._epoch = s.epoch;
    this._position = s.position;
  }
}
