// The sparse-diff tuner layer shared by SHiRA, LT-SFT and SPT: wraps a Linear or GPT-2 Conv1D (kept
// as `base_layer`) and holds, per adapter, a vector of trainable values and the fixed positions they
// occupy in the weight. Forward: y = base(x) + x ΔWᵀ, where ΔW (O, I) is built at forward time by
// index_add of scaling * values into zeros (gradients reach the values only); several active
// adapters add their deltas in activation order. Merge adds ΔW into the weight (the base is copied
// first, so unmerge restores it bit for bit). On disk only the indices and the values are written.
// Shapes: N rows, T time, I in, O out, n entries, K adapters.
import { BaseBackup } from '../base-backup.js';
import { Module, Container } from '../../nn/module.js';
import { Conv1D, type LinearLayer } from '../../nn/layers.js';
import { keep, noGrad, tidy, zeros, randn, stack, tensor, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import { seedFor } from '../lora/init.js';

/** How a method names and lays out its sparse tensors. */
export interface SparseSpec {
  peftType: string;
  /** State key of the values ("shira_weight", "sft_values"). */
  valuesKey: string;
  /** State key of the positions ("shira_indices", "sft_indices"). */
  indicesKey: string;
  /**
   * 'coo': (2, n) int32 [rows; cols] in the (O, I) orientation (PEFT's shira_indices);
   * 'flat': (n) int64 flat row-major indices into the weight as stored ((O, I) Linear, (I, O) Conv1D).
   */
  layout: 'coo' | 'flat';
  /** Loading must bring exactly the entries this adapter was created with (SHiRA's fixed r*(in+out)). */
  fixedCount: boolean;
}

/** What addAdapter receives as `data`: the positions to train (flat into the stored weight) and initial values. */
export interface SparseInit {
  flat: Tensor | null;
  values?: Tensor;
  /** N(0, 1) initial values seeded per path (PEFT's init_weights=false, for tests). */
  randomValues?: boolean;
}

interface Entry { flat: Tensor; coo: Tensor | null; scaling: number }

export class SparseDiffLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly base_layer: LinearLayer;
  readonly values: Container;
  private readonly entries = new Map<string, Entry>();
  private merged: string[] = [];
  private readonly backup = new BaseBackup();  // the base before the first merge (exact unmerge)

  constructor(base: LinearLayer, private readonly ctx: AdapterContext, readonly spec: SparseSpec) {
    super();
    this.base_layer = this.module('base_layer', base);
    this.values = this.module(spec.valuesKey, new Container());
  }

  get peftType(): string { return this.spec.peftType; }
  get baseLayer(): Module { return this.base_layer; }
  get inFeatures(): number { return this.base_layer.inFeatures; }
  get outFeatures(): number { return this.base_layer.outFeatures; }
  get fanInFanOut(): boolean { return this.base_layer instanceof Conv1D; }
  get mergedAdapters(): readonly string[] { return this.merged; }
  hasAdapter(name: string): boolean { return this.entries.has(name); }
  adapterNamesHere(): string[] { return [...this.entries.keys()]; }

  /** The trainable values of an adapter (n). */
  valuesOf(name: string): Tensor { return this.values.getParameter(name); }
  /** Flat int64 positions in the stored weight (n), sorted ascending. */
  flatIndices(name: string): Tensor { return this.entry(name).flat; }
  /** PEFT's shira_indices (2, n) int32 in (O, I) orientation, from the flat positions. */
  cooIndices(name: string): Tensor {
    const e = this.entry(name);
    if (!e.coo) e.coo = keep(noGrad(() => tidy(() => this.flatToCoo(e.flat))));
    return e.coo;
  }
  scaling(name: string): number { return this.entry(name).scaling; }
  /** PEFT's set_scale: the factor on the values at forward and merge time (1 by default). */
  setScale(name: string, scale: number): void {
    if (!Number.isFinite(scale)) throw new Error(`scale must be a finite number, got ${scale}`);
    this.entry(name).scaling = scale;
    this.ctx.version++;
  }

  private entry(name: string): Entry {
    const e = this.entries.get(name);
    if (!e) throw new Error(`no ${this.peftType} adapter "${name}" on this layer (have: ${[...this.entries.keys()].join(', ') || 'none'})`);
    return e;
  }

  addAdapter(name: string, _config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    if (this.entries.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    const init = opts.data as SparseInit | undefined;
    const w = this.base_layer.weight;
    const dt = w.dtype === 'float64' ? 'float64' : 'float32';
    const flat = keep(noGrad(() => tidy(() => (init?.flat ? init.flat.to('int64', w.device).clone() : tensor(new BigInt64Array(0), { dtype: 'int64', shape: [0] }).to('int64', w.device)))));
    this.checkRange(flat, path);
    const n = flat.numel;
    const v = noGrad(() => tidy(() => (init?.values ? init.values.to(dt, w.device).clone() : zeros([n], { dtype: dt, device: w.device }))));
    if (v.numel !== n) throw new Error(`${path}: ${n} positions but ${v.numel} initial values`);
    this.values.addParam(name, v, true);
    this.entries.set(name, { flat, coo: null, scaling: 1 });
    if (init?.randomValues) this.randomizeValues(name, opts.seed, path);
    this.ctx.version++;
  }

  /** Random N(0, 1) values (PEFT's init_weights=false, for tests). */
  randomizeValues(name: string, seed: number, path: string): void {
    const cur = this.valuesOf(name);
    noGrad(() => this.values.addParam(name, tidy(() => randn(cur.shape, { seed: seedFor(seed, `${path}.${name}.${this.spec.valuesKey}`) }).to(cur.dtype, cur.device)), true));
  }

  deleteAdapter(name: string): void {
    const e = this.entries.get(name);
    if (!e) return;
    if (this.merged.includes(name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    this.values.removeParam(name);
    e.flat.dispose();
    e.coo?.dispose();
    this.entries.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    return this.entries.has(name) ? [this.valuesOf(name)] : [];
  }

  /** ΔW of one adapter in the stored weight's layout, float32 (float64 over a float64 base). */
  deltaWeight(name: string): Tensor {
    const e = this.entry(name);
    const v = this.valuesOf(name);
    const w = this.base_layer.weight;
    const flat = e.flat.device === v.device ? e.flat : e.flat.to('int64', v.device);
    const scaled = e.scaling === 1 ? v : v.mul(e.scaling);
    return zeros([w.numel], { dtype: v.dtype, device: v.device }).indexAdd(0, flat, scaled).view(...w.shape);
  }

  /** x ΔWᵀ for a delta in the stored layout: Linear (O, I) -> x Dᵀ; Conv1D (I, O) -> x D. */
  private apply(x: Tensor, d: Tensor): Tensor {
    return this.fanInFanOut ? x.matmul(d) : x.matmul(d.transpose(0, 1));
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(x);
    }
    if (this.ctx.rows) return this.mixedBatch(x);
    if (this.merged.length) return this.base_layer.forward(x);
    const names = this.ctx.active.filter((n) => this.entries.has(n));
    const y = this.base_layer.forward(x);
    if (!names.length) return y;
    let d: Tensor | null = null;
    for (const n of names) d = d ? d.add(this.deltaWeight(n)) : this.deltaWeight(n);
    const xs = x.to(d!.dtype);
    return y.add(this.apply(xs, d!).to(y.dtype));
  }

  /** Each row with its own adapter (or none): deltas stacked (K+1, …) with zeros last, gathered per row. */
  private mixedBatch(x: Tensor): Tensor {
    const rows = this.ctx.rows!;
    if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
    const y = this.base_layer.forward(x);
    if (!rows.order.some((n) => this.entries.has(n))) return y;
    const w = this.base_layer.weight;
    const dt = w.dtype === 'float64' ? 'float64' : 'float32';
    const table = stack([...rows.order, null].map((n) => (n !== null && this.entries.has(n) ? this.deltaWeight(n) : zeros(w.shape, { dtype: dt, device: w.device }))));
    const per = table.indexSelect(0, rows.index);  // (N, …stored layout)
    const perT = this.fanInFanOut ? per : per.transpose(1, 2);  // (N, I, O)
    const n = x.shape[0]!;
    const xs = x.reshape(n, -1, this.inFeatures).to(dt);  // (N, T, I)
    const out = xs.bmm(perT).view(...y.shape);  // (…, O)
    return y.add(out.to(y.dtype));
  }

  /** Adds each adapter's ΔW into the base weight in the given order (the base is copied first for an exact unmerge). */
  merge(names: string[]): void {
    if (this.ctx.sharedBaseWeights && names.some((n) => this.entries.has(n) && !this.merged.includes(n))) {
      throw new Error('cannot merge adapters into replicated layers (layer_replication): the copies share their base weights; run unmerged');
    }
    noGrad(() => {
      for (const name of names) {
        if (!this.entries.has(name) || this.merged.includes(name)) continue;
        const w = this.base_layer.weight;
        this.backup.take(this.base_layer);
        this.base_layer.setParameter('weight', tidy(() => w.to(this.valuesOf(name).dtype).add(this.deltaWeight(name)).to(w.dtype)), w.requiresGrad);
        this.merged.push(name);
      }
    });
    this.ctx.version++;
  }

  unmerge(): void {
    if (!this.backup.restore(this.base_layer)) return;
    this.merged = [];
    this.ctx.version++;
  }

  unload(): Module {
    this.backup.dispose();
    this.merged = [];
    for (const name of [...this.entries.keys()]) this.deleteAdapter(name);
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    if (!this.entries.has(name)) return new Map();
    const idx = this.spec.layout === 'coo' ? this.cooIndices(name) : this.flatIndices(name);
    return new Map([[this.spec.valuesKey, this.valuesOf(name)], [this.spec.indicesKey, idx]]);
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    if (!this.entries.has(name)) throw new Error(`no adapter "${name}" on ${path}`);
    const { valuesKey: vk, indicesKey: ik } = this.spec;
    for (const k of state.keys()) if (k !== vk && k !== ik) throw new Error(`adapter file has ${path}.${k}, which a ${this.peftType} adapter does not use`);
    const v = state.get(vk);
    const idx = state.get(ik);
    if (!v) throw new Error(`adapter file has no ${path}.${vk}`);
    if (!idx) throw new Error(`adapter file has no ${path}.${ik}`);
    const cur = this.valuesOf(name);
    if (v.ndim !== 1) throw new Error(`${path}.${vk}: the adapter has shape [${v.shape.join(', ')}] but ${this.peftType} values are one vector`);
    if (this.spec.fixedCount && v.numel !== cur.numel) throw new Error(`${path}.${vk}: the adapter has shape [${v.shape.join(', ')}] but this model needs [${cur.numel}] (was it made for another base model or another r?)`);
    const n = v.numel;
    const want = this.spec.layout === 'coo' ? [2, n] : [n];
    if (idx.ndim !== want.length || idx.shape.some((s, i) => s !== want[i])) throw new Error(`${path}.${ik}: the adapter has shape [${idx.shape.join(', ')}] but its ${n} values need [${want.join(', ')}]`);
    const w = this.base_layer.weight;
    // PEFT writes shira_indices as float32 on Windows and reads them back as integers.
    const flat = keep(noGrad(() => tidy(() => (this.spec.layout === 'coo' ? this.cooToFlat(idx.to('int64'), path, ik) : idx.to('int64')).to('int64', w.device).clone())));
    this.checkRange(flat, `${path}.${ik}`);
    const e = this.entry(name);
    e.flat.dispose();
    e.coo?.dispose();
    e.flat = flat;
    e.coo = null;
    noGrad(() => this.values.addParam(name, tidy(() => v.to(cur.dtype, cur.device).clone()), cur.requiresGrad));
    this.ctx.version++;
  }

  private checkRange(flat: Tensor, what: string): void {
    if (!flat.numel) return;
    const numel = this.base_layer.weight.numel;
    const [lo, hi] = noGrad(() => tidy(() => [flat.min().item(), flat.max().item()]));
    if (lo! < 0 || hi! >= numel) throw new Error(`${what}: indices must lie in [0, ${numel}) for this weight of shape [${this.base_layer.weight.shape.join(', ')}], got ${lo}..${hi}`);
  }

  /** Flat positions in the stored weight -> (2, n) int32 [rows; cols] in (O, I) orientation (computed on the host). */
  private flatToCoo(flat: Tensor): Tensor {
    const I = this.inFeatures;
    const O = this.outFeatures;
    const f = flat.to('int64').data() as BigInt64Array;
    const n = f.length;
    const out = new Int32Array(2 * n);
    for (let i = 0; i < n; i++) {
      const v = Number(f[i]);
      // Stored (O, I): row = v / I, col = v % I. Stored (I, O) (Conv1D): col = v / O, row = v % O.
      out[i] = this.fanInFanOut ? v % O : Math.floor(v / I);
      out[n + i] = this.fanInFanOut ? Math.floor(v / O) : v % I;
    }
    return tensor(out, { dtype: 'int32', shape: [2, n] });
  }

  private cooToFlat(coo: Tensor, path: string, key: string): Tensor {
    const I = this.inFeatures;
    const O = this.outFeatures;
    const c = coo.to('int64').data() as BigInt64Array;
    const n = c.length / 2;
    const out = new BigInt64Array(n);
    for (let i = 0; i < n; i++) {
      const r = Number(c[i]);
      const col = Number(c[n + i]);
      if (r < 0 || r >= O || col < 0 || col >= I) throw new Error(`${path}.${key}: entry ${i} is (${r}, ${col}) but rows must lie in [0, ${O}) and columns in [0, ${I})`);
      out[i] = BigInt(this.fanInFanOut ? col * O + r : r * I + col);
    }
    return tensor(out, { dtype: 'int64', shape: [n] });
  }

  override dispose(): void {
    this.backup.dispose();
    for (const e of this.entries.values()) { e.flat.dispose(); e.coo?.dispose(); }
    this.entries.clear();
    super.dispose();
  }
}
