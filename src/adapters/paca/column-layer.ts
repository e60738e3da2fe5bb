// A tuner layer that trains a set of INPUT COLUMNS of the base weight in place (PaCA's random columns,
// S2FT's head / channel slices). Wraps a Linear or GPT-2 Conv1D (kept as `base_layer`) and holds, per
// adapter name, the column indices S (r of them, sorted, distinct) and the trained block P (O, r) in
// float32, initialised to the base's own columns W[:, S]. The layer computes with W whose columns S are
// replaced by P, as the cheap exact form
//   y = base(x) + x[..., S] (P − W[:, S])ᵀ          (the delta is zero at init)
// whose gradient with respect to P is the gradient of W[:, S] in the replaced layer. Several active
// adapters add their deltas. Merging writes P into W's columns (free: nothing stays behind); unmerge
// restores those columns from a copy of them only. Shapes: N rows, T time, I in, O out, R columns.
import { Module, Container } from '../../nn/module.js';
import { Conv1D, type LinearLayer } from '../../nn/layers.js';
import { keep, noGrad, tidy, tensor, zeros, stack, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import { seedFor } from '../lora/init.js';

interface ColumnState { cols: number[]; idx: Tensor }
interface MergeRecord { name: string; idx: Tensor; backup: Tensor }

/** r distinct indices in [0, n), sorted, drawn with a seeded Fisher–Yates (mulberry32). */
export function seededColumns(n: number, r: number, seed: number): number[] {
  if (!(Number.isInteger(r) && r > 0 && r <= n)) throw new Error(`cannot choose ${r} of ${n} columns (r must be in 1..${n})`);
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = 0; i < r; i++) {
    const j = i + Math.floor(next() * (n - i));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a.slice(0, r).sort((x, y) => x - y);
}

export { seedFor };

export abstract class ColumnSliceLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  abstract readonly peftType: string;
  /** File keys of the indices (int64, (R)) and the block (float32, (O, R)). */
  protected abstract readonly indicesKey: string;
  protected abstract readonly weightKey: string;
  readonly base_layer: LinearLayer;
  protected readonly blocks: Container;
  readonly columns = new Map<string, ColumnState>();
  private merged: MergeRecord[] = [];
  private stackCache: { key: string; idx: Tensor; delta: Tensor } | null = null;

  constructor(base: LinearLayer, protected readonly ctx: AdapterContext, containerName: string) {
    super();
    this.base_layer = this.module('base_layer', base);
    this.blocks = this.module(containerName, new Container());
  }

  /** The columns to train for this adapter on this path (sorted, distinct, in [0, inFeatures)). */
  protected abstract chooseColumns(config: AdapterConfigBase, path: string, opts: AddLayerOptions): number[];

  get baseLayer(): Module { return this.base_layer; }
  get inFeatures(): number { return this.base_layer.inFeatures; }
  get outFeatures(): number { return this.base_layer.outFeatures; }
  get fanInFanOut(): boolean { return this.base_layer instanceof Conv1D; }
  get mergedAdapters(): readonly string[] { return this.merged.map((m) => m.name); }
  hasAdapter(name: string): boolean { return this.columns.has(name); }
  /** The trained block P (O, R). */
  block(name: string): Tensor { return this.blocks.getParameter(name); }
  /** The column indices of an adapter. */
  indices(name: string): number[] { return [...this.columns.get(name)!.cols]; }

  /** W[:, idx] as (O, R) float32 (Conv1D stores [in, out]: its rows idx, transposed). */
  protected baseColumns(idx: Tensor, w: Tensor = this.base_layer.weight): Tensor {
    return this.fanInFanOut ? w.indexSelect(0, idx).transpose(0, 1).to('float32') : w.indexSelect(1, idx).to('float32');
  }

  private setColumns(name: string, cols: number[], path: string): void {
    const n = this.inFeatures;
    if (new Set(cols).size !== cols.length || cols.some((c) => !Number.isInteger(c) || c < 0 || c >= n)) {
      throw new Error(`${path}: column indices must be distinct integers in [0, ${n}), got ${JSON.stringify(cols.length > 12 ? [...cols.slice(0, 12), '…'] : cols)}`);
    }
    const old = this.columns.get(name);
    old?.idx.dispose();
    const idx = keep(tidy(() => tensor(cols, { dtype: 'int64' }).to(null, this.base_layer.weight.device)));
    this.columns.set(name, { cols: [...cols], idx });
  }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    if (this.columns.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    const cols = this.chooseColumns(config, path, opts);
    this.setColumns(name, cols, path);
    const idx = this.columns.get(name)!.idx;
    // P starts as the base's own columns: the layer starts as the base.
    noGrad(() => this.blocks.addParam(name, tidy(() => this.baseColumns(idx).contiguous()), true));
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    const s = this.columns.get(name);
    if (!s) return;
    if (this.merged.some((m) => m.name === name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    this.blocks.removeParam(name);
    s.idx.dispose();
    this.columns.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    return this.columns.has(name) ? [this.block(name)] : [];
  }

  /** Moves the index tensors along when the model moved to another device. */
  private syncDevice(): void {
    const dev = this.base_layer.weight.device;
    for (const [name, s] of this.columns) if (s.idx.device !== dev) this.setColumns(name, s.cols, name);
  }

  /** P − W[:, S], (O, R) float32. */
  private delta(name: string): Tensor {
    const s = this.columns.get(name)!;
    return this.block(name).sub(noGrad(() => this.baseColumns(s.idx)));
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(x);
    }
    const y = this.base_layer.forward(x);  // (…, O)
    this.syncDevice();
    if (this.ctx.rows) return this.mixedBatch(x, y);
    if (this.merged.length) return y;  // once merged, the (merged) base only, as PEFT's layers
    let out = y;
    const last = x.shape.length - 1;
    for (const name of this.ctx.active) {
      const s = this.columns.get(name);
      if (!s) continue;
      const xs = x.indexSelect(last, s.idx).to('float32');  // (…, R)
      out = out.add(xs.matmul(this.delta(name).transpose(0, 1)).to(y.dtype));
    }
    return out;
  }

  /**
   * Each row with its own adapter (or none) in one pass: per adapter of `order` the indices (padded
   * with column 0) and the deltas (zero-padded) are stacked, with a last all-zero entry for base rows;
   * each row gathers its columns of x and its delta.
   */
  private mixedBatch(x: Tensor, y: Tensor): Tensor {
    const rows = this.ctx.rows!;
    if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
    const { idx, delta } = this.stacked(rows.order);  // (K+1, R), (K+1, O, R)
    const n = x.shape[0]!;
    const x3 = x.reshape(n, -1, this.inFeatures);  // (N, T, I)
    const t = x3.shape[1]!;
    const ri = idx.indexSelect(0, rows.index);  // (N, R)
    const xs = x3.gather(2, ri.unsqueeze(1).expand(n, t, ri.shape[1]!)).to('float32');  // (N, T, R)
    const d = delta.indexSelect(0, rows.index);  // (N, O, R)
    return y.add(xs.matmul(d.transpose(1, 2)).to(y.dtype).view(...y.shape));
  }

  private stacked(order: string[]): { idx: Tensor; delta: Tensor } {
    const key = `${this.ctx.version}:${order.join('\u0000')}`;
    if (this.stackCache && this.stackCache.key === key && !this.training) return this.stackCache;
    const R = Math.max(1, ...order.map((n) => this.columns.get(n)?.cols.length ?? 0));
    const O = this.outFeatures;
    const dev = this.base_layer.weight.device;
    const built = noGrad(() => tidy(() => {
      const idxRows: Tensor[] = [];
      const deltas: Tensor[] = [];
      for (const name of [...order, null]) {
        const s = name !== null ? this.columns.get(name) : undefined;
        const i = zeros([R], { dtype: 'int64', device: dev });
        const d = zeros([O, R], { device: dev });
        if (name !== null && s) {
          i.narrow(0, 0, s.cols.length).copy_(s.idx);
          d.narrow(1, 0, s.cols.length).copy_(this.delta(name));
        }
        idxRows.push(i);
        deltas.push(d);
      }
      return { idx: stack(idxRows), delta: stack(deltas) };
    }));
    this.dropStack();
    this.stackCache = { key, idx: keep(built.idx), delta: keep(built.delta) };
    return this.stackCache;
  }

  private dropStack(): void {
    this.stackCache?.idx.dispose();
    this.stackCache?.delta.dispose();
    this.stackCache = null;
  }

  /** Writes columns (O, R) float32 at idx into the base weight (cast to its dtype). */
  private writeColumns(idx: Tensor, cols: Tensor): void {
    const w = this.base_layer.weight;
    const next = tidy(() => {
      if (this.fanInFanOut) {
        const src = cols.transpose(0, 1).to(w.dtype).contiguous();  // (R, O)
        return w.scatter(0, idx.unsqueeze(1).expand(idx.shape[0]!, w.shape[1]!), src);
      }
      const src = cols.to(w.dtype).contiguous();  // (O, R)
      return w.scatter(1, idx.unsqueeze(0).expand(w.shape[0]!, idx.shape[0]!), src);
    });
    this.base_layer.setParameter('weight', next, w.requiresGrad);
  }

  /**
   * Merge is free: P goes into W's columns S. When an adapter merged before covers some of the same
   * columns, the new one adds its delta P − W₀[:, S] instead (W₀: the columns before any merge), so
   * that the merged layer equals the unmerged sum. Only the touched columns are backed up.
   */
  merge(names: string[]): void {
    const todo = names.filter((n) => this.columns.has(n) && !this.merged.some((m) => m.name === n));
    if (!todo.length) return;
    if (this.ctx.sharedBaseWeights) throw new Error('cannot merge adapters into replicated layers (layer_replication): the copies share their base weights; run unmerged');
    noGrad(() => {
      for (const name of todo) {
        const s = this.columns.get(name)!;
        const overlap = this.merged.some((m) => this.columns.get(m.name)!.cols.some((c) => s.cols.includes(c)));
        const backup = keep(tidy(() => this.baseColumns(s.idx).to(this.base_layer.weight.dtype).contiguous()));  // (O, R) in W's dtype
        const cols = tidy(() => {
          if (!overlap) return this.block(name).clone();
          // W₀[:, S]: the current columns with the earlier merges' contributions taken out.
          const w0 = this.originalColumns(s.idx);
          return this.baseColumns(s.idx).add(this.block(name).sub(w0));
        });
        this.writeColumns(s.idx, cols);
        cols.dispose();
        this.merged.push({ name, idx: keep(s.idx.clone()), backup });
      }
    });
    this.ctx.version++;
  }

  /** The columns idx of the base before any merge (the earliest backup of each column wins). */
  private originalColumns(idx: Tensor): Tensor {
    let w = this.base_layer.weight;
    const owned: Tensor[] = [];
    for (const m of [...this.merged].reverse()) {
      const prev = this.fanInFanOut
        ? w.scatter(0, m.idx.unsqueeze(1).expand(m.idx.shape[0]!, w.shape[1]!), m.backup.transpose(0, 1).contiguous())
        : w.scatter(1, m.idx.unsqueeze(0).expand(w.shape[0]!, m.idx.shape[0]!), m.backup);
      owned.push(prev);
      w = prev;
    }
    return this.baseColumns(idx, w);
  }

  /** Restores the merged columns exactly, newest merge first. */
  unmerge(): void {
    if (!this.merged.length) return;
    noGrad(() => {
      for (const m of [...this.merged].reverse()) {
        this.writeColumns(m.idx, tidy(() => m.backup.to('float32')));
        m.idx.dispose();
        m.backup.dispose();
      }
    });
    this.merged = [];
    this.ctx.version++;
  }

  unload(): Module {
    for (const m of this.merged) { m.idx.dispose(); m.backup.dispose(); }
    this.merged = [];
    this.dropStack();
    for (const name of [...this.columns.keys()]) this.deleteAdapter(name);
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    const s = this.columns.get(name);
    return s ? new Map([[this.indicesKey, s.idx], [this.weightKey, this.block(name)]]) : new Map();
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    if (!this.columns.has(name)) throw new Error(`no adapter "${name}" on ${path}`);
    for (const k of state.keys()) if (k !== this.indicesKey && k !== this.weightKey) throw new Error(`adapter file has ${path}.${k}, which a ${this.peftType} adapter does not use`);
    const idx = state.get(this.indicesKey);
    const p = state.get(this.weightKey);
    if (!idx) throw new Error(`adapter file has no ${path}.${this.indicesKey}`);
    if (!p) throw new Error(`adapter file has no ${path}.${this.weightKey}`);
    if (idx.shape.length !== 1) throw new Error(`${path}.${this.indicesKey}: must be 1-D, got shape [${idx.shape.join(', ')}]`);
    const r = idx.shape[0]!;
    if (p.shape.length !== 2 || p.shape[0] !== this.outFeatures || p.shape[1] !== r) {
      throw new Error(`${path}.${this.weightKey}: the adapter has shape [${p.shape.join(', ')}] but this model needs [${this.outFeatures}, ${r}] (was it made for another base model?)`);
    }
    const cols = [...idx.to('int64', 'cpu').data()].map(Number);
    this.setColumns(name, cols, path);
    const cur = this.block(name);
    noGrad(() => this.blocks.addParam(name, tidy(() => p.to(cur.dtype, cur.device).clone()), cur.requiresGrad));
    this.ctx.version++;
  }

  override dispose(): void {
    this.dropStack();
    for (const m of this.merged) { m.idx.dispose(); m.backup.dispose(); }
    this.merged = [];
    for (const s of this.columns.values()) s.idx.dispose();
    super.dispose();
  }
}
