// The (IA)³ tuner layer (Liu et al. 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and
// Cheaper than In-Context Learning"), as PEFT's ia3/layer.py Linear: wraps a Linear or GPT-2 Conv1D
// (kept as `base_layer`) and holds, per adapter name, one learned vector `ia3_l.<name>`:
//   - a non-feedforward layer scales its OUTPUT, bias included:  y = l ⊙ (W x + b),  l: (O, 1)
//   - a feedforward layer scales its INPUT:                      y = W (l ⊙ x) + b,  l: (1, I)
// Several active adapters multiply their vectors. Shapes: N rows, T time, I in, O out, K adapters.
import { BaseBackup } from '../base-backup.js';
import { Module, Container } from '../../nn/module.js';
import { Conv1D, type LinearLayer } from '../../nn/layers.js';
import { keep, noGrad, tidy, ones, randn, stack, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import { isFeedforward, type Ia3Config } from './config.js';
import { seedFor } from '../lora/init.js';

export class Ia3Layer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly peftType = 'IA3';
  readonly base_layer: LinearLayer;
  readonly ia3_l = this.module('ia3_l', new Container());
  /** Per adapter: true when it scales the input (PEFT's is_feedforward). */
  readonly feedforward = new Map<string, boolean>();
  private merged: string[] = [];
  private readonly backup = new BaseBackup();  // the base before the first merge (exact unmerge)
  private stackCache: { key: string; input: Tensor | null; output: Tensor | null } | null = null;

  constructor(base: LinearLayer, private readonly ctx: AdapterContext) {
    super();
    this.base_layer = this.module('base_layer', base);
  }

  get baseLayer(): Module { return this.base_layer; }
  get inFeatures(): number { return this.base_layer.inFeatures; }
  get outFeatures(): number { return this.base_layer.outFeatures; }
  get fanInFanOut(): boolean { return this.base_layer instanceof Conv1D; }
  get mergedAdapters(): readonly string[] { return this.merged; }
  hasAdapter(name: string): boolean { return this.feedforward.has(name); }

  /** The learned vector: (1, I) feedforward, (O, 1) otherwise (PEFT's shapes, saved as such). */
  vector(name: string): Tensor { return this.ia3_l.getParameter(name); }
  private shapeOf(name: string): number[] { return this.feedforward.get(name) ? [1, this.inFeatures] : [this.outFeatures, 1]; }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as Ia3Config;
    if (this.feedforward.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    const ff = isFeedforward(path, c.feedforwardModules);
    this.feedforward.set(name, ff);
    const shape = this.shapeOf(name);
    const w = this.base_layer.weight;
    const dt = w.dtype === 'float64' ? 'float64' : 'float32';  // PEFT upcasts bf16/f16 adapter weights to float32
    const l = noGrad(() => c.initIa3Weights
      ? ones(shape, { dtype: dt, device: w.device })
      // PEFT's update_layer draws torch.randn and keeps it when init_ia3_weights is false.
      : randn(shape, { seed: seedFor(opts.seed, `${path}.${name}.ia3_l`) }).to(dt, w.device));
    this.ia3_l.addParam(name, l, true);
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    if (!this.feedforward.has(name)) return;
    if (this.merged.includes(name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    this.ia3_l.removeParam(name);
    this.feedforward.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    return this.feedforward.has(name) ? [this.vector(name)] : [];
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(x);
    }
    if (this.ctx.rows) return this.mixedBatch(x);
    // As PEFT: once an adapter is merged the layer runs its (merged) base only.
    if (this.merged.length) return this.base_layer.forward(x);
    let inScale: Tensor | null = null;  // (I)
    let outScale: Tensor | null = null;  // (O)
    for (const name of this.ctx.active) {
      const ff = this.feedforward.get(name);
      if (ff === undefined) continue;
      const l = this.vector(name).flatten();
      if (ff) inScale = inScale ? inScale.mul(l) : l;
      else outScale = outScale ? outScale.mul(l) : l;
    }
    // PEFT: the input goes to the vector's dtype (float32), is scaled, and returns to its own dtype.
    const xs = inScale ? x.to(inScale.dtype).mul(inScale).to(x.dtype) : x;  // (…, I)
    const y = this.base_layer.forward(xs);  // (…, O)
    return outScale ? y.mul(outScale).to(y.dtype) : y;
  }

  /**
   * Each row with its own adapter (or none) in one pass: the vectors of `order` are stacked into
   * (K+1, I) input and (K+1, O) output tables whose last row is ones (the base rows), gathered per row.
   */
  private mixedBatch(x: Tensor): Tensor {
    const rows = this.ctx.rows!;
    if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
    const { input, output } = this.stacked(rows.order);
    const n = x.shape[0]!;
    let xs = x;
    if (input) {
      const s = input.indexSelect(0, rows.index);  // (N, I)
      xs = x.reshape(n, -1, this.inFeatures).to(s.dtype).mul(s.unsqueeze(1)).to(x.dtype).view(...x.shape);  // (N, T, I)
    }
    const y = this.base_layer.forward(xs);  // (…, O)
    if (!output) return y;
    const s = output.indexSelect(0, rows.index);  // (N, O)
    return y.reshape(n, -1, this.outFeatures).mul(s.unsqueeze(1)).to(y.dtype).view(...y.shape);
  }

  private stacked(order: string[]): { input: Tensor | null; output: Tensor | null } {
    const key = `${this.ctx.version}:${order.join('\u0000')}`;
    if (this.stackCache && this.stackCache.key === key && !this.training) return this.stackCache;
    const has = (ff: boolean) => order.some((n) => this.feedforward.get(n) === ff);
    const built = noGrad(() => tidy(() => {
      const table = (ff: boolean, width: number) => {
        const dev = this.base_layer.weight.device;
        const rowsOf = [...order, null].map((n) => (n !== null && this.feedforward.get(n) === ff ? this.vector(n).flatten() : ones([width], { device: dev })));
        return stack(rowsOf);  // (K+1, width)
      };
      return { input: has(true) ? table(true, this.inFeatures) : null, output: has(false) ? table(false, this.outFeatures) : null };
    }));
    this.dropStack();
    this.stackCache = { key, input: built.input ? keep(built.input) : null, output: built.output ? keep(built.output) : null };
    return this.stackCache;
  }

  private dropStack(): void {
    this.stackCache?.input?.dispose();
    this.stackCache?.output?.dispose();
    this.stackCache = null;
  }

  /**
   * PEFT's merge: W ⊙ l with l transposed for Conv1D (the [in, out] layout), computed in float32 and
   * cast back; a non-feedforward vector scales the bias too. The base is copied first so that
   * unmerge() restores it bit for bit (PEFT divides by l + 1e-8, which is inexact).
   */
  merge(names: string[]): void {
    if (this.ctx.sharedBaseWeights && names.some((n) => this.feedforward.has(n) && !this.merged.includes(n))) {
      throw new Error('cannot merge adapters into replicated layers (layer_replication): the copies share their base weights; run unmerged');
    }
    noGrad(() => {
      for (const name of names) {
        const ff = this.feedforward.get(name);
        if (ff === undefined || this.merged.includes(name)) continue;
        const w = this.base_layer.weight;
        const b = this.base_layer.bias;
        this.backup.take(this.base_layer, true);
        const l = this.vector(name);  // (1, I) or (O, 1)
        const lw = this.fanInFanOut ? l.transpose(0, 1) : l;  // in the weight's layout
        this.base_layer.setParameter('weight', tidy(() => w.to(l.dtype).mul(lw).to(w.dtype)), w.requiresGrad);
        if (!ff && b) this.base_layer.setParameter('bias', tidy(() => b.to(l.dtype).mul(l.reshape(-1)).to(b.dtype)), b.requiresGrad);
        this.merged.push(name);
      }
    });
    this.ctx.version++;
  }

  /** Restores the base weight and bias exactly (from the copies taken at the first merge). */
  unmerge(): void {
    if (!this.backup.restore(this.base_layer)) return;
    this.merged = [];
    this.ctx.version++;
  }

  unload(): Module {
    this.backup.dispose();
    this.merged = [];
    this.dropStack();
    for (const name of [...this.feedforward.keys()]) this.deleteAdapter(name);
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    return this.feedforward.has(name) ? new Map([['ia3_l', this.vector(name)]]) : new Map();
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    if (!this.feedforward.has(name)) throw new Error(`no adapter "${name}" on ${path}`);
    for (const k of state.keys()) if (k !== 'ia3_l') throw new Error(`adapter file has ${path}.${k}, which an IA3 adapter does not use`);
    const t = state.get('ia3_l');
    if (!t) throw new Error(`adapter file has no ${path}.ia3_l`);
    const want = this.shapeOf(name);
    if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
      const other = this.feedforward.get(name) ? 'a non-feedforward' : 'a feedforward';
      throw new Error(`${path}.ia3_l: the adapter has shape [${t.shape.join(', ')}] but this model needs [${want.join(', ')}] (was it made for another base model, or with ${path} as ${other} module? check feedforward_modules)`);
    }
    const cur = this.vector(name);
    // A copy: the module owns its parameter, whatever the caller does with `t` afterwards.
    noGrad(() => this.ia3_l.addParam(name, tidy(() => t.to(cur.dtype, cur.device).clone()), cur.requiresGrad));
    this.ctx.version++;
  }

  override dispose(): void {
    this.dropStack();
    this.backup.dispose();
    super.dispose();
  }
}
