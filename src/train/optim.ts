// Optimizers over float32 state: AdamW (decoupled weight decay; Loshchilov & Hutter 2019, as
// torch.optim.AdamW) and SGD with momentum. A parameter stored in bfloat16/float16 (full fine-tuning
// of a reduced-precision model) gets a float32 master copy: the update happens there and is cast back.
import { keep, noGrad, zerosLike, full, type Tensor } from '../tensor/index.js';

export interface AdamWOptions { lr: number; betas?: [number, number]; eps?: number; weightDecay?: number }
export interface SGDOptions { lr: number; momentum?: number; weightDecay?: number; nesterov?: boolean }

export interface ParamGroup {
  name: string;
  param: Tensor;
  /** Weight decay applies to this parameter (not to biases and norms, by convention). */
  decay: boolean;
}

export interface Optimizer {
  readonly kind: 'adamw' | 'sgd';
  lr: number;
  readonly stepCount: number;
  /** One update from the accumulated .grad of every parameter; parameters without a grad are skipped. */
  step(): void;
  zeroGrad(): void;
  /** Named float32 tensors of the optimizer state (for checkpoints). */
  stateTensors(): Map<string, Tensor>;
  loadStateTensors(state: Map<string, Tensor>, stepCount: number): void;
  dispose(): void;
}

abstract class Base implements Optimizer {
  abstract readonly kind: 'adamw' | 'sgd';
  stepCount = 0;
  protected readonly state = new Map<string, Map<string, Tensor>>();
  protected readonly master = new Map<string, Tensor>();
  /**
   * Updates each parameter has had (torch's per-parameter state["step"]): a parameter without a
   * gradient on some steps (a frozen-then-unfrozen head, an adapter inactive for a while) is not
   * counted on those steps, so its bias correction is its own. Saved as "<name>::step".
   */
  protected readonly steps = new Map<string, number>();

  constructor(protected readonly params: ParamGroup[], public lr: number) {
    for (const p of params) {
      if (p.param.dtype !== 'float32' && p.param.dtype !== 'float64') this.master.set(p.name, keep(p.param.to('float32')));
    }
  }
  protected slot(name: string, key: string, like: Tensor): Tensor {
    let s = this.state.get(name);
    if (!s) this.state.set(name, (s = new Map()));
    let t = s.get(key);
    if (!t) s.set(key, (t = keep(zerosLike(like))));
    return t;
  }
  /** `t`: this parameter's own update count, this update included (1 on its first). */
  protected abstract update(p: ParamGroup, w: Tensor, g: Tensor, t: number): void;

  step(): void {
    this.stepCount++;
    noGrad(() => {
      for (const p of this.params) {
        const g0 = p.param.grad;
        if (!g0) continue;
        const master = this.master.get(p.name);
        const w = master ?? p.param;
        const g = g0.dtype === w.dtype ? g0 : g0.to(w.dtype);
        const t = (this.steps.get(p.name) ?? 0) + 1;
        this.steps.set(p.name, t);
        this.update(p, w, g, t);
        if (master) p.param.copy_(master);  // cast back into the stored dtype
        g.dispose();
        if (g !== g0) g0.dispose();
      }
    });
  }
  zeroGrad(): void {
    for (const p of this.params) p.param.zeroGrad();
  }
  stateTensors(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [n, s] of this.state) for (const [k, t] of s) out.set(`${n}::${k}`, t);
    for (const [n, t] of this.master) out.set(`${n}::master`, t);
    for (const [n, t] of this.steps) {
      // A one-element float32 tensor kept in the state (exact for counts below 2^24).
      let slots = this.state.get(n);
      if (!slots) this.state.set(n, (slots = new Map()));
      let s = slots.get('step');
      if (!s) slots.set('step', (s = keep(full([1], t))));
      else noGrad(() => s!.fill_(t));
      out.set(`${n}::step`, s);
    }
    return out;
  }
  loadStateTensors(state: Map<string, Tensor>, stepCount: number): void {
    this.stepCount = stepCount;
    this.steps.clear();
    const hasSteps = [...state.keys()].some((k) => k.endsWith('::step'));
    noGrad(() => {
      for (const [key, t] of state) {
        const at = key.lastIndexOf('::');
        const [n, k] = [key.slice(0, at), key.slice(at + 2)];
        if (!this.params.some((p) => p.name === n)) throw new Error(`optimizer state names parameter "${n}", which is not being trained`);
        if (k === 'step') {
          this.steps.set(n, t.item());
        } else if (k === 'master') {
          this.master.get(n)?.dispose();
          this.master.set(n, keep(t.to('float32').clone()));
        } else {
          let s = this.state.get(n);
          if (!s) this.state.set(n, (s = new Map()));
          s.get(k)?.dispose();
          s.set(k, keep(t.to('float32').clone()));
          // Checkpoints from before per-parameter steps: every parameter with state counts all steps.
          if (!hasSteps && !this.steps.has(n)) this.steps.set(n, stepCount);
        }
      }
    });
  }
  dispose(): void {
    for (const s of this.state.values()) for (const t of s.values()) t.dispose();
    for (const t of this.master.values()) t.dispose();
    this.state.clear();
    this.master.clear();
    this.steps.clear();
  }
}

export class AdamW extends Base {
  readonly kind = 'adamw' as const;
  private readonly b1: number;
  private readonly b2: number;
  private readonly eps: number;
  private readonly wd: number;
  constructor(params: ParamGroup[], o: AdamWOptions) {
    super(params, o.lr);
    [this.b1, this.b2] = o.betas ?? [0.9, 0.999];
    this.eps = o.eps ?? 1e-8;
    this.wd = o.weightDecay ?? 0.01;
  }
  protected update(p: ParamGroup, w: Tensor, g: Tensor, t: number): void {
    const m = this.slot(p.name, 'exp_avg', w);
    const v = this.slot(p.name, 'exp_avg_sq', w);
    if (p.decay && this.wd > 0) w.mul_(1 - this.lr * this.wd);  // decoupled: not through the gradient
    m.lerp_(g, 1 - this.b1);  // m = b1 m + (1 - b1) g
    v.mul_(this.b2).addcmul_(g, g, 1 - this.b2);  // v = b2 v + (1 - b2) g²
    const bc1 = 1 - this.b1 ** t;
    const bc2 = 1 - this.b2 ** t;
    // w -= lr / bc1 * m / (sqrt(v / bc2) + eps), as torch.optim.AdamW
    const denom = v.sqrt().div(Math.sqrt(bc2)).add(this.eps);
    w.addcdiv_(m, denom, -this.lr / bc1);
    denom.dispose();
  }
}

export class SGD extends Base {
  readonly kind = 'sgd' as const;
  constructor(params: ParamGroup[], private readonly o: SGDOptions) {
    super(params, o.lr);
  }
  protected update(p: ParamGroup, w: Tensor, g0: Tensor, t: number): void {
    let g = g0;
    const wd = this.o.weightDecay ?? 0;
    if (p.decay && wd > 0) g = g.add(w, wd);  // classic L2 (coupled), as torch.optim.SGD
    const mom = this.o.momentum ?? 0;
    if (mom > 0) {
      const buf = this.slot(p.name, 'momentum_buffer', w);
      if (t === 1) buf.copy_(g);  // torch: the buffer starts at this parameter's first gradient
      else buf.mul_(mom).add_(g);
      g = this.o.nesterov ? g.add(buf, mom) : buf;
    }
    w.add_(g, -this.lr);
    if (g !== g0 && g !== this.state.get(p.name)?.get('momentum_buffer')) g.dispose();
  }
}

/** Decay everything but biases and norm weights (the usual convention). */
export function paramGroups(named: [string, Tensor][]): ParamGroup[] {
  return named.map(([name, param]) => ({ name, param, decay: !(name.endsWith('.bias') || /norm|LayerNorm|ln_/.test(name) || param.ndim < 2) }));
}
