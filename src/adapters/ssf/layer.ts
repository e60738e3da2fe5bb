// The SSF tuner layer (Lian et al. 2022): wraps a Linear, GPT-2 Conv1D, LayerNorm or RMSNorm (kept as
// `base_layer`) and holds, per adapter name, a scale γ `ssf_scale.<name>` and a shift β
// `ssf_shift.<name>`, both (O), applied to the layer's output: y = γ ⊙ op(x) + β (the paper's
// ssf_ada). Several active adapters apply in order: y = γ₂ ⊙ (γ₁ ⊙ op(x) + β₁) + β₂.
// Shapes: N rows, T time, O features out, K adapters.
import { BaseBackup } from '../base-backup.js';
import { Module, Container } from '../../nn/module.js';
import { Conv1D, LayerNorm, RMSNorm, type LinearLayer } from '../../nn/layers.js';
import { keep, noGrad, tidy, ones, zeros, randn, stack, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import type { SsfConfig } from './config.js';
import { seedFor } from '../lora/init.js';

export type SsfBase = LinearLayer | LayerNorm | RMSNorm;

export class SsfLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly peftType = 'SSF';
  readonly base_layer: SsfBase;
  readonly ssf_scale = this.module('ssf_scale', new Container());
  readonly ssf_shift = this.module('ssf_shift', new Container());
  private readonly names = new Set<string>();
  private path = '';
  private merged: string[] = [];
  private readonly backup = new BaseBackup();  // the base before the first merge (exact unmerge)
  private stackCache: { key: string; scale: Tensor; shift: Tensor } | null = null;

  constructor(base: SsfBase, private readonly ctx: AdapterContext) {
    super();
    this.base_layer = this.module('base_layer', base);
  }

  get baseLayer(): Module { return this.base_layer; }
  /** The width γ and β act on. */
  get features(): number {
    const b = this.base_layer;
    return b instanceof LayerNorm || b instanceof RMSNorm ? b.dim : b.outFeatures;
  }
  get mergedAdapters(): readonly string[] { return this.merged; }
  hasAdapter(name: string): boolean { return this.names.has(name); }
  scale(name: string): Tensor { return this.ssf_scale.getParameter(name); }  // (O)
  shift(name: string): Tensor { return this.ssf_shift.getParameter(name); }  // (O)

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as SsfConfig;
    if (this.names.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    this.path = path;
    const w = this.base_layer.weight;
    const dt = w.dtype === 'float64' ? 'float64' : 'float32';  // trained in float32 over a bf16/f16 base
    const o = this.features;
    const { scale, shift } = noGrad(() => tidy(() => {
      if (c.initSsfWeights === 'identity') return { scale: ones([o], { dtype: dt, device: w.device }), shift: zeros([o], { dtype: dt, device: w.device }) };
      // The paper's init_ssf_scale_shift: normal_(scale, mean=1, std=.02), normal_(shift, std=.02).
      const key = `${path}.${name}`;
      return {
        scale: randn([o], { seed: seedFor(opts.seed, key + '.ssf_scale') }).mul(0.02).add(1).to(dt, w.device),
        shift: randn([o], { seed: seedFor(opts.seed, key + '.ssf_shift') }).mul(0.02).to(dt, w.device),
      };
    }));
    this.ssf_scale.addParam(name, scale, true);
    this.ssf_shift.addParam(name, shift, true);
    this.names.add(name);
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    if (!this.names.has(name)) return;
    if (this.merged.includes(name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    this.ssf_scale.removeParam(name);
    this.ssf_shift.removeParam(name);
    this.names.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    return this.names.has(name) ? [this.scale(name), this.shift(name)] : [];
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(x);
    }
    const y = this.base_layer.forward(x);  // (…, O)
    if (this.ctx.rows) return this.mixedBatch(y);
    if (this.merged.length) return y;  // as PEFT's layers: once merged, the (merged) base only
    let out = y;
    for (const name of this.ctx.active) {
      if (!this.names.has(name)) continue;
      out = out.mul(this.scale(name)).add(this.shift(name));  // float32 (promoted from a bf16 base)
    }
    return out === y ? y : out.to(y.dtype);
  }

  /** Each row with its own adapter (or none): (K+1, O) tables, last row γ = 1, β = 0 (base rows), gathered per row. */
  private mixedBatch(y: Tensor): Tensor {
    const rows = this.ctx.rows!;
    if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
    const { scale, shift } = this.stacked(rows.order);
    const n = y.shape[0]!;
    const g = scale.indexSelect(0, rows.index).unsqueeze(1);  // (N, 1, O)
    const b = shift.indexSelect(0, rows.index).unsqueeze(1);  // (N, 1, O)
    return y.reshape(n, -1, this.features).mul(g).add(b).to(y.dtype).view(...y.shape);  // (N, T, O)
  }

  private stacked(order: string[]): { scale: Tensor; shift: Tensor } {
    const key = `${this.ctx.version}:${order.join('\u0000')}`;
    if (this.stackCache && this.stackCache.key === key && !this.training) return this.stackCache;
    const built = noGrad(() => tidy(() => {
      const dev = this.base_layer.weight.device;
      const o = this.features;
      const live = (n: string | null): n is string => n !== null && this.names.has(n);
      const all = [...order, null];
      return {
        scale: stack(all.map((n) => (live(n) ? this.scale(n) : ones([o], { device: dev })))),  // (K+1, O)
        shift: stack(all.map((n) => (live(n) ? this.shift(n) : zeros([o], { device: dev })))),  // (K+1, O)
      };
    }));
    this.dropStack();
    this.stackCache = { key, scale: keep(built.scale), shift: keep(built.shift) };
    return this.stackCache;
  }

  private dropStack(): void {
    this.stackCache?.scale.dispose();
    this.stackCache?.shift.dispose();
    this.stackCache = null;
  }

  /**
   * W' = diag(γ) W (rows of a Linear's [out, in] weight, columns of a Conv1D's [in, out], entries of a
   * norm's weight) and b' = γ ⊙ b + β, in float32, cast back. A base without a bias (LLaMA's linears,
   * RMSNorm) has nowhere to put β: merging is refused rather than adding a parameter the base
   * architecture does not have. The base is copied first for an exact unmerge.
   */
  merge(names: string[]): void {
    const todo = names.filter((n) => this.names.has(n) && !this.merged.includes(n));
    if (!todo.length) return;
    if (this.ctx.sharedBaseWeights) throw new Error('cannot merge adapters into replicated layers (layer_replication): the copies share their base weights; run unmerged');
    if (this.base_layer instanceof RMSNorm || this.base_layer.bias === null) {
      throw new Error(`cannot merge SSF adapter "${todo[0]}" into ${this.path || 'this layer'}: its ${this.base_layer.constructor.name} has no bias to take the shift β; run it unmerged (or leave this module out of target_modules)`);
    }
    noGrad(() => {
      for (const name of todo) {
        const base = this.base_layer as LinearLayer | LayerNorm;
        const w = base.weight;
        const b = base.bias!;
        this.backup.take(base, true);
        const g = this.scale(name);  // (O)
        const gw = base instanceof Conv1D ? g.unsqueeze(0) : w.ndim === 2 ? g.unsqueeze(1) : g;  // in the weight's layout
        base.setParameter('weight', tidy(() => w.to(g.dtype).mul(gw).to(w.dtype)), w.requiresGrad);
        base.setParameter('bias', tidy(() => b.to(g.dtype).mul(g).add(this.shift(name)).to(b.dtype)), b.requiresGrad);
        this.merged.push(name);
      }
    });
    this.ctx.version++;
  }

  /** Restores the base weight and bias exactly (from the copies taken at the first merge). */
  unmerge(): void {
    if (!this.backup.restore(this.base_layer as LinearLayer | LayerNorm)) return;
    this.merged = [];
    this.ctx.version++;
  }

  unload(): Module {
    this.backup.dispose();
    this.merged = [];
    this.dropStack();
    for (const name of [...this.names]) this.deleteAdapter(name);
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    return this.names.has(name) ? new Map([['ssf_scale', this.scale(name)], ['ssf_shift', this.shift(name)]]) : new Map();
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    if (!this.names.has(name)) throw new Error(`no adapter "${name}" on ${path}`);
    for (const k of state.keys()) if (k !== 'ssf_scale' && k !== 'ssf_shift') throw new Error(`adapter file has ${path}.${k}, which an SSF adapter does not use`);
    const o = this.features;
    for (const k of ['ssf_scale', 'ssf_shift']) {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      if (t.shape.length !== 1 || t.shape[0] !== o) throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${o}] (was it made for another base model?)`);
    }
    noGrad(() => {
      for (const [k, c] of [['ssf_scale', this.ssf_scale], ['ssf_shift', this.ssf_shift]] as const) {
        const cur = c.getParameter(name);
        c.addParam(name, tidy(() => state.get(k)!.to(cur.dtype, cur.device).clone()), cur.requiresGrad);
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
