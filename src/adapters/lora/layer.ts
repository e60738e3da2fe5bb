// The LoRA tuner layer: wraps a Linear or GPT-2 Conv1D (kept as `base_layer`) and holds, per adapter
// name, A (r, in) and B (out, r) as `lora_A.<name>` / `lora_B.<name>` (PEFT's module paths), with
// y = base(x) + scaling * B A dropout(x). Variants are strategies chosen per adapter: plain, DoRA
// (a learned magnitude per output row over a detached weight norm) and DyLoRA (nested ranks).
// Shapes: N rows (…), I in, O out, R rank, K adapters.
import { BaseBackup } from '../base-backup.js';
import { Module, Container } from '../../nn/module.js';
import { Linear, Conv1D, Dropout, computeDtype, type LinearLayer } from '../../nn/layers.js';
import { QuantLinear } from '../../quant/linear.js';
import { loftqInit, loftqOptions } from './loftq.js';
import { LoraSlotPool, type SlotSource } from './slot-pool.js';
import { keep, noGrad, tidy, zeros, stack, cat, isGradEnabled, loraGatherAdd, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import { patternValue } from '../targets.js';
import type { Block, Setup } from '../composition.js';
import { LOAD_ONLY_INITS, type LoraConfig } from './config.js';
import { randomInit, pissaInit, cordaInit, oloraInit, seedFor } from './init.js';

interface AdapterState {
  r: number;
  alpha: number;
  rslora: boolean;
  dora: boolean;
  dylora: boolean;
  /** lora_B carries a bias (PEFT's lora_bias). */
  bias: boolean;
  /** PiSSA/CorDA: the initial A, B, so the adapter can be saved relative to the original base. */
  initial: { A: Tensor; B: Tensor } | null;
}

/** What LoRA's runtime puts into ctx.slots.LORA before each forward. */
export interface LoraSlot {
  /** DyLoRA: the rank sampled for this training step. */
  dyloraRank?: number;
}

/**
 * Rows (tokens) up to which an inference batch on the CPU takes the native per-row pass, whether its
 * rows use many adapters or one, instead of batched GEMMs over gathered copies or the plain two GEMMs
 * (rank-8 products are too thin for BLAS: on the 2-core Xeon the pass was 1.6-5x faster from 32 to
 * 2,048 rows, for 256 -> 256 and 768 -> 2304 layers, on 1 and 2 threads).
 */
const GATHER_ROWS = 2048;

export class LoraLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly peftType = 'LORA';
  readonly base_layer: LinearLayer;
  readonly lora_A = this.module('lora_A', new Container());
  readonly lora_B = this.module('lora_B', new Container());
  readonly lora_dropout = this.module('lora_dropout', new Container());
  readonly lora_magnitude_vector = this.module('lora_magnitude_vector', new Container());
  readonly adapters = new Map<string, AdapterState>();
  private merged: string[] = [];
  private readonly backup = new BaseBackup();  // the base before the first merge (exact unmerge)
  private stackCache: { key: string; A: Tensor; B: Tensor; bias: Tensor | null } | null = null;
  private readonly pool: LoraSlotPool;
  /** DyLoRA: the rank used outside training (default: the full rank). */
  dyloraEvalRank: number | null = null;

  constructor(base: LinearLayer, private readonly ctx: AdapterContext) {
    super();
    this.base_layer = this.module('base_layer', base);
    this.pool = new LoraSlotPool(base.inFeatures, base.outFeatures);
  }

  get baseLayer(): Module { return this.base_layer; }
  get inFeatures(): number { return this.base_layer.inFeatures; }
  get outFeatures(): number { return this.base_layer.outFeatures; }
  get fanInFanOut(): boolean { return this.base_layer instanceof Conv1D; }
  get mergedAdapters(): readonly string[] { return this.merged; }
  hasAdapter(name: string): boolean { return this.adapters.has(name); }

  A(name: string): Tensor { return (this.lora_A.getSubmodule(name) as Linear).weight; }  // (R, I)
  B(name: string): Tensor { return (this.lora_B.getSubmodule(name) as Linear).weight; }  // (O, R)
  /** lora_B's bias (lora_bias), or null. */
  Bbias(name: string): Tensor | null { return this.adapters.get(name)?.bias ? (this.lora_B.getSubmodule(name) as Linear).bias : null; }  // (O)
  magnitude(name: string): Tensor { return this.lora_magnitude_vector.getParameter(name); }  // (O)
  /**
   * alpha / r (rsLoRA: alpha / sqrt(r)). DyLoRA keeps the full-rank scaling at every truncation, so
   * the ranks are nested: a rank-b adapter is the first b components of the rank-r one.
   */
  scaling(name: string, rank?: number): number {
    const s = this.adapters.get(name)!;
    const r = s.dylora ? s.r : rank ?? s.r;
    return s.rslora ? s.alpha / Math.sqrt(r) : s.alpha / r;
  }

  /** The base weight in [out, in] orientation (a view for Conv1D). */
  private baseWeightOI(): Tensor {
    const w = this.base_layer.weight;
    return this.fanInFanOut ? w.transpose(0, 1) : w;
  }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as LoraConfig;
    if (this.adapters.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    const r = patternValue(c.rankPattern, path) ?? c.r;
    const alpha = patternValue(c.alphaPattern, path) ?? c.loraAlpha;
    if (LOAD_ONLY_INITS.includes(c.initLoraWeights as string)) {
      throw new Error(`init_lora_weights "${c.initLoraWeights}" is not implemented for creating an adapter (adapters saved with it load fine); use true, "gaussian", "pissa", "pissa_niter_<n>", "olora", "corda" or "loftq"`);
    }
    const state: AdapterState = { r, alpha, rslora: c.useRslora, dora: c.useDora, dylora: c.dylora, bias: c.loraBias, initial: null };
    this.adapters.set(name, state);
    const dt = this.base_layer.weight.dtype;
    const trainDt = dt === 'float64' ? 'float64' : 'float32';  // adapters train in float32 over a bf16/f16 base
    const a = this.lora_A.add(name, new Linear(this.inFeatures, r, { bias: false, dtype: trainDt }));
    const b = this.lora_B.add(name, new Linear(r, this.outFeatures, { bias: c.loraBias, dtype: trainDt }));
    this.lora_dropout.add(name, new Dropout(c.loraDropout));
    const s = this.scaling(name);
    noGrad(() => {
      let init: { A: Tensor; B: Tensor; residual?: Tensor };
      // pissa_niter_N asks PEFT for a randomized SVD with N subspace iterations; the exact SVD used
      // here is what those iterations converge to.
      if (c.initLoraWeights === 'pissa' || /^pissa_niter_\d+$/.test(String(c.initLoraWeights))) init = pissaInit(this.baseWeightOI(), r, s);
      else if (c.initLoraWeights === 'olora') init = oloraInit(this.baseWeightOI(), r, s);
      else if (c.initLoraWeights === 'loftq') {
        if (this.base_layer instanceof QuantLinear) throw new Error(`LoftQ needs ${path}'s full-precision weight, but the base is already quantized: load the model unquantized (adapterkit train --quantize with init_lora_weights "loftq" does this), and LoftQ quantizes the layers it adapts`);
        const lq = loftqInit(this.baseWeightOI(), r, s, loftqOptions(c.extra?.loftq_config));
        init = { A: lq.A, B: lq.B };
        // The base becomes the quantized Q that LoftQ fitted the adapter to.
        const old = this.base_layer;
        const b = old.bias;
        this.setSubmodule('base_layer', new QuantLinear(lq.q, b ? b.detach().clone() : null, computeDtype(dt)));
        old.dispose();
      } else if (c.initLoraWeights === 'corda') {
        // CorDA: the input covariance (I, I) of this layer, collected by the method's prepareAdapter from sample data.
        const cov = opts.data as Tensor | undefined;
        if (!cov) throw new Error(`CorDA needs the input covariance of ${path}: pass sample data (data: batches of input ids) when adding the adapter`);
        init = cordaInit(this.baseWeightOI(), cov, r, s, c.cordaMethod);
      } else init = randomInit(c.initLoraWeights, r, this.inFeatures, this.outFeatures, opts.seed, `${path}.${name}`);
      const dev = this.base_layer.weight.device;  // adapters live on their layer's device
      a.setParameter('weight', init.A.to(trainDt, dev), true);
      b.setParameter('weight', init.B.to(trainDt, dev), true);
      if (c.loraBias) {
        // PEFT zeroes it with B (init true/gaussian); init false keeps nn.Linear's uniform(±1/√r) default.
        const bias = zeros([this.outFeatures], { dtype: trainDt, device: dev });
        if (c.initLoraWeights === false) bias.uniform_(-1 / Math.sqrt(r), 1 / Math.sqrt(r), seedFor(opts.seed, `${path}.${name}.Bbias`));
        b.setParameter('bias', bias, true);
      }
      if (init.residual) {
        // PiSSA/CorDA move the principal part out of the base: the base keeps the residual.
        const res = this.fanInFanOut ? init.residual.transpose(0, 1).contiguous() : init.residual;
        this.base_layer.setParameter('weight', res.to(dt), false);
        state.initial = { A: keep(init.A.to('float32').clone()), B: keep(init.B.to('float32').clone()) };
      }
      for (const t of [init.A, init.B, init.residual]) t?.dispose();
      if (c.useDora) {
        // The magnitude starts at ||W + s B A|| per output row, so the layer starts as the base.
        this.lora_magnitude_vector.addParam(name, tidy(() => this.doraWeightNorm(name)), true);
      }
    });
    this.ctx.version++;
  }

  /** ||W + s B A|| over the input dimension, per output row (PEFT's DoRA get_weight_norm), in float32. */
  private doraWeightNorm(name: string): Tensor {
    const w = this.baseWeightOI().to('float32');
    const delta = this.B(name).matmul(this.A(name)).detach().mul(this.scaling(name));
    return w.add(delta).norm(2, 1);  // (O)
  }

  deleteAdapter(name: string): void {
    if (!this.adapters.has(name)) return;
    if (this.merged.includes(name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    const s = this.adapters.get(name)!;
    s.initial?.A.dispose();
    s.initial?.B.dispose();
    for (const c of [this.lora_A, this.lora_B]) c.getSubmodule(name).dispose();
    this.lora_A.remove(name);
    this.lora_B.remove(name);
    this.lora_dropout.remove(name);
    if (s.dora) this.lora_magnitude_vector.removeParam(name);
    this.adapters.delete(name);
    this.pool.release(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    const s = this.adapters.get(name);
    if (!s) return [];
    return [this.A(name), this.B(name), ...(s.bias ? [this.Bbias(name)!] : []), ...(s.dora ? [this.magnitude(name)] : [])];
  }

  /** The rank a DyLoRA adapter runs at now: sampled per step in training, chosen otherwise. */
  private activeRank(name: string): number {
    const s = this.adapters.get(name)!;
    if (!s.dylora) return s.r;
    const b = this.training ? (this.ctx.slots.LORA as LoraSlot | undefined)?.dyloraRank : this.dyloraEvalRank;
    return Math.min(s.r, Math.max(1, b ?? s.r));
  }

  /** scaling * B A in the base weight's layout, in float32 (DyLoRA: at its active rank). */
  deltaWeight(name: string): Tensor {
    return tidy(() => {
      const k = this.activeRank(name);
      const d = this.B(name).narrow(1, 0, k).matmul(this.A(name).narrow(0, 0, k)).mul(this.scaling(name, k));  // (O, I)
      return this.fanInFanOut ? d.transpose(0, 1).contiguous() : d;
    });
  }

  forward(x: Tensor): Tensor {
    // A training step updates adapter weights in place: the serving slot pool's copies would go stale.
    if (this.training) this.pool.dispose();
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(x);
    }
    let result = this.base_layer.forward(x);  // (…, O)
    if (this.ctx.rows) return this.mixedBatch(x, result);
    // PEFT (lora/layer.py Linear.forward): once any adapter is merged the layer runs its (merged)
    // base only; active adapters that are not merged add nothing until unmerge().
    if (this.merged.length) return result;
    if (this.ctx.composition) {
      // A composition (Average, nested in Stacks): each adapter's update weighted by the Average weights on its path.
      const base = result;
      for (const [name, w] of compositionWeights(this.ctx.composition)) result = this.withAdapter(result, name, x, w, base);
      return result;
    }
    for (const name of this.ctx.active) result = this.withAdapter(result, name, x, 1, result);
    return result;
  }

  /** result + weight * (adapter `name`'s update of x); `base` is the base output DoRA rescales. */
  private withAdapter(result: Tensor, name: string, x: Tensor, weight: number, base: Tensor): Tensor {
    const s = this.adapters.get(name);
    if (!s || this.merged.includes(name)) return result;
    const drop = this.lora_dropout.getSubmodule(name) as Dropout;
    const xd = drop.forward(x);
    const xa = xd.dtype === this.A(name).dtype ? xd : xd.to(this.A(name).dtype);
    const k = this.activeRank(name);
    const A = k === s.r ? this.A(name) : this.A(name).narrow(0, 0, k);
    const B = k === s.r ? this.B(name) : this.B(name).narrow(1, 0, k);
    const lora = xa.matmul(A.transpose(0, 1)).matmul(B.transpose(0, 1));  // (…, O)
    const sc = this.scaling(name, k) * weight;
    if (!s.dora) {
      const bb = this.Bbias(name);
      return result.add((bb ? lora.add(bb) : lora).to(result.dtype).mul(sc));  // lora_B(…) * scaling, bias included
    }
    // DoRA (PEFT dora.py): result += (m/‖W+sBA‖ - 1) * base(x) + m/‖W+sBA‖ * s B A x, norm detached.
    const norm = this.doraWeightNorm(name).detach();
    const scale = this.magnitude(name).div(norm);  // (O)
    let baseNoBias = xd === x ? base : this.base_layer.forward(xd);  // dropout off: reuse base(x)
    const bias = this.base_layer.bias;
    if (bias) baseNoBias = baseNoBias.sub(bias);
    return result.add(scale.sub(1).mul(baseNoBias.to('float32')).mul(weight).add(scale.mul(lora).mul(sc)).to(result.dtype));
  }

  /**
   * Each row with its own adapter (or none), in one batched pass: A and B of every adapter are
   * stacked (zero-padded to the largest rank, B pre-scaled), gathered per row, and applied with two
   * batched products. The base weights are never copied.
   */
  private mixedBatch(x: Tensor, result: Tensor): Tensor {
    const rows = this.ctx.rows!;
    if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
    // CPU inference up to GATHER_ROWS tokens takes the native per-row pass below, on one adapter or many.
    const nativePass = x.numel / this.inFeatures <= GATHER_ROWS && !this.training && !isGradEnabled() && this.base_layer.device === 'cpu';
    // Otherwise every row on the same adapter gets the plain product, with no gathered copies.
    if (rows.order.length === 1 && rows.names.every((n) => n !== null) && !nativePass) {
      const only = rows.order[0]!;
      if (!this.adapters.has(only)) return result;
      if (this.adapters.get(only)!.dora) throw new Error(`adapter "${only}" uses DoRA, which mixed batches do not support (as in PEFT)`);
      return this.withAdapter(result, only, x, 1, result);
    }
    const n = x.shape[0]!;
    const t = x.numel / (n * this.inFeatures);
    if (!this.training && !isGradEnabled() && this.base_layer.device === 'cpu') {
      // Serving: rows index the persistent slot pool (nothing is rebuilt when requests join or leave).
      for (const name of rows.order) if (this.adapters.get(name)?.dora) throw new Error(`adapter "${name}" uses DoRA, which mixed batches do not support (as in PEFT)`);
      const slots = this.pool.slotsFor(rows.order, `${this.ctx.version}:${rows.order.join('\u0000')}`, (name) => this.slotSource(name));
      const anyBias = rows.order.some((name) => this.adapters.get(name)?.bias);
      const { A, Bt: B, bias } = this.pool.tensors;  // (S, R, I), (S, R, O), (S, O)
      const idx = slots.indexSelect(0, rows.index);  // (N) slots
      if (n * t <= GATHER_ROWS) {
        // Decode-sized: one native pass over the rows (no gathered copies, no batched GEMM of tiny matrices).
        const rowsIdx = t === 1 ? idx : idx.unsqueeze(1).expand(n, t).reshape(-1);  // (N*T)
        return loraGatherAdd(result.reshape(n * t, this.outFeatures), x.reshape(n * t, this.inFeatures), A, B, rowsIdx, anyBias ? bias : null).view(...result.shape);
      }
      return this.gathered(x, result, A, B, anyBias ? bias : null, idx);
    }
    const st = this.stacked(rows.order);
    return this.gathered(x, result, st.A, st.B.transpose(1, 2), st.bias, rows.index);
  }

  private slotSource(name: string): SlotSource | null {
    if (!this.adapters.has(name)) return null;
    const k = this.activeRank(name);
    return { A: this.A(name), B: this.B(name), bias: this.Bbias(name), rank: k, scaling: this.scaling(name, k) };
  }

  /** Serving: writes the adapter's slot of the stacked serving tensors now, not in its first step (DoRA has none). */
  prepareMixedBatch(name: string): void {
    const src = this.adapters.get(name)?.dora ? null : this.slotSource(name);
    if (src && this.base_layer.device === 'cpu') this.pool.prepare(name, src);
  }

  /** result + per row: Bt[idx]^T A[idx] x (+ bias[idx]) with two batched products over gathered copies; A (K, R, I), Bt (K, R, O). */
  private gathered(x: Tensor, result: Tensor, A: Tensor, Bt: Tensor, bias: Tensor | null, idx: Tensor): Tensor {
    const n = x.shape[0]!;
    const x3 = x.reshape(n, -1, this.inFeatures);  // (N, T, I)
    const xa = (x3.dtype === A.dtype ? x3 : x3.to(A.dtype)).matmul(A.indexSelect(0, idx).transpose(1, 2));  // (N, T, R)
    let y = xa.matmul(Bt.indexSelect(0, idx));  // (N, T, O)
    if (bias) y = y.add(bias.indexSelect(0, idx).unsqueeze(1));  // lora_bias rows, pre-scaled (N, 1, O)
    return result.add(y.to(result.dtype).view(...result.shape));
  }

  private stacked(order: string[]): { A: Tensor; B: Tensor; bias: Tensor | null } {
    const key = `${this.ctx.version}:${order.join('\u0000')}`;
    if (this.stackCache && this.stackCache.key === key && !this.training) return this.stackCache;
    for (const name of order) {
      if (this.adapters.get(name)?.dora) throw new Error(`adapter "${name}" uses DoRA, which mixed batches do not support (as in PEFT)`);
    }
    const R = Math.max(1, ...order.map((n) => this.adapters.get(n)?.r ?? 0));
    const anyBias = order.some((n) => this.adapters.get(n)?.bias);
    const built = noGrad(() => tidy(() => {
      const As: Tensor[] = [];
      const Bs: Tensor[] = [];
      const bs: Tensor[] = [];
      for (const name of [...order, null]) {
        const a = zeros([R, this.inFeatures]);
        const b = zeros([this.outFeatures, R]);
        const bb = zeros([this.outFeatures]);
        if (name !== null && this.adapters.has(name)) {
          const k = this.activeRank(name);
          a.narrow(0, 0, k).copy_(this.A(name).narrow(0, 0, k));
          b.narrow(1, 0, k).copy_(this.B(name).narrow(1, 0, k).mul(this.scaling(name, k)));
          const lb = this.Bbias(name);
          if (lb) bb.copy_(lb.mul(this.scaling(name, k)));
        }
        As.push(a);
        Bs.push(b);
        bs.push(bb);
      }
      return { A: stack(As), B: stack(Bs), bias: anyBias ? stack(bs) : null };  // (K+1, R, I), (K+1, O, R), (K+1, O)
    }));
    this.dropStack();
    this.stackCache = { key, A: keep(built.A), B: keep(built.B), bias: built.bias ? keep(built.bias) : null };
    return this.stackCache;
  }

  private dropStack(): void {
    this.stackCache?.A.dispose();
    this.stackCache?.B.dispose();
    this.stackCache?.bias?.dispose();
    this.stackCache = null;
  }

  merge(names: string[]): void {
    if (this.ctx.sharedBaseWeights && names.some((n) => this.adapters.has(n) && !this.merged.includes(n))) {
      // PEFT merges in place, so with replicated layers every copy's update would land in the one
      // shared weight; here merging is refused instead (the unmerged forward is exact).
      throw new Error('cannot merge adapters into replicated layers (layer_replication): the copies share their base weights; run unmerged');
    }
    noGrad(() => {
      for (const name of names) {
        const s = this.adapters.get(name);
        if (!s || this.merged.includes(name)) continue;
        const w = this.base_layer.weight;
        this.backup.take(this.base_layer);
        const merged = tidy(() => {
          const w32 = w.to('float32');
          if (!s.dora) return w32.add(this.deltaWeight(name)).to(w.dtype);
          // DoRA: W' = m / ‖W + ΔW‖ · (W + ΔW), per output row.
          const full = this.baseWeightOI().to('float32').add(this.B(name).matmul(this.A(name)).mul(this.scaling(name)));
          const scaled = full.mul(this.magnitude(name).div(full.norm(2, 1)).unsqueeze(1));
          return (this.fanInFanOut ? scaled.transpose(0, 1).contiguous() : scaled).to(w.dtype);
        });
        this.base_layer.setParameter('weight', merged, false);
        const lb = this.Bbias(name);
        if (lb) {
          // PEFT merges lora_bias into the base bias: b += lora_B.bias * scaling (and cannot without one).
          const bias = this.base_layer.bias;
          if (!bias) throw new Error(`cannot merge adapter "${name}" with lora_bias: the base layer has no bias (as in PEFT)`);
          this.backup.take(this.base_layer, true);
          this.base_layer.setParameter('bias', tidy(() => bias.to('float32').add(lb.mul(this.scaling(name))).to(bias.dtype)), bias.requiresGrad);
        }
        this.merged.push(name);
      }
    });
    this.ctx.version++;
  }

  /** Restores the base weight bit for bit (from the copy taken at the first merge). */
  unmerge(): void {
    if (!this.backup.restore(this.base_layer)) return;
    this.merged = [];
    this.ctx.version++;
  }

  unload(): Module {
    this.backup.dispose();
    this.dropStack();
    this.pool.dispose();
    for (const name of [...this.adapters.keys()]) {
      this.merged = this.merged.filter((m) => m !== name);
      this.deleteAdapter(name);
    }
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    const s = this.adapters.get(name);
    if (!s) return new Map();
    const out = new Map<string, Tensor>([['lora_A.weight', this.A(name)], ['lora_B.weight', this.B(name)]]);
    if (s.bias) out.set('lora_B.bias', this.Bbias(name)!);
    if (s.dora) out.set('lora_magnitude_vector', this.magnitude(name));
    return out;
  }

  /** PiSSA/CorDA: A, B that act on the ORIGINAL base (rank 2r): [A; A0] and [B, -B0]. */
  convertedState(name: string): Map<string, Tensor> | null {
    const s = this.adapters.get(name);
    if (!s?.initial) return null;
    return tidy(() => {
      const A2 = cat([this.A(name).detach().to('float32'), s.initial!.A], 0);  // (2R, I)
      const B2 = cat([this.B(name).detach().to('float32'), s.initial!.B.neg()], 1);  // (O, 2R)
      return new Map([['lora_A.weight', A2], ['lora_B.weight', B2]]);
    });
  }

  adapterRank(name: string): number {
    return this.adapters.get(name)?.r ?? 0;
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    const s = this.adapters.get(name);
    if (!s) throw new Error(`no adapter "${name}" on ${path}`);
    const want = new Map<string, number[]>([['lora_A.weight', [s.r, this.inFeatures]], ['lora_B.weight', [this.outFeatures, s.r]]]);
    if (s.dora) want.set('lora_magnitude_vector', [this.outFeatures]);
    if (s.bias) want.set('lora_B.bias', [this.outFeatures]);
    for (const k of state.keys()) if (!want.has(k)) throw new Error(`adapter file has ${path}.${k}, which this adapter's config does not use${k === 'lora_B.bias' ? ' (set lora_bias: true)' : ''}`);
    for (const [k, shape] of want) {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${shape.join(', ')}] (was it made for another base model?)`);
      }
    }
    noGrad(() => {
      const dt = this.A(name).dtype;
      const dev = this.A(name).device;  // read on the CPU, kept on the layer's device
      (this.lora_A.getSubmodule(name) as Linear).setParameter('weight', state.get('lora_A.weight')!.to(dt, dev), true);
      (this.lora_B.getSubmodule(name) as Linear).setParameter('weight', state.get('lora_B.weight')!.to(dt, dev), true);
      if (s.bias) (this.lora_B.getSubmodule(name) as Linear).setParameter('bias', state.get('lora_B.bias')!.to(dt, dev), true);
      if (s.dora) this.lora_magnitude_vector.addParam(name, state.get('lora_magnitude_vector')!.to('float32', dev), true);
    });
    this.ctx.version++;
  }

  override dispose(): void {
    this.dropStack();
    this.pool.dispose();
    this.backup.dispose();
    for (const s of this.adapters.values()) {
      s.initial?.A.dispose();
      s.initial?.B.dispose();
    }
    super.dispose();
  }
}

/**
 * The weight of each adapter in a composition of Stacks and Averages: a Stack adds its children's
 * updates (PEFT's several active adapters), an Average weights them (AdapterHub's Average).
 */
export function compositionWeights(setup: Setup, w = 1, out = new Map<string, number>()): Map<string, number> {
  if (typeof setup === 'string') {
    out.set(setup, (out.get(setup) ?? 0) + w);
    return out;
  }
  const b = setup as Block;
  if (b.kind !== 'Stack' && b.kind !== 'Average') throw new Error(`LoRA applies Stack and Average compositions, not ${b.kind}`);
  b.children.forEach((c, i) => compositionWeights(c, b.kind === 'Average' ? w * b.weights![i]! : w, out));
  return out;
}
