// S-LoRA's unified adapter memory for one LoRA layer: every adapter that served a mixed batch keeps
// a slot in persistent stacked tensors A (S, R, I), Bt (S, R, O) (B transposed and pre-scaled,
// zero-padded to the largest rank) and a bias (S, O). A batch then only maps its rows to slots (a K+1 int64 table), so
// requests joining and leaving the running batch never rebuild the stacks. Slot 0 is all zeros (rows
// without an adapter). A slot is rewritten when its adapter's tensors, rank or scaling change (a
// reload), and the pool is dropped whenever the layer runs a training forward (optimizers update in
// place). Weights changed in place outside training need a training-mode forward or a reload.
import { keep, noGrad, tidy, zeros, cat, tensor, type Tensor } from '../../tensor/index.js';

/** What the pool reads of one adapter. */
export interface SlotSource {
  A: Tensor;  // (r, I)
  B: Tensor;  // (O, r)
  bias: Tensor | null;  // (O)
  /** The rank in use (DyLoRA may truncate) and the scaling at that rank. */
  rank: number;
  scaling: number;
}

interface Slot {
  index: number;
  A: Tensor;
  B: Tensor;
  bias: Tensor | null;
  rank: number;
  scaling: number;
}

export class LoraSlotPool {
  private A: Tensor | null = null;  // (S, R, I)
  private B: Tensor | null = null;  // (S, R, O): B transposed, so the kernels read rows of it
  private bias: Tensor | null = null;  // (S, O)
  private R = 0;
  private readonly slots = new Map<string, Slot>();
  private free: number[] = [];
  private table: { key: string; t: Tensor } | null = null;
  /** Slot writes (an adapter copied in) since creation. */
  writes = 0;

  constructor(private readonly inF: number, private readonly outF: number) {}

  /** The stacked tensors (valid until the next call). */
  get tensors(): { A: Tensor; Bt: Tensor; bias: Tensor } {
    return { A: this.A!, Bt: this.B!, bias: this.bias! };
  }

  /** Slots of `order` (then slot 0 for "no adapter"), as a (K+1) int64 table; writes what is missing or stale. */
  slotsFor(order: readonly string[], key: string, source: (name: string) => SlotSource | null): Tensor {
    // The same adapters at the same context version: nothing can have changed (reloads and rank
    // changes bump the version; training drops the pool).
    if (this.table?.key === key) return this.table.t;
    noGrad(() => {
      const srcs = order.map((n) => [n, source(n)] as const);
      const R = Math.max(1, ...srcs.map(([, s]) => s?.rank ?? 0));
      if (R > this.R || !this.A) this.reset(R);
      for (const [name, s] of srcs) if (s) this.ensure(name, s);
    });
    if (this.table?.key === key) return this.table.t;
    this.table?.t.dispose();
    const t = keep(tensor([...order.map((n) => this.slots.get(n)?.index ?? 0), 0], { dtype: 'int64', device: this.A!.device }));
    this.table = { key, t };
    return t;
  }

  /** Writes one adapter's slot now (ahead of its first batch). */
  prepare(name: string, s: SlotSource): void {
    noGrad(() => {
      if (s.rank > this.R || !this.A) this.reset(Math.max(1, s.rank, this.R));
      this.ensure(name, s);
    });
  }

  /** Forgets an adapter (its slot is reused). */
  release(name: string): void {
    const s = this.slots.get(name);
    if (!s) return;
    this.slots.delete(name);
    this.free.push(s.index);
    this.dropTable();
  }

  dispose(): void {
    if (!this.A && !this.table) return;
    for (const t of [this.A, this.B, this.bias]) t?.dispose();
    this.A = this.B = this.bias = null;
    this.R = 0;
    this.slots.clear();
    this.free = [];
    this.dropTable();
  }

  private dropTable(): void {
    this.table?.t.dispose();
    this.table = null;
  }

  private reset(R: number): void {
    const names = [...this.slots.keys()];
    this.dispose();
    this.R = R;
    this.grow(Math.max(8, names.length + 1));
  }

  // Capacity doubles when full; slot 0 stays zero.
  private grow(cap: number): void {
    const have = this.A?.shape[0] ?? 0;
    const add = (old: Tensor | null, shape: number[]) => {
      const z = zeros(shape);
      const next = keep(old ? cat([old, z]) : z);
      old?.dispose();
      if (old) z.dispose();
      return next;
    };
    const n = cap - have;
    this.A = add(this.A, [n, this.R, this.inF]);
    this.B = add(this.B, [n, this.R, this.outF]);
    this.bias = add(this.bias, [n, this.outF]);
    for (let i = Math.max(1, have); i < cap; i++) this.free.push(i);
    this.dropTable();
  }

  private ensure(name: string, s: SlotSource): void {
    const cur = this.slots.get(name);
    if (cur && cur.A === s.A && cur.B === s.B && cur.bias === s.bias && cur.rank === s.rank && cur.scaling === s.scaling) return;
    let index = cur?.index;
    if (index === undefined) {
      if (!this.free.length) this.grow(2 * this.A!.shape[0]!);
      index = this.free.shift()!;
      this.dropTable();
    }
    tidy(() => {
      const a = this.A!.select(0, index!);
      const b = this.B!.select(0, index!);
      a.zero_();
      b.zero_();
      a.narrow(0, 0, s.rank).copy_(s.A.narrow(0, 0, s.rank));
      b.narrow(0, 0, s.rank).copy_(s.B.narrow(1, 0, s.rank).transpose(0, 1).mul(s.scaling));
      const bb = this.bias!.select(0, index!);
      if (s.bias) bb.copy_(s.bias.mul(s.scaling));
      else bb.zero_();
    });
    this.writes++;
    this.slots.set(name, { index, A: s.A, B: s.B, bias: s.bias, rank: s.rank, scaling: s.scaling });
  }
}
