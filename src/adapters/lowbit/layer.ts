// The low-bit LoRA tuner layer: wraps a Linear or GPT-2 Conv1D (kept as `base_layer`) and holds, per
// adapter name, float32 latent weights A (R, I) at `lora_A.<name>` and B (O, R) at `lora_B.<name>`
// that the forward fake-quantizes per row to `bits` bits (straight-through estimator while training):
//   y = base(x) + s · drop(x) Q(A)ᵀ Q(B)ᵀ,   s = lora_alpha / r.
// Files hold `lora_A.qweight` / `lora_B.qweight` (packed codes, see quant.ts) and `lora_A.scales` /
// `lora_B.scales` (float32, (rows, 1)); loading sets the latent weights to code · scale, which the
// forward quantizes back to the same values (to rounding of the recomputed scale, ≤ 1 ulp).
// Shapes: N rows, T time, I in, O out, R rank, K adapters.
import { BaseBackup } from '../base-backup.js';
import { Module, Container } from '../../nn/module.js';
import { Conv1D, Dropout, type LinearLayer } from '../../nn/layers.js';
import { keep, noGrad, tidy, zeros, stack, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import { randomInit } from '../lora/init.js';
import type { LowbitLoraConfig } from './config.js';
import { quantize, fakeQuant, steQuant, codesTensor, codesShape, codesFromTensor, dequantize } from './quant.js';

interface AdapterState { r: number; scaling: number; bits: number }

const KEYS = ['lora_A.qweight', 'lora_A.scales', 'lora_B.qweight', 'lora_B.scales'] as const;

export class LowbitLoraLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly peftType = 'LOWBIT_LORA';
  readonly base_layer: LinearLayer;
  readonly lora_A = this.module('lora_A', new Container());
  readonly lora_B = this.module('lora_B', new Container());
  readonly lora_dropout = this.module('lora_dropout', new Container());
  readonly adapters = new Map<string, AdapterState>();
  private merged: string[] = [];
  private readonly backup = new BaseBackup();  // the base before the first merge (exact unmerge)
  private stackCache: { key: string; A: Tensor; B: Tensor } | null = null;
  private exported = new Map<string, Tensor[]>();  // file tensors handed out by adapterState (freed on the next call)

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
  bits(name: string): number { return this.adapters.get(name)!.bits; }
  scaling(name: string): number { return this.adapters.get(name)!.scaling; }

  /** The latent (float32) weights A (R, I) and B (O, R). */
  weights(name: string): { A: Tensor; B: Tensor } {
    return { A: this.lora_A.getParameter(name), B: this.lora_B.getParameter(name) };
  }

  /** The weights the layer computes with: Q(A), Q(B) (STE while training, plain values otherwise). */
  quantized(name: string): { A: Tensor; B: Tensor } {
    const { A, B } = this.weights(name);
    const b = this.bits(name);
    const q = (w: Tensor) => (this.training && w.requiresGrad ? steQuant(w, b) : fakeQuant(w, b));
    return { A: q(A), B: q(B) };
  }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as LowbitLoraConfig;
    if (this.adapters.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    const r = c.r;
    this.adapters.set(name, { r, scaling: c.loraAlpha / r, bits: c.bits });
    const dev = this.base_layer.weight.device;
    noGrad(() => {
      const { A, B } = randomInit(c.initLoraWeights, r, this.inFeatures, this.outFeatures, opts.seed, `${path}.${name}.lora`);
      this.lora_A.addParam(name, tidy(() => A.to('float32', dev).contiguous()), true);
      this.lora_B.addParam(name, tidy(() => B.to('float32', dev).contiguous()), true);
      A.dispose();
      B.dispose();
    });
    this.lora_dropout.add(name, new Dropout(c.loraDropout));
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    if (!this.adapters.has(name)) return;
    if (this.merged.includes(name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    this.lora_A.removeParam(name);
    this.lora_B.removeParam(name);
    this.lora_dropout.remove(name);
    this.exported.get(name)?.forEach((t) => t.dispose());
    this.exported.delete(name);
    this.adapters.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    if (!this.adapters.has(name)) return [];
    const { A, B } = this.weights(name);
    return [A, B];
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(x);
    }
    const y = this.base_layer.forward(x);  // (…, O)
    if (this.ctx.rows) return this.mixedBatch(x, y);
    if (this.merged.length) return y;  // once merged, the (merged) base only, as PEFT's layers
    let out = y;
    for (const name of this.ctx.active) {
      if (!this.adapters.has(name)) continue;
      const { A, B } = this.quantized(name);
      const drop = this.lora_dropout.getSubmodule(name) as Dropout;
      const d = drop.forward(x.to('float32')).matmul(A.transpose(0, 1)).matmul(B.transpose(0, 1)).mul(this.scaling(name));  // (…, O)
      out = out.add(d.to(y.dtype));
    }
    return out;
  }

  /** Each row with its own adapter (or none): Q(A), s·Q(B) of `order` stacked, zero-padded to the largest rank (last entry zeros for base rows), gathered per row. */
  private mixedBatch(x: Tensor, y: Tensor): Tensor {
    const rows = this.ctx.rows!;
    if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
    const { A, B } = this.stacked(rows.order);  // (K+1, R, I), (K+1, O, R)
    const n = x.shape[0]!;
    const x3 = x.reshape(n, -1, this.inFeatures).to('float32');  // (N, T, I)
    const d = x3.matmul(A.indexSelect(0, rows.index).transpose(1, 2)).matmul(B.indexSelect(0, rows.index).transpose(1, 2));  // (N, T, O)
    return y.add(d.to(y.dtype).view(...y.shape));
  }

  private stacked(order: string[]): { A: Tensor; B: Tensor } {
    const key = `${this.ctx.version}:${order.join('\u0000')}`;
    if (this.stackCache && this.stackCache.key === key && !this.training) return this.stackCache;
    const R = Math.max(1, ...order.map((n) => this.adapters.get(n)?.r ?? 0));
    const I = this.inFeatures;
    const O = this.outFeatures;
    const dev = this.base_layer.weight.device;
    const built = noGrad(() => tidy(() => {
      const As: Tensor[] = [];
      const Bs: Tensor[] = [];
      for (const name of [...order, null]) {
        const a = zeros([R, I], { device: dev });
        const b = zeros([O, R], { device: dev });
        const s = name !== null ? this.adapters.get(name) : undefined;
        if (name !== null && s) {
          const { A, B } = this.weights(name);
          a.narrow(0, 0, s.r).copy_(fakeQuant(A, s.bits));
          b.narrow(1, 0, s.r).copy_(fakeQuant(B, s.bits).mul(s.scaling));
        }
        As.push(a);
        Bs.push(b);
      }
      return { A: stack(As), B: stack(Bs) };
    }));
    this.dropStack();
    this.stackCache = { key, A: keep(built.A), B: keep(built.B) };
    return this.stackCache;
  }

  private dropStack(): void {
    this.stackCache?.A.dispose();
    this.stackCache?.B.dispose();
    this.stackCache = null;
  }

  /** W' = W + s · Q(B) Q(A) (float32, cast back; transposed for Conv1D); the base is copied first for an exact unmerge. */
  merge(names: string[]): void {
    const todo = names.filter((n) => this.adapters.has(n) && !this.merged.includes(n));
    if (!todo.length) return;
    if (this.ctx.sharedBaseWeights) throw new Error('cannot merge adapters into replicated layers (layer_replication): the copies share their base weights; run unmerged');
    noGrad(() => {
      this.backup.take(this.base_layer);
      for (const name of todo) {
        const w = this.base_layer.weight;
        const next = tidy(() => {
          const { A, B } = this.weights(name);
          const b = this.bits(name);
          const delta = fakeQuant(B, b).matmul(fakeQuant(A, b)).mul(this.scaling(name));  // (O, I)
          return w.to('float32').add(this.fanInFanOut ? delta.transpose(0, 1) : delta).to(w.dtype);
        });
        this.base_layer.setParameter('weight', next, w.requiresGrad);
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

  /** The packed codes and scales of A and B (new tensors, owned by the layer until the next call). */
  adapterState(name: string): Map<string, Tensor> {
    if (!this.adapters.has(name)) return new Map();
    this.exported.get(name)?.forEach((t) => t.dispose());
    const b = this.bits(name);
    const { A, B } = this.weights(name);
    const out = noGrad(() => tidy(() => {
      const qa = quantize(A, b);
      const qb = quantize(B, b);
      return [codesTensor(qa.codes, b), qa.scale.contiguous(), codesTensor(qb.codes, b), qb.scale.contiguous()];
    }));
    out.forEach((t) => keep(t));
    this.exported.set(name, out);
    return new Map(KEYS.map((k, i) => [k, out[i]!]));
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    const s = this.adapters.get(name);
    if (!s) throw new Error(`no adapter "${name}" on ${path}`);
    for (const k of state.keys()) if (!(KEYS as readonly string[]).includes(k)) throw new Error(`adapter file has ${path}.${k}, which a low-bit LoRA adapter does not use`);
    const dims: [number, number][] = [[s.r, this.inFeatures], [s.r, this.inFeatures], [this.outFeatures, s.r], [this.outFeatures, s.r]];
    KEYS.forEach((k, i) => {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      const [rows, cols] = dims[i]!;
      const want = k.endsWith('scales') ? [rows, 1] : codesShape(rows, cols, s.bits);
      if (t.shape.join() !== want.join()) {
        throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${want.join(', ')}] (was it made for another base model, another r or another bits?)`);
      }
    });
    const dev = this.base_layer.weight.device;
    noGrad(() => {
      for (const [part, container, rows, cols] of [['lora_A', this.lora_A, s.r, this.inFeatures], ['lora_B', this.lora_B, this.outFeatures, s.r]] as const) {
        const w = tidy(() => {
          const codes = codesFromTensor(state.get(`${part}.qweight`)!, s.bits, rows, cols).to('float32', dev);
          return dequantize(codes, state.get(`${part}.scales`)!.to('float32', dev)).contiguous();
        });
        container.addParam(name, w, container.getParameter(name).requiresGrad);
      }
    });
    this.ctx.version++;
  }

  override dispose(): void {
    this.dropStack();
    this.backup.dispose();
    for (const ts of this.exported.values()) ts.forEach((t) => t.dispose());
    this.exported.clear();
    super.dispose();
  }
}
