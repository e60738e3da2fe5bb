// The serving engine's KV cache: one preallocated slab per layer, (rows, Hkv, capacity, D), holding
// every running sequence in a row. Sequences are right-aligned on a shared write column: each decode
// step writes one column for every row, so the model files see an ordinary cache (one length for all
// rows) and padding on the left is masked by the attention mask (positions come from the mask, so a
// row's positions equal those of the sequence run alone). Memory is fixed at creation: no growth, ever.
// Shapes: N running rows, H key/value heads, C capacity (positions), D head dim, L layers.
import { zeros, keep, noGrad, tidy, type Tensor, type DType, type Device } from '../tensor/index.js';
import type { KVStore } from '../models/cache.js';

export interface SlabOptions {
  layers: number;
  kvHeads: number;
  headDim: number;
  /** Rows: the most sequences that run at once. */
  rows: number;
  /** Positions per row: the longest sequence (prompt + generated) a request may have. */
  capacity: number;
  dtype: DType;
  device: Device;
}

export class SlabCache implements KVStore {
  private readonly k: Tensor[] = [];
  private readonly v: Tensor[] = [];
  /** (rows, capacity) 1 where a row holds a real position. */
  private readonly valid: Tensor;
  /** Running rows (0..n-1). */
  n = 0;
  /** The window [start, end) every running row lies in; the next write goes to column `end`. */
  private start = 0;
  private end = 0;
  /** First valid column of each running row. */
  private readonly rowStart: number[] = [];
  /** Bytes held (fixed). */
  readonly bytes: number;

  constructor(readonly o: SlabOptions) {
    noGrad(() => {
      for (let l = 0; l < o.layers; l++) {
        this.k.push(keep(zeros([o.rows, o.kvHeads, o.capacity, o.headDim], { dtype: o.dtype, device: o.device })));
        this.v.push(keep(zeros([o.rows, o.kvHeads, o.capacity, o.headDim], { dtype: o.dtype, device: o.device })));
      }
    });
    this.valid = keep(zeros([o.rows, o.capacity], { dtype: 'int64', device: o.device }));
    const el = o.dtype === 'float32' ? 4 : o.dtype === 'float64' ? 8 : 2;
    this.bytes = 2 * o.layers * o.rows * o.kvHeads * o.capacity * o.headDim * el + o.rows * o.capacity * 8;
  }

  /** Static size of a slab, for choosing rows under a memory budget. */
  static bytesFor(o: Omit<SlabOptions, 'rows' | 'device'> & { rows: number }): number {
    const el = o.dtype === 'float32' ? 4 : o.dtype === 'float64' ? 8 : 2;
    return 2 * o.layers * o.rows * o.kvHeads * o.capacity * o.headDim * el + o.rows * o.capacity * 8;
  }

  get freeRows(): number {
    return this.o.rows - this.n;
  }

  /** Cached positions seen by the model (the window), the same for every running row. */
  get length(): number {
    return this.end - this.start;
  }

  /** Length of row r's own sequence. */
  rowLength(r: number): number {
    return this.end - this.rowStart[r]!;
  }

  /** Writes this step's keys/values (N, H, T, D) at columns [end, end + T); returns the window (N, H, S, D). */
  update(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const t = k.shape[2]!;
    const n = k.shape[0]!;
    if (n !== this.n) throw new Error(`slab cache: ${n} rows fed but ${this.n} are running`);
    if (this.end + t > this.o.capacity) throw new Error('slab cache: no room for the step (call reserve() first)');
    noGrad(() => {
      this.k[layer]!.narrow(0, 0, n).narrow(2, this.end, t).copy_(k.detach());
      this.v[layer]!.narrow(0, 0, n).narrow(2, this.end, t).copy_(v.detach());
    });
    const span = this.end + t - this.start;
    return { k: this.k[layer]!.narrow(0, 0, n).narrow(2, this.start, span), v: this.v[layer]!.narrow(0, 0, n).narrow(2, this.start, span) };
  }

  /**
   * Before a decode step of t new tokens for every row: makes room at the end (moving the window to
   * column 0 when it would run past the capacity) and returns the attention mask (N, S + t) over the
   * window plus the new columns, which it marks valid.
   */
  beginStep(t: number): Tensor {
    if (this.length + t > this.o.capacity) throw new Error(`slab cache: a row would exceed ${this.o.capacity} positions`);
    if (this.end + t > this.o.capacity) this.moveWindow(0);
    noGrad(() => this.valid.narrow(0, 0, this.n).narrow(1, this.end, t).fill_(1));
    return this.valid.narrow(0, 0, this.n).narrow(1, this.start, this.end + t - this.start);
  }

  /** After the step's forward: the new columns are part of the window. */
  endStep(t: number): void {
    this.end += t;
  }

  /**
   * Adds a row from a finished prefill: per layer keys/values (B, H, Tmax, D) of a (left-padded)
   * prefill batch; row `from`'s last `t` positions are placed right-aligned so that they end at the
   * write column. Returns the row index.
   */
  addRow(layerKV: { k: Tensor; v: Tensor }[], from: number, t: number): number {
    if (this.n >= this.o.rows) throw new Error('slab cache: no free row');
    if (t > this.o.capacity) throw new Error(`slab cache: ${t} positions exceed the capacity ${this.o.capacity}`);
    if (this.n === 0) {
      this.start = 0;
      this.end = t;
    } else if (this.end - t < this.start) {
      // The new row reaches further left than the window: widen it, moving right first if needed.
      if (this.end - t < 0) this.moveWindow(t - (this.end - this.start));
      this.start = this.end - t;
    }
    const r = this.n++;
    noGrad(() => tidy(() => {
      for (let l = 0; l < this.o.layers; l++) {
        const kv = layerKV[l]!;
        const tm = kv.k.shape[2]!;
        this.k[l]!.narrow(0, r, 1).narrow(2, this.end - t, t).copy_(kv.k.narrow(0, from, 1).narrow(2, tm - t, t));
        this.v[l]!.narrow(0, r, 1).narrow(2, this.end - t, t).copy_(kv.v.narrow(0, from, 1).narrow(2, tm - t, t));
      }
      const row = this.valid.narrow(0, r, 1);
      row.fill_(0);
      row.narrow(1, this.end - t, t).fill_(1);
    }));
    this.rowStart[r] = this.end - t;
    return r;
  }

  /** Removes row r, moving the last row into its place; returns the index that moved (or -1). */
  removeRow(r: number): number {
    const last = this.n - 1;
    let moved = -1;
    if (r !== last) {
      noGrad(() => {
        for (let l = 0; l < this.o.layers; l++) {
          this.k[l]!.narrow(0, r, 1).copy_(this.k[l]!.narrow(0, last, 1));
          this.v[l]!.narrow(0, r, 1).copy_(this.v[l]!.narrow(0, last, 1));
        }
        this.valid.narrow(0, r, 1).copy_(this.valid.narrow(0, last, 1));
      });
      this.rowStart[r] = this.rowStart[last]!;
      moved = last;
    }
    noGrad(() => this.valid.narrow(0, last, 1).fill_(0));
    this.rowStart.length = last;
    this.n = last;
    // The window shrinks to the oldest row still running.
    this.start = this.n ? Math.min(...this.rowStart) : 0;
    if (!this.n) this.end = 0;
    return moved;
  }

  /** Moves the window so that it starts at column `to` (a copy of the window; rare). */
  private moveWindow(to: number): void {
    const span = this.end - this.start;
    if (to + span > this.o.capacity) throw new Error('slab cache: window does not fit');
    if (to === this.start) return;
    noGrad(() => tidy(() => {
      for (const arr of [this.k, this.v]) {
        for (const t of arr) {
          const w = t.narrow(2, this.start, span).clone();
          t.narrow(2, to, span).copy_(w);
        }
      }
      const w = this.valid.narrow(1, this.start, span).clone();
      this.valid.fill_(0);
      this.valid.narrow(1, to, span).copy_(w);
    }));
    const delta = to - this.start;
    for (let i = 0; i < this.n; i++) this.rowStart[i] = this.rowStart[i]! + delta;
    this.start = to;
    this.end = to + span;
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v, this.valid]) t.dispose();
    this.k.length = 0;
    this.v.length = 0;
  }
}
