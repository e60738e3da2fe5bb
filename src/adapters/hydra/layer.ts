// The Hydra tuner layer (Kim et al. 2023): wraps a Linear or GPT-2 Conv1D (kept as `base_layer`) and
// holds, per adapter name, a parallel branch A_p (R, I), B_p (O, R) on the layer input and a
// sequential branch A_s (R, O), B_s (O, R) on the layer output (bias included), as Linear modules at
// `hydra_par_A.<name>`, `hydra_par_B.<name>`, `hydra_seq_A.<name>`, `hydra_seq_B.<name>`:
//   y = base(x) + s B_p A_p x + s B_s A_s base(x),   s = hydra_alpha / r.
// Several active adapters each add their branches to the same base output (they do not chain).
// Shapes: N rows, T time, I in, O out, R rank, K adapters.
import { BaseBackup } from '../base-backup.js';
import { Module, Container } from '../../nn/module.js';
import { Linear, Conv1D, Dropout, type LinearLayer } from '../../nn/layers.js';
import { keep, noGrad, tidy, zeros, stack, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import type { HydraConfig } from './config.js';
import { randomInit } from '../lora/init.js';

interface AdapterState { r: number; scaling: number }

const KEYS = ['hydra_par_A.weight', 'hydra_par_B.weight', 'hydra_seq_A.weight', 'hydra_seq_B.weight'] as const;

export class HydraLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly peftType = 'HYDRA';
  readonly base_layer: LinearLayer;
  readonly hydra_par_A = this.module('hydra_par_A', new Container());
  readonly hydra_par_B = this.module('hydra_par_B', new Container());
  readonly hydra_seq_A = this.module('hydra_seq_A', new Container());
  readonly hydra_seq_B = this.module('hydra_seq_B', new Container());
  readonly hydra_dropout = this.module('hydra_dropout', new Container());
  readonly adapters = new Map<string, AdapterState>();
  private merged: string[] = [];
  private readonly backup = new BaseBackup();  // the base before the first merge (exact unmerge)
  private stackCache: { key: string; Ap: Tensor; Bp: Tensor; As: Tensor; Bs: Tensor } | null = null;

  constructor(base: LinearLayer, private readonly ctx: AdapterContext) {
    super();
    this.base_layer = this.module('base_layer', base);
  }

  get baseLayer(): Module { return this.base_layer; }
  get inFeatures(): number { return this.base_layer.inFeatures; }
  get outFeatures(): number { return this.base_layer.outFeatures; }
  get fanInFanOut(): boolean { return this.base_layer instanceof Conv1D; }
  get mergedAdapters(): readonly string[] { return this.merged; }
  hasAdapter(name: string): boolean { return this.adapters.has(name); }
  scaling(name: string): number { return this.adapters.get(name)!.scaling; }

  private container(key: (typeof KEYS)[number]): Container {
    return this.getSubmodule(key.slice(0, -'.weight'.length)) as Container;
  }
  /** The four weights: A_p (R, I), B_p (O, R), A_s (R, O), B_s (O, R). */
  weights(name: string): { Ap: Tensor; Bp: Tensor; As: Tensor; Bs: Tensor } {
    const w = (c: Container) => (c.getSubmodule(name) as Linear).weight;
    return { Ap: w(this.hydra_par_A), Bp: w(this.hydra_par_B), As: w(this.hydra_seq_A), Bs: w(this.hydra_seq_B) };
  }
  private shapes(name: string): number[][] {
    const r = this.adapters.get(name)!.r;
    return [[r, this.inFeatures], [this.outFeatures, r], [r, this.outFeatures], [this.outFeatures, r]];
  }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as HydraConfig;
    if (this.adapters.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    const r = c.r;
    this.adapters.set(name, { r, scaling: c.hydraAlpha / r });
    const w = this.base_layer.weight;
    const dt = w.dtype === 'float64' ? 'float64' : 'float32';  // trained in float32 over a bf16/f16 base
    const I = this.inFeatures;
    const O = this.outFeatures;
    const mods = [
      this.hydra_par_A.add(name, new Linear(I, r, { bias: false, dtype: dt })),
      this.hydra_par_B.add(name, new Linear(r, O, { bias: false, dtype: dt })),
      this.hydra_seq_A.add(name, new Linear(O, r, { bias: false, dtype: dt })),
      this.hydra_seq_B.add(name, new Linear(r, O, { bias: false, dtype: dt })),
    ];
    this.hydra_dropout.add(name, new Dropout(c.hydraDropout));
    noGrad(() => {
      // LoRA's init per branch: kaiming-uniform(a=√5) A (bound 1/√fan_in: 1/√I parallel, 1/√O
      // sequential), zero B, so the layer starts as the base (random B with init false).
      const par = randomInit(c.initHydraWeights, r, I, O, opts.seed, `${path}.${name}.hydra_par`);
      const seq = randomInit(c.initHydraWeights, r, O, O, opts.seed, `${path}.${name}.hydra_seq`);
      [par.A, par.B, seq.A, seq.B].forEach((t, i) => mods[i]!.setParameter('weight', t.to(dt, w.device), true));
      for (const t of [par.A, par.B, seq.A, seq.B]) t.dispose();
    });
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    if (!this.adapters.has(name)) return;
    if (this.merged.includes(name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    for (const c of [this.hydra_par_A, this.hydra_par_B, this.hydra_seq_A, this.hydra_seq_B]) {
      c.getSubmodule(name).dispose();
      c.remove(name);
    }
    this.hydra_dropout.remove(name);
    this.adapters.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    if (!this.adapters.has(name)) return [];
    const { Ap, Bp, As, Bs } = this.weights(name);
    return [Ap, Bp, As, Bs];
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(x);
    }
    const base = this.base_layer.forward(x);  // (…, O)
    if (this.ctx.rows) return this.mixedBatch(x, base);
    if (this.merged.length) return base;  // as PEFT's layers: once merged, the (merged) base only
    let result = base;
    for (const name of this.ctx.active) {
      if (!this.adapters.has(name)) continue;
      const { Ap, Bp, As, Bs } = this.weights(name);
      const drop = this.hydra_dropout.getSubmodule(name) as Dropout;
      const xp = drop.forward(x.to(Ap.dtype));  // (…, I)
      const xs = drop.forward(base.to(As.dtype));  // (…, O) the sequential branch reads the base output
      const par = xp.matmul(Ap.transpose(0, 1)).matmul(Bp.transpose(0, 1));  // (…, O)
      const seq = xs.matmul(As.transpose(0, 1)).matmul(Bs.transpose(0, 1));  // (…, O)
      result = result.add(par.add(seq).mul(this.scaling(name)).to(result.dtype));
    }
    return result;
  }

  /** Each row with its own adapter (or none): the four weights of `order` stacked (zero-padded to the largest rank, B pre-scaled; last entry zeros for base rows), gathered per row, batched products. */
  private mixedBatch(x: Tensor, base: Tensor): Tensor {
    const rows = this.ctx.rows!;
    if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
    const { Ap, Bp, As, Bs } = this.stacked(rows.order);
    const idx = rows.index;  // (N)
    const n = x.shape[0]!;
    const x3 = x.reshape(n, -1, this.inFeatures).to(Ap.dtype);  // (N, T, I)
    const b3 = base.reshape(n, -1, this.outFeatures).to(As.dtype);  // (N, T, O)
    const par = x3.matmul(Ap.indexSelect(0, idx).transpose(1, 2)).matmul(Bp.indexSelect(0, idx).transpose(1, 2));  // (N, T, O)
    const seq = b3.matmul(As.indexSelect(0, idx).transpose(1, 2)).matmul(Bs.indexSelect(0, idx).transpose(1, 2));  // (N, T, O)
    return base.add(par.add(seq).to(base.dtype).view(...base.shape));
  }

  private stacked(order: string[]): { Ap: Tensor; Bp: Tensor; As: Tensor; Bs: Tensor } {
    const key = `${this.ctx.version}:${order.join('\u0000')}`;
    if (this.stackCache && this.stackCache.key === key && !this.training) return this.stackCache;
    const R = Math.max(1, ...order.map((n) => this.adapters.get(n)?.r ?? 0));
    const I = this.inFeatures;
    const O = this.outFeatures;
    const dev = this.base_layer.weight.device;
    const built = noGrad(() => tidy(() => {
      const parts: Tensor[][] = [[], [], [], []];
      for (const name of [...order, null]) {
        const t = [zeros([R, I], { device: dev }), zeros([O, R], { device: dev }), zeros([R, O], { device: dev }), zeros([O, R], { device: dev })];
        const s = name !== null ? this.adapters.get(name) : undefined;
        if (name !== null && s) {
          const { Ap, Bp, As, Bs } = this.weights(name);
          t[0]!.narrow(0, 0, s.r).copy_(Ap);
          t[1]!.narrow(1, 0, s.r).copy_(Bp.mul(s.scaling));
          t[2]!.narrow(0, 0, s.r).copy_(As);
          t[3]!.narrow(1, 0, s.r).copy_(Bs.mul(s.scaling));
        }
        t.forEach((v, i) => parts[i]!.push(v));
      }
      const [Ap, Bp, As, Bs] = parts.map((p) => stack(p));  // (K+1, R, I), (K+1, O, R), (K+1, R, O), (K+1, O, R)
      return { Ap: Ap!, Bp: Bp!, As: As!, Bs: Bs! };
    }));
    this.dropStack();
    this.stackCache = { key, Ap: keep(built.Ap), Bp: keep(built.Bp), As: keep(built.As), Bs: keep(built.Bs) };
    return this.stackCache;
  }

  private dropStack(): void {
    const c = this.stackCache;
    for (const t of c ? [c.Ap, c.Bp, c.As, c.Bs] : []) t.dispose();
    this.stackCache = null;
  }

  /**
   * W' = W + s B_p A_p + s B_s A_s W₀ and b' = b + s B_s A_s b₀ (float32, cast back), with W₀, b₀ the
   * base before any merge, so merging several adapters gives exactly the sum the unmerged forward
   * computes. The base is copied first for an exact unmerge.
   */
  merge(names: string[]): void {
    const todo = names.filter((n) => this.adapters.has(n) && !this.merged.includes(n));
    if (!todo.length) return;
    if (this.ctx.sharedBaseWeights) throw new Error('cannot merge adapters into replicated layers (layer_replication): the copies share their base weights; run unmerged');
    noGrad(() => {
      this.backup.take(this.base_layer, true);
      const w0 = this.backup.weight!;
      const b0 = this.backup.bias;
      for (const name of todo) {
        const w = this.base_layer.weight;
        const { Ap, Bp, As, Bs } = this.weights(name);
        const s = this.scaling(name);
        const merged = tidy(() => {
          const W0 = (this.fanInFanOut ? w0.transpose(0, 1) : w0).to('float32');  // (O, I)
          const seq = Bs.matmul(As);  // (O, O)
          const delta = Bp.matmul(Ap).add(seq.matmul(W0)).mul(s);  // (O, I)
          return w.to('float32').add(this.fanInFanOut ? delta.transpose(0, 1) : delta).to(w.dtype);
        });
        this.base_layer.setParameter('weight', merged, w.requiresGrad);
        const b = this.base_layer.bias;
        if (b && b0) {
          const nb = tidy(() => b.to('float32').add(Bs.matmul(As.matmul(b0.to('float32').unsqueeze(1))).squeeze(1).mul(s)).to(b.dtype));  // (O)
          this.base_layer.setParameter('bias', nb, b.requiresGrad);
        }
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
    for (const name of [...this.adapters.keys()]) this.deleteAdapter(name);
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    if (!this.adapters.has(name)) return new Map();
    const { Ap, Bp, As, Bs } = this.weights(name);
    return new Map(KEYS.map((k, i) => [k, [Ap, Bp, As, Bs][i]!]));
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    if (!this.adapters.has(name)) throw new Error(`no adapter "${name}" on ${path}`);
    for (const k of state.keys()) if (!(KEYS as readonly string[]).includes(k)) throw new Error(`adapter file has ${path}.${k}, which a Hydra adapter does not use`);
    const shapes = this.shapes(name);
    KEYS.forEach((k, i) => {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      const want = shapes[i]!;
      if (t.shape.length !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
        throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${want.join(', ')}] (was it made for another base model or another r?)`);
      }
    });
    noGrad(() => {
      for (const k of KEYS) {
        const lin = this.container(k).getSubmodule(name) as Linear;
        const cur = lin.weight;
        lin.setParameter('weight', tidy(() => state.get(k)!.to(cur.dtype, cur.device).clone()), cur.requiresGrad);
      }
    });
    this.ctx.version++;
  }

  override dispose(): void {
    this.dropStack();
    this.backup.dispose();
    super.dispose();
  }
}
