// The MoE-LoRA tuner layer: wraps a Linear or GPT-2 Conv1D (kept as `base_layer`) and holds, per
// adapter name, E LoRA experts stacked as A (E, R, I) at `moe_lora_A.<name>` and B (E, O, R) at
// `moe_lora_B.<name>`, and a router Linear(I, E) without bias at `moe_router.<name>`:
//   y = W x + Σ_{e ∈ topk(router(x))} g_e(x) · s B_e A_e dropout(x),   s = lora_alpha / r,
// g = softmax over the selected logits (Mixtral-style renormalised), per token. Not mergeable (the
// update depends on the token). Several active adapters each add their mixture to the same base output.
//
// Every path is batched (training, inference and mixed batches alike; no loop over tokens, rows or
// experts): all experts' x A_eᵀ come from one product with A viewed as (E·R, I), the router's gates
// (zero for unselected experts) scale each expert's R columns, and one product with B viewed as
// (O, E·R) sums the selected experts' outputs. Mixed batches gather each row's stacked router, A and
// B (padded to the largest E and R; padded experts can never be selected) and run the same products
// batched over rows.
// Shapes: N rows, T time, I in, O out, R rank, E experts, K adapters.
import { Module, Container } from '../../nn/module.js';
import { Linear, Dropout, type LinearLayer } from '../../nn/layers.js';
import { keep, noGrad, tidy, zeros, full, stack, rand, arange, tensor, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import { layerIndexOf } from '../targets.js';
import { randomInit, seedFor } from '../lora/init.js';
import { expertsForLayer, type MoeLoraConfig } from './config.js';

interface AdapterState {
  /** Experts on this layer. */
  E: number;
  r: number;
  /** Experts per token here: min(top_k, E). */
  k: number;
  scaling: number;
  coef: number;
  jitter: number;
}

/** What the MoE-LoRA runtime keeps in ctx.slots.MOE_LORA during a forward. */
export interface MoeLoraSlot {
  /** The forward is a training forward (aux terms are collected only then). */
  training: boolean;
  /** Per layer and adapter: coef · (Switch load-balancing loss), kept out of scopes; the runtime frees them. */
  terms: Tensor[];
}

/** Routing of one forward: the renormalised top-k gates and what the load-balancing loss needs. */
export interface Routing {
  /** Router softmax over all experts (…, E). */
  probs: Tensor;
  /** 1 where the expert is among the token's top-k, else 0 (…, E). */
  selected: Tensor;
  /** probs restricted to the selected experts, renormalised to sum 1 (…, E). */
  gates: Tensor;
}

/**
 * Top-k routing from router logits (…, E): k a number, or per row (kmax and a (N, 1, 1) tensor of
 * each row's k, for mixed batches). Gates = softmax over the selected logits = p·sel / Σ p·sel.
 */
export function route(logits: Tensor, k: number | { kmax: number; perRow: Tensor }): Routing {
  const probs = logits.softmax(-1);
  const last = logits.shape.length - 1;
  const kmax = typeof k === 'number' ? k : k.kmax;
  const { indices } = logits.topk(kmax, -1);  // (…, kmax)
  let src: Tensor | number = 1;
  if (typeof k !== 'number') src = arange(0, kmax, 1, { device: logits.device }).lt(k.perRow).to('float32').expand(...indices.shape).contiguous();  // rank < row's k
  const selected = zeros(logits.shape, { dtype: probs.dtype, device: probs.device }).scatter(last, indices, src);
  const w = probs.mul(selected);
  return { probs, selected, gates: w.div(w.sum(-1, true)) };
}

/**
 * Switch-Transformer load balancing: E · Σ_e f_e P_e with f_e the fraction of the routed (token,
 * slot) pairs that go to e (top-k counts / k) and P_e the mean router probability of e.
 */
export function loadBalancingLoss(r: Routing, k: number): Tensor {
  const E = r.probs.shape[r.probs.shape.length - 1]!;
  const f = r.selected.reshape(-1, E).mean(0).div(k);  // (E)
  const P = r.probs.reshape(-1, E).mean(0);  // (E)
  return f.mul(P).sum().mul(E);
}

/**
 * The mixture's update: x (…, I) through every expert's A at once, scaled per expert by the gates,
 * summed through B. At: (…, I, E·R); Bt: (…, E·R, O), pre-scaled; gates (…, E).
 */
export function mixExperts(xd: Tensor, At: Tensor, Bt: Tensor, gates: Tensor, E: number, R: number): Tensor {
  const h = xd.matmul(At);  // (…, E·R)
  const lead = h.shape.slice(0, -1);
  const hs = h.reshape(...lead, E, R).mul(gates.unsqueeze(-1)).reshape(...lead, E * R);
  return hs.matmul(Bt);  // (…, O)
}

export class MoeLoraLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly peftType = 'MOE_LORA';
  readonly base_layer: LinearLayer;
  readonly moe_lora_A = this.module('moe_lora_A', new Container());
  readonly moe_lora_B = this.module('moe_lora_B', new Container());
  readonly moe_router = this.module('moe_router', new Container());
  readonly moe_dropout = this.module('moe_dropout', new Container());
  readonly adapters = new Map<string, AdapterState>();
  private stackCache: { key: string; W: Tensor; A: Tensor; B: Tensor; bias: Tensor; k: Tensor; E: number; R: number; kmax: number } | null = null;

  constructor(base: LinearLayer, private readonly ctx: AdapterContext) {
    super();
    this.base_layer = this.module('base_layer', base);
  }

  get baseLayer(): Module { return this.base_layer; }
  get inFeatures(): number { return this.base_layer.inFeatures; }
  get outFeatures(): number { return this.base_layer.outFeatures; }
  get mergedAdapters(): readonly string[] { return []; }
  hasAdapter(name: string): boolean { return this.adapters.has(name); }
  /** Experts, rank, experts per token and scaling of an adapter here. */
  info(name: string): Readonly<AdapterState> | undefined { return this.adapters.get(name); }

  A(name: string): Tensor { return this.moe_lora_A.getParameter(name); }  // (E, R, I)
  B(name: string): Tensor { return this.moe_lora_B.getParameter(name); }  // (E, O, R)
  router(name: string): Tensor { return (this.moe_router.getSubmodule(name) as Linear).weight; }  // (E, I)

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as MoeLoraConfig;
    if (this.adapters.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    // The method's prepareAdapter gives each path its expert count (named shapes need the model's depth).
    const E = typeof opts.data === 'number' ? opts.data : expertsForLayer(c, layerIndexOf(path, c.layersPattern), 0, path);
    const r = c.r;
    this.adapters.set(name, { E, r, k: Math.min(c.topK, E), scaling: c.loraAlpha / r, coef: c.routerAuxLossCoef, jitter: c.routerJitter });
    const w = this.base_layer.weight;
    const dt = w.dtype === 'float64' ? 'float64' : 'float32';  // trained in float32 over a bf16/f16 base
    const I = this.inFeatures;
    const O = this.outFeatures;
    const router = this.moe_router.add(name, new Linear(I, E, { bias: false, dtype: dt }));
    this.moe_dropout.add(name, new Dropout(c.loraDropout));
    noGrad(() => {
      // LoRA's init per expert (own seed each): kaiming-uniform A, zero B (random B with init false).
      const inits = Array.from({ length: E }, (_, e) => randomInit(c.initLoraWeights, r, I, O, opts.seed, `${path}.${name}.expert${e}`));
      this.moe_lora_A.addParam(name, tidy(() => stack(inits.map((t) => t.A)).to(dt, w.device)), true);
      this.moe_lora_B.addParam(name, tidy(() => stack(inits.map((t) => t.B)).to(dt, w.device)), true);
      for (const t of inits) { t.A.dispose(); t.B.dispose(); }
      const rw = zeros([E, I], { dtype: dt, device: w.device }).normal_(0, 0.02, seedFor(opts.seed, `${path}.${name}.router`));
      router.setParameter('weight', rw, true);
    });
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    if (!this.adapters.has(name)) return;
    this.moe_lora_A.removeParam(name);
    this.moe_lora_B.removeParam(name);
    this.moe_router.getSubmodule(name).dispose();
    this.moe_router.remove(name);
    this.moe_dropout.remove(name);
    this.adapters.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    if (!this.adapters.has(name)) return [];
    return [this.A(name), this.B(name), this.router(name)];
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) return this.base_layer.forward(x);
    const base = this.base_layer.forward(x);  // (…, O)
    if (this.ctx.rows) return this.mixedBatch(x, base);
    let result = base;
    for (const name of this.ctx.active) {
      const s = this.adapters.get(name);
      if (!s) continue;
      const A = this.A(name);
      const xf = x.dtype === A.dtype ? x : x.to(A.dtype);
      let xr = xf;
      if (this.training && s.jitter > 0) xr = xf.mul(rand(xf.shape, { dtype: xf.dtype, device: xf.device }).mul(2 * s.jitter).add(1 - s.jitter));
      const routing = route(xr.matmul(this.router(name).transpose(0, 1)), s.k);  // (…, E)
      this.collectAux(routing, s);
      const xd = (this.moe_dropout.getSubmodule(name) as Dropout).forward(xf);
      const At = A.reshape(s.E * s.r, this.inFeatures).transpose(0, 1);  // (I, E·R)
      const Bt = this.B(name).permute(0, 2, 1).reshape(s.E * s.r, this.outFeatures);  // (E·R, O)
      const y = mixExperts(xd, At, Bt, routing.gates, s.E, s.r).mul(s.scaling);
      result = result.add(y.to(result.dtype));
    }
    return result;
  }

  /** In a training forward, records coef · load-balancing loss in ctx.slots.MOE_LORA for the runtime. */
  private collectAux(routing: Routing, s: AdapterState): void {
    const slot = this.ctx.slots.MOE_LORA as MoeLoraSlot | undefined;
    if (!this.training || !slot?.training || s.coef === 0) return;
    slot.terms.push(keep(loadBalancingLoss(routing, s.k).mul(s.coef)));
  }

  /** Each row with its own MoE adapter (or none), in the same batched products over gathered stacks. */
  private mixedBatch(x: Tensor, base: Tensor): Tensor {
    const rows = this.ctx.rows!;
    const st = this.stacked(rows.order);
    const idx = rows.index;  // (N)
    const n = x.shape[0]!;
    const x3 = x.reshape(n, -1, this.inFeatures).to(st.A.dtype);  // (N, T, I)
    const logits = x3.matmul(st.W.indexSelect(0, idx).transpose(1, 2)).add(st.bias.indexSelect(0, idx).unsqueeze(1));  // (N, T, E)
    const routing = route(logits, { kmax: st.kmax, perRow: st.k.indexSelect(0, idx).reshape(n, 1, 1) });
    const y = mixExperts(x3, st.A.indexSelect(0, idx).transpose(1, 2), st.B.indexSelect(0, idx).transpose(1, 2), routing.gates, st.E, st.R);  // (N, T, O)
    return base.add(y.to(base.dtype).view(...base.shape));
  }

  /**
   * Router (K+1, E, I), A (K+1, E·R, I), B (K+1, O, E·R) pre-scaled, a logit bias (K+1, E) of -1e9 on
   * padded experts (never selected, as k ≤ an adapter's E), k per entry (K+1); the last entry (rows
   * without an adapter) has zero B.
   */
  private stacked(order: string[]): NonNullable<MoeLoraLayer['stackCache']> {
    const key = `${this.ctx.version}:${order.join('\u0000')}`;
    if (this.stackCache && this.stackCache.key === key && !this.training) return this.stackCache;
    const states = order.map((n) => this.adapters.get(n));
    const E = Math.max(1, ...states.map((s) => s?.E ?? 0));
    const R = Math.max(1, ...states.map((s) => s?.r ?? 0));
    const kmax = Math.max(1, ...states.map((s) => s?.k ?? 0));
    const I = this.inFeatures;
    const O = this.outFeatures;
    const dev = this.base_layer.weight.device;
    const built = noGrad(() => tidy(() => {
      const Ws: Tensor[] = [], As: Tensor[] = [], Bs: Tensor[] = [], bs: Tensor[] = [];
      for (const [i, name] of [...order, null].entries()) {
        const W = zeros([E, I], { device: dev });
        const A = zeros([E, R, I], { device: dev });
        const B = zeros([E, O, R], { device: dev });
        const b = full([E], -1e9, { device: dev });
        const s = name !== null ? states[i] : undefined;
        if (name !== null && s) {
          W.narrow(0, 0, s.E).copy_(this.router(name));
          A.narrow(0, 0, s.E).narrow(1, 0, s.r).copy_(this.A(name));
          B.narrow(0, 0, s.E).narrow(2, 0, s.r).copy_(this.B(name).mul(s.scaling));
          b.narrow(0, 0, s.E).fill_(0);
        }
        Ws.push(W);
        As.push(A.reshape(E * R, I));
        Bs.push(B.permute(1, 0, 2).reshape(O, E * R));
        bs.push(b);
      }
      const k = tensor([...states.map((s) => s?.k ?? 1), 1], { dtype: 'int64', device: dev });
      return { W: stack(Ws), A: stack(As), B: stack(Bs), bias: stack(bs), k };
    }));
    this.dropStack();
    this.stackCache = { key, W: keep(built.W), A: keep(built.A), B: keep(built.B), bias: keep(built.bias), k: keep(built.k), E, R, kmax };
    return this.stackCache;
  }

  private dropStack(): void {
    const c = this.stackCache;
    for (const t of c ? [c.W, c.A, c.B, c.bias, c.k] : []) t.dispose();
    this.stackCache = null;
  }

  merge(names: string[]): void {
    const mine = names.filter((n) => this.adapters.has(n));
    if (mine.length) throw new Error(`MoE-LoRA adapter "${mine[0]}" cannot be merged: its update depends on each token's routing`);
  }

  unmerge(): void {}

  unload(): Module {
    this.dropStack();
    for (const name of [...this.adapters.keys()]) this.deleteAdapter(name);
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    if (!this.adapters.has(name)) return new Map();
    return new Map([['moe_lora_A', this.A(name)], ['moe_lora_B', this.B(name)], ['moe_router.weight', this.router(name)]]);
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    const s = this.adapters.get(name);
    if (!s) throw new Error(`no adapter "${name}" on ${path}`);
    const want = new Map<string, number[]>([['moe_lora_A', [s.E, s.r, this.inFeatures]], ['moe_lora_B', [s.E, this.outFeatures, s.r]], ['moe_router.weight', [s.E, this.inFeatures]]]);
    for (const k of state.keys()) if (!want.has(k)) throw new Error(`adapter file has ${path}.${k}, which a MoE-LoRA adapter does not use`);
    for (const [k, shape] of want) {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
        throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${shape.join(', ')}] (was it made for another base model, num_experts, experts_per_layer or r?)`);
      }
    }
    noGrad(() => {
      const dt = this.A(name).dtype;
      const dev = this.A(name).device;
      this.moe_lora_A.addParam(name, tidy(() => state.get('moe_lora_A')!.to(dt, dev).clone()), true);
      this.moe_lora_B.addParam(name, tidy(() => state.get('moe_lora_B')!.to(dt, dev).clone()), true);
      (this.moe_router.getSubmodule(name) as Linear).setParameter('weight', tidy(() => state.get('moe_router.weight')!.to(dt, dev).clone()), true);
    });
    this.ctx.version++;
  }

  override dispose(): void {
    this.dropStack();
    super.dispose();
  }
}
