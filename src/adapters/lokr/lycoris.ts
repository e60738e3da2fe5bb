// What LoKr and LoHa share, as PEFT's tuners/lycoris_utils.py LycorisLayer: per adapter a set of
// parameters in PEFT's ParameterDicts (`lokr_w1.<name>`, `hada_w1_a.<name>`, … saved as `lokr_w1`,
// `hada_w1_a`), a full delta weight ΔW (O, I) = get_delta_weight, and y = base(x) + x ΔWᵀ per active
// adapter. rank_dropout drops rows of ΔW in training, module_dropout skips the whole adapter (both
// drawn from the global generator, as PEFT's torch.rand: manualSeed makes them repeatable).
// Merging adds ΔW to the weight (a copy of the base is kept for an exact unmerge, as LoRA here).
// adapterkit extension: GPT-2's Conv1D ([in, out] weight) is wrapped too (PEFT wraps nn.Linear only);
// ΔW is computed in the [out, in] orientation and transposed when merged.
// Shapes: N rows, T time, I in, O out, K adapters.
import { BaseBackup } from '../base-backup.js';
import { Module, Container } from '../../nn/module.js';
import { Conv1D, type LinearLayer } from '../../nn/layers.js';
import { keep, noGrad, tidy, zeros, stack, rand, empty, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';

export interface LycorisState {
  r: number;
  alpha: number;
  scaling: number;
  rankDropout: number;
  /** LoKr's rank_dropout_scale; LoHa always rescales (PEFT's loha/layer.py divides by drop.mean()). */
  rankDropoutScale: boolean;
  moduleDropout: number;
}

/** kaiming_uniform_(a=√5) on a tensor whose dim 1 is the fan-in (PEFT's parameters): U(±1/√fan_in). */
export function kaimingUniform(shape: number[], seed: number): Tensor {
  const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
  return empty(shape).uniform_(-1 / Math.sqrt(fanIn), 1 / Math.sqrt(fanIn), seed);
}

/** torch.kron of two matrices: A (a, c) ⊗ B (b, d) -> (a b, c d). */
export function kron(A: Tensor, B: Tensor): Tensor {
  const [a, c] = A.shape as [number, number];
  const [b, d] = B.shape as [number, number];
  return A.reshape(a, 1, c, 1).mul(B.reshape(1, b, 1, d)).reshape(a * b, c * d);
}

export abstract class LycorisLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  abstract readonly peftType: string;
  readonly base_layer: LinearLayer;
  readonly adapters = new Map<string, LycorisState>();
  private merged: string[] = [];
  private readonly backup = new BaseBackup();  // the base before the first merge (exact unmerge)
  private stackCache: { key: string; D: Tensor } | null = null;

  constructor(base: LinearLayer, protected readonly ctx: AdapterContext, private readonly keys: readonly string[]) {
    super();
    this.base_layer = this.module('base_layer', base);
    for (const k of keys) this.module(k, new Container());
  }

  get baseLayer(): Module { return this.base_layer; }
  get inFeatures(): number { return this.base_layer.inFeatures; }
  get outFeatures(): number { return this.base_layer.outFeatures; }
  get fanInFanOut(): boolean { return this.base_layer instanceof Conv1D; }
  get mergedAdapters(): readonly string[] { return this.merged; }
  hasAdapter(name: string): boolean { return this.adapters.has(name); }

  protected table(key: string): Container { return this.getSubmodule(key) as Container; }
  /** The adapter's keys that hold a tensor (LoKr uses lokr_w1 or lokr_w1_a/_b, …). */
  usedKeys(name: string): string[] { return this.keys.filter((k) => this.has(name, k)); }
  weightOf(name: string, key: string): Tensor { return this.table(key).getParameter(name); }
  has(name: string, key: string): boolean { return this.table(key).ownParameters().some(([n]) => n === name); }

  /** The base weight in [out, in] orientation. */
  protected baseWeightOI(): Tensor {
    const w = this.base_layer.weight;
    return this.fanInFanOut ? w.transpose(0, 1) : w;
  }

  /** Creates the adapter's parameters (float32 on the base weight's device); called by subclasses. */
  protected addParams(name: string, state: LycorisState, tensors: [string, Tensor][]): void {
    this.adapters.set(name, state);
    const w = this.base_layer.weight;
    const dt = w.dtype === 'float64' ? 'float64' : 'float32';
    noGrad(() => {
      for (const [k, t] of tensors) {
        this.table(k).addParam(name, t.to(dt, w.device).contiguous(), true);
        t.dispose();
      }
    });
    this.ctx.version++;
  }

  abstract addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void;

  /** scaling * ΔW (O, I) without dropout, in the adapter's dtype (PEFT's get_delta_weight before rank dropout). */
  abstract rawDelta(name: string): Tensor;

  /** The expected shape of each key of an adapter (for loading). */
  protected shapesOf(name: string): Map<string, number[]> {
    return new Map(this.usedKeys(name).map((k) => [k, this.weightOf(name, k).shape.slice()]));
  }

  /** ΔW with rank dropout in training (rows of ΔW dropped, rescaled by the kept fraction's mean when asked). */
  deltaWeight(name: string): Tensor {
    const s = this.adapters.get(name)!;
    const d = this.rawDelta(name);
    if (!(this.training && s.rankDropout > 0)) return d;
    const drop = rand([d.shape[0]!], { device: d.device }).gt(s.rankDropout).to(d.dtype, d.device);  // (O)
    const m = drop.mean().item();
    const keepRows = s.rankDropoutScale && m > 0 ? drop.div(m) : drop;
    return d.mul(keepRows.unsqueeze(1));
  }

  deleteAdapter(name: string): void {
    if (!this.adapters.has(name)) return;
    if (this.merged.includes(name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    for (const k of this.keys) if (this.has(name, k)) this.table(k).removeParam(name);
    this.adapters.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    return this.adapters.has(name) ? this.usedKeys(name).map((k) => this.weightOf(name, k)) : [];
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(x);
    }
    const base = this.base_layer.forward(x);  // (…, O)
    if (this.ctx.rows) return this.mixedBatch(x, base);
    if (this.merged.length) return base;  // as PEFT: once merged, the (merged) base only
    let result = base;
    for (const name of this.ctx.active) {
      const s = this.adapters.get(name);
      if (!s) continue;
      // PEFT: `(not training) or torch.rand(1) > module_dropout`.
      if (this.training && s.moduleDropout > 0 && !(rand([1]).item() > s.moduleDropout)) continue;
      const d = this.deltaWeight(name);  // (O, I)
      result = result.add(x.to(d.dtype).matmul(d.transpose(0, 1)).to(result.dtype));
    }
    return result;
  }

  /** Each row with its own adapter (or none): ΔW of `order` stacked (zeros last, for base rows), gathered per row, one batched product. */
  private mixedBatch(x: Tensor, base: Tensor): Tensor {
    const rows = this.ctx.rows!;
    if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
    const D = this.stacked(rows.order);  // (K+1, O, I)
    const n = x.shape[0]!;
    const x3 = x.reshape(n, -1, this.inFeatures).to(D.dtype);  // (N, T, I)
    const y = x3.matmul(D.indexSelect(0, rows.index).transpose(1, 2));  // (N, T, O)
    return base.add(y.to(base.dtype).view(...base.shape));
  }

  private stacked(order: string[]): Tensor {
    const key = `${this.ctx.version}:${order.join('\u0000')}`;
    if (this.stackCache && this.stackCache.key === key && !this.training) return this.stackCache.D;
    const dev = this.base_layer.weight.device;
    const build = () => tidy(() => stack([...order, null].map((n) => (n !== null && this.adapters.has(n) ? this.deltaWeight(n) : zeros([this.outFeatures, this.inFeatures], { device: dev })))));
    if (this.training) return build();  // gradients flow to every row's adapter
    const D = noGrad(build);
    this.dropStack();
    this.stackCache = { key, D: keep(D) };
    return D;
  }

  private dropStack(): void {
    this.stackCache?.D.dispose();
    this.stackCache = null;
  }

  /** W += ΔW (float32, cast back; transposed for Conv1D), after a copy of the base for an exact unmerge. */
  merge(names: string[]): void {
    const todo = names.filter((n) => this.adapters.has(n) && !this.merged.includes(n));
    if (!todo.length) return;
    if (this.ctx.sharedBaseWeights) throw new Error('cannot merge adapters into replicated layers (layer_replication): the copies share their base weights; run unmerged');
    noGrad(() => {
      this.backup.take(this.base_layer);
      for (const name of todo) {
        const w = this.base_layer.weight;
        const nw = tidy(() => {
          const d = this.rawDelta(name).to('float32');
          return w.to('float32').add(this.fanInFanOut ? d.transpose(0, 1) : d).to(w.dtype);
        });
        this.base_layer.setParameter('weight', nw, w.requiresGrad);
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
    this.dropStack();
    for (const name of [...this.adapters.keys()]) this.deleteAdapter(name);
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    if (!this.adapters.has(name)) return new Map();
    return new Map(this.usedKeys(name).map((k) => [k, this.weightOf(name, k)]));
  }

  /**
   * Loads PEFT's keys. The set of keys must be the one this adapter was created with (LoKr: lokr_w1
   * or lokr_w1_a/_b depends on r and decompose_both, as in PEFT) and every shape must match.
   */
  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    if (!this.adapters.has(name)) throw new Error(`no adapter "${name}" on ${path}`);
    const want = this.shapesOf(name);
    for (const k of state.keys()) {
      if (!want.has(k)) throw new Error(`adapter file has ${path}.${k}, which this ${this.peftType} adapter does not use (it has ${[...want.keys()].join(', ')}; check r, decompose_both and decompose_factor)`);
    }
    for (const [k, shape] of want) {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      if (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i])) {
        throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${shape.join(', ')}] (was it made for another base model, r or decompose_factor?)`);
      }
    }
    noGrad(() => {
      for (const k of want.keys()) {
        const cur = this.weightOf(name, k);
        this.table(k).addParam(name, tidy(() => state.get(k)!.to(cur.dtype, cur.device).clone()), cur.requiresGrad);
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
