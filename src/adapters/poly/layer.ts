// The Poly / MHR tuner layer, as PEFT's poly/layer.py Linear and poly/router.py PolyRouter: wraps a
// Linear (or GPT-2's Conv1D: the update never touches the base weight, so its layout does not matter)
// and holds, per adapter name, an inventory of skills
//   poly_lora_A.<name>  (S, K, I/S, R)      poly_lora_B.<name>  (S, K, R, O/S)
// and a router poly_router.<name>.module_logits (Tasks, S*K). Per example b with task id t_b:
//   w_b = normalise(sigmoid(logits[t_b]))          (eval; training: a relaxed Bernoulli sample)
//   A_b = Σ_k w_b[s, k] A[s, k] per split s -> (I, R);  B_b likewise -> (R, O)
//   y_b = base(x_b) + x_b A_b B_b / r
// The task ids come from ctx.slots.POLY (set by withTaskIds). Shapes: N rows, T time, I in, O out,
// R rank, S splits, K skills.
import { Module, Container } from '../../nn/module.js';
import { Conv1D, type LinearLayer } from '../../nn/layers.js';
import { noGrad, tidy, zeros, empty, rand, type Tensor } from '../../tensor/index.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions, TunerLayer } from '../types.js';
import type { PolyConfig } from './config.js';
import { seedFor } from '../lora/init.js';

/** PEFT's router EPS (added to the sum of the skill weights before normalising). */
export const POLY_EPS = 1e-12;
/** torch.finfo(float32).eps: the clamp of torch's clamp_probs in the relaxed Bernoulli. */
const F32_EPS = 1.1920928955078125e-7;

/** What ctx.slots.POLY holds during a forward. */
export interface PolySlot {
  /** (N) int64 task id of each row; null or absent: no task ids given. */
  taskIds?: Tensor | null;
  /** Training forwards counted by the runtime (seeds the relaxed Bernoulli noise). */
  step: number;
}

interface AdapterState { r: number; nTasks: number; nSkills: number; nSplits: number; path: string }

/**
 * PEFT's PolyRouter.forward: the skill weights (N, S, K) of each row for task ids (N). In training a
 * relaxed Bernoulli sample (temperature 1) with the given seed; otherwise sigmoid. Then each split's
 * weights are divided by their sum + EPS.
 */
export function polyMixingWeights(moduleLogits: Tensor, taskIds: Tensor, nSplits: number, nSkills: number, training: boolean, seed: number): Tensor {
  const nTasks = moduleLogits.shape[0]!;
  const ids = taskIds.to('int64', moduleLogits.device).reshape(-1);
  const [lo, hi] = noGrad(() => [ids.min().item(), ids.max().item()]);
  if (hi >= nTasks) throw new Error(`Poly: only ${nTasks} tasks available (n_tasks), found task id ${hi}`);
  if (lo < 0) throw new Error(`Poly: task ids must be >= 0, found ${lo}`);
  let l = moduleLogits.indexSelect(0, ids).view(-1, nSplits, nSkills);  // (N, S, K)
  if (training) {
    // torch RelaxedBernoulli(temperature=1, logits).rsample(): sigmoid((logit(p) + logit(u)) / 1), p and u clamped to [eps, 1-eps].
    const p = l.sigmoid().clamp(F32_EPS, 1 - F32_EPS);
    const u = rand(l.shape, { seed, dtype: l.dtype, device: l.device }).clamp(F32_EPS, 1 - F32_EPS);
    l = u.log().sub(u.neg().log1p()).add(p.log().sub(p.neg().log1p())).sigmoid();
  } else {
    l = l.sigmoid();
  }
  return l.div(l.sum(-1, true).add(POLY_EPS));
}

export class PolyLayer extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly peftType = 'POLY';
  readonly base_layer: LinearLayer;
  readonly poly_lora_A = this.module('poly_lora_A', new Container());
  readonly poly_lora_B = this.module('poly_lora_B', new Container());
  readonly poly_router = this.module('poly_router', new Container());
  readonly adapters = new Map<string, AdapterState>();
  readonly mergedAdapters: readonly string[] = [];

  constructor(base: LinearLayer, private readonly ctx: AdapterContext) {
    super();
    this.base_layer = this.module('base_layer', base);
  }

  get baseLayer(): Module { return this.base_layer; }
  get inFeatures(): number { return this.base_layer.inFeatures; }
  get outFeatures(): number { return this.base_layer.outFeatures; }
  get fanInFanOut(): boolean { return this.base_layer instanceof Conv1D; }
  hasAdapter(name: string): boolean { return this.adapters.has(name); }

  A(name: string): Tensor { return this.poly_lora_A.getParameter(name); }  // (S, K, I/S, R)
  B(name: string): Tensor { return this.poly_lora_B.getParameter(name); }  // (S, K, R, O/S)
  moduleLogits(name: string): Tensor { return this.poly_router.getSubmodule(name).getParameter('module_logits'); }  // (Tasks, S*K)

  private shapes(name: string): Map<string, number[]> {
    const s = this.adapters.get(name)!;
    return new Map([
      ['poly_lora_A', [s.nSplits, s.nSkills, this.inFeatures / s.nSplits, s.r]],
      ['poly_lora_B', [s.nSplits, s.nSkills, s.r, this.outFeatures / s.nSplits]],
      ['poly_router.module_logits', [s.nTasks, s.nSplits * s.nSkills]],
    ]);
  }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    const c = config as PolyConfig;
    if (this.adapters.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    for (const [what, n] of [['in', this.inFeatures], ['out', this.outFeatures]] as const) {
      if (n % c.nSplits !== 0) throw new Error(`Poly: ${path} has ${n} ${what} features, which n_splits ${c.nSplits} does not divide`);
    }
    this.adapters.set(name, { r: c.r, nTasks: c.nTasks, nSkills: c.nSkills, nSplits: c.nSplits, path });
    const w = this.base_layer.weight;
    const dt = w.dtype === 'float64' ? 'float64' : 'float32';  // trained in float32 over a bf16/f16 base
    const [sa, sb, sl] = [...this.shapes(name).values()] as [number[], number[], number[]];
    const d = sa[2]!;
    noGrad(() => {
      // PEFT's reset_poly_parameters: each (split, skill) A block is kaiming_uniform(a=√5) of an (R, I/S)
      // weight, transposed: U(±1/√(I/S)). B: zeros (init_weights) or kaiming of an (O/S, R) weight: U(±1/√R).
      // The router's logits: U(-1e-3, 1e-3).
      const key = `${path}.${name}`;
      const o = { dtype: dt, device: w.device } as const;  // on the base weight's device
      const A = empty(sa, o).uniform_(-1 / Math.sqrt(d), 1 / Math.sqrt(d), seedFor(opts.seed, `${key}.poly_lora_A`));
      const B = zeros(sb, o);
      if (!c.initWeights) B.uniform_(-1 / Math.sqrt(c.r), 1 / Math.sqrt(c.r), seedFor(opts.seed, `${key}.poly_lora_B`));
      const L = empty(sl, o).uniform_(-1e-3, 1e-3, seedFor(opts.seed, `${key}.poly_router`));
      this.poly_lora_A.addParam(name, A, true);
      this.poly_lora_B.addParam(name, B, true);
      this.poly_router.add(name, new Container()).addParam('module_logits', L, true);
    });
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    if (!this.adapters.has(name)) return;
    this.poly_lora_A.removeParam(name);
    this.poly_lora_B.removeParam(name);
    this.poly_router.getSubmodule(name).dispose();
    this.poly_router.remove(name);
    this.adapters.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    return this.adapters.has(name) ? [this.A(name), this.B(name), this.moduleLogits(name)] : [];
  }

  /** The mixing weights (N, S, K) of adapter `name` for task ids (N), as the forward uses them. */
  mixingWeights(name: string, taskIds: Tensor): Tensor {
    const s = this.adapters.get(name)!;
    const step = (this.ctx.slots.POLY as PolySlot | undefined)?.step ?? 0;
    return polyMixingWeights(this.moduleLogits(name), taskIds, s.nSplits, s.nSkills, this.training, seedFor(step, `${s.path}.${name}.router`));
  }

  forward(x: Tensor): Tensor {
    if (this.ctx.disabled) return this.base_layer.forward(x);
    if (this.ctx.rows) {
      if (this.ctx.rows.order.some((n) => this.adapters.has(n))) throw new Error('Poly adapters cannot run in a mixed batch (per-row adapters); each row picks its skills through its task id instead');
      return this.base_layer.forward(x);
    }
    let result = this.base_layer.forward(x);  // (…, O)
    for (const name of this.ctx.active) {
      const s = this.adapters.get(name);
      if (!s) continue;
      const taskIds = (this.ctx.slots.POLY as PolySlot | undefined)?.taskIds;
      if (!taskIds) throw new Error(`Poly adapter "${name}" needs a task id per row: run the forward (or generation) inside withTaskIds(peft, taskIds, () => …)`);
      const w = this.mixingWeights(name, taskIds);  // (N, S, K)
      const n = w.shape[0]!;
      if (x.shape[0] !== n) throw new Error(`Poly: ${n} task ids for a batch of ${x.shape[0]} rows (withTaskIds needs one task id per row)`);
      const A = this.A(name);
      const B = this.B(name);
      const [S, K] = [s.nSplits, s.nSkills];
      const wq = w.permute(1, 0, 2);  // (S, N, K)
      // einsum("bqs,qsdr->bqdr") then reshape (N, I, R); einsum("bqs,qsrd->bqrd"), transpose(1, 2), reshape (N, R, O).
      const Ab = wq.matmul(A.reshape(S, K, -1)).permute(1, 0, 2).reshape(n, this.inFeatures, s.r);  // (N, I, R)
      const Bb = wq.matmul(B.reshape(S, K, -1)).reshape(S, n, s.r, this.outFeatures / S).permute(1, 2, 0, 3).reshape(n, s.r, this.outFeatures);  // (N, R, O)
      const x3 = x.reshape(n, -1, this.inFeatures);  // (N, T, I)
      const y = (x3.dtype === A.dtype ? x3 : x3.to(A.dtype)).bmm(Ab).bmm(Bb).div(s.r);  // (N, T, O)
      result = result.add(y.to(result.dtype).view(...result.shape));
    }
    return result;
  }

  merge(names: string[]): void {
    if (names.some((n) => this.adapters.has(n))) throw new Error('Poly adapters cannot be merged into the base weights (the update depends on each row\'s task id); run unmerged');
  }
  unmerge(): void {}

  unload(): Module {
    for (const name of [...this.adapters.keys()]) this.deleteAdapter(name);
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    if (!this.adapters.has(name)) return new Map();
    return new Map([['poly_lora_A', this.A(name)], ['poly_lora_B', this.B(name)], ['poly_router.module_logits', this.moduleLogits(name)]]);
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    if (!this.adapters.has(name)) throw new Error(`no adapter "${name}" on ${path}`);
    const want = this.shapes(name);
    for (const k of state.keys()) if (!want.has(k)) throw new Error(`adapter file has ${path}.${k}, which a Poly adapter does not use`);
    for (const [k, shape] of want) {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      if (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i])) {
        throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${shape.join(', ')}] (another base model, or other r / n_tasks / n_skills / n_splits?)`);
      }
    }
    noGrad(() => {
      const { dtype, device, requiresGrad } = this.A(name);
      const conv = (k: string) => tidy(() => state.get(k)!.to(dtype, device).clone());  // a copy the module owns
      this.poly_lora_A.addParam(name, conv('poly_lora_A'), requiresGrad);
      this.poly_lora_B.addParam(name, conv('poly_lora_B'), requiresGrad);
      (this.poly_router.getSubmodule(name) as Container).addParam('module_logits', conv('poly_router.module_logits'), requiresGrad);
    });
    this.ctx.version++;
  }
}
