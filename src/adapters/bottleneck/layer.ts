// The bottleneck adapter at a residual site (AdapterHub's BottleneckLayer with its Adapter /
// ParallelAdapter modules, methods/bottleneck.py and methods/modeling.py). A block calls
// `residual(h, x, ln)` where it would compute `ln(h + x)` (post-LN, BERT) or `h + x` (pre-LN decoders).
// With adapters active (in order, AdapterHub's Stack):
//   (hs, res) = pre_forward of the first;  hs = adapter_k(hs, res) for each;  out = post_forward of the last
// Sequential adapter (Pfeiffer/Houlsby):  f(z) = dropout(scaling · up(act(down([LN] z)))) [· gate]
//   pre:  res = h (residual_before_ln); original_ln_before: hs = LN(h + x) (or h + x); else hs = h
//   fwd:  out = f(hs) + res (adapter_norm_after between when ln_after)
//   post: original_ln_after: LN(out + x) (or out + x)
// Parallel adapter:  out = LN(f(x) + h + x)  (f reads the sub-block INPUT x).
// Closed forms: Pfeiffer GPT-2 x + h + f(h + x); BERT LN(h + f(LN(h + x)) + x); Houlsby x + h + f(h).
// Adapters hold float32 parameters over a bf16/f32 base: the site computes in float32 and returns the
// activations' dtype. Shapes: B batch, T time, C channels, D bottleneck.
import { Module, Container } from '../../nn/module.js';
import { Linear, LayerNorm, Dropout } from '../../nn/layers.js';
import { empty, ones, zeros, noGrad, where, rand, type Tensor, type Device } from '../../tensor/index.js';
import type { AdapterContext, AdapterPart } from '../types.js';
import type { SiteModule } from '../../models/hooks.js';
import type { BottleneckConfig } from './config.js';
import { bnActivation } from './activation.js';
import { PHMLayer } from './phm.js';
import { seedFor, truncNormal_ } from './init.js';
import { loadByName, stateOf, distinct } from './state.js';

type Norm = { forward(x: Tensor): Tensor } | null;

function newLinear(i: number, o: number, device: Device): Linear {
  const l = new Linear(i, o, { dtype: 'float32' });
  noGrad(() => {
    l.setParameter('weight', zeros([o, i], { device }), true);
    l.setParameter('bias', zeros([o], { device }), true);
  });
  return l;
}

function newLayerNorm(c: number, device: Device): LayerNorm {
  const n = new LayerNorm(c, 1e-5, { dtype: 'float32' });  // nn.LayerNorm's default eps
  noGrad(() => {
    n.setParameter('weight', ones([c], { device }), true);
    n.setParameter('bias', zeros([c], { device }), true);
  });
  return n;
}

/** One adapter (AdapterHub's Adapter or ParallelAdapter); its module paths are AdapterHub's. */
export class BnAdapter extends Module {
  readonly adapter_down = new Container();
  readonly adapter_up: Linear | PHMLayer;
  readonly adapter_norm_before: LayerNorm | null = null;
  readonly adapter_norm_after: LayerNorm | null = null;
  readonly gate: Linear | null = null;
  private readonly down: Linear | PHMLayer;
  private readonly act: (x: Tensor) => Tensor;
  private readonly drop: Dropout;

  constructor(readonly c: BottleneckConfig, hidden: number, downSize: number, device: Device, seed: number, key: string, sharedRule: (() => Tensor) | null) {
    super();
    if (c.lnBefore) this.adapter_norm_before = this.module('adapter_norm_before', newLayerNorm(hidden, device));
    this.module('adapter_down', this.adapter_down);
    if (this.adapter_norm_before) this.adapter_down.add('0', this.adapter_norm_before);  // the same module: both keys are saved
    const make = (i: number, o: number, k: string) => (c.phmLayer ? new PHMLayer(i, o, c, sharedRule, device, seed, `${key}.${k}`) : newLinear(i, o, device));
    this.down = this.adapter_down.add(c.lnBefore ? '1' : '0', make(hidden, downSize, 'adapter_down'));
    this.act = bnActivation(c.nonLinearity);
    this.adapter_up = this.module('adapter_up', make(downSize, hidden, 'adapter_up'));
    noGrad(() => {
      if (c.scaling === 'learned') this.param('scaling', ones([1], { device }));
      else if (c.scaling === 'channel') this.param('scaling', ones([hidden], { device }));
    });
    if (c.lnAfter) this.adapter_norm_after = this.module('adapter_norm_after', newLayerNorm(hidden, device));
    if (c.useGating) this.gate = this.module('gate', newLinear(hidden, 1, device));
    this.drop = this.module('dropout', new Dropout(c.dropout));
    this.init(device, seed, key);
  }

  private init(device: Device, seed: number, key: string): void {
    const s = (k: string) => seedFor(seed, `${key}.${k}`);
    const set = (l: Linear, w: Tensor) => l.setParameter('weight', w, true);
    const bert = (l: Linear, k: string) => set(l, empty(l.weight.shape, { device }).normal_(0, 0.02, s(k)));  // bias stays 0
    noGrad(() => {
      const down = this.down instanceof Linear ? this.down : null;
      const up = this.adapter_up instanceof Linear ? this.adapter_up : null;
      if (this.c.initWeights === 'bert') {
        if (down) bert(down, 'adapter_down');
        if (up) bert(up, 'adapter_up');
        if (this.gate) bert(this.gate, 'gate');
      } else if (this.c.initWeights === 'mam_adapter') {
        // kaiming_uniform_(a=√5) on (out, in): U(-1/√in, 1/√in); adapter_up stays zero, so f ≡ 0 at init.
        if (down) set(down, empty(down.weight.shape, { device }).uniform_(-1 / Math.sqrt(down.inFeatures), 1 / Math.sqrt(down.inFeatures), s('adapter_down')));
        if (this.gate) bert(this.gate, 'gate');
      } else {
        if (down) set(down, truncNormal_(empty(down.weight.shape, { device }), 1e-2, 2e-2, s('adapter_down')));
        if (up) set(up, truncNormal_(empty(up.weight.shape, { device }), 1e-2, 2e-2, s('adapter_up')));
        if (this.gate) {
          // Not re-initialised by AdapterHub: nn.Linear's default, U(±1/√in) for weight and bias.
          const b = 1 / Math.sqrt(this.gate.inFeatures);
          set(this.gate, empty(this.gate.weight.shape, { device }).uniform_(-b, b, s('gate')));
          this.gate.setParameter('bias', empty([1], { device }).uniform_(-b, b, s('gate.bias')), true);
        }
      }
    });
  }

  /** f(z) before the residual: dropout(scaling · up(act(down(z)))), gated; `seq` adds DropPath. */
  private delta(z: Tensor, seq: boolean): Tensor {
    let d = z;
    if (this.adapter_norm_before) d = this.adapter_norm_before.forward(d);
    let up = this.adapter_up.forward(this.act(this.down.forward(d)));  // (B, T, C) through (B, T, D)
    const p = this.c.stochasticDepth;
    if (seq && p > 0 && this.training) {
      // torchvision StochasticDepth(p, "row"): each row kept with prob 1-p and scaled by 1/(1-p).
      const keepRows = rand([up.shape[0]!, ...up.shape.slice(1).map(() => 1)], { device: up.device }).lt(1 - p).to(up.dtype).div(1 - p);  // (B, 1, 1)
      up = up.mul(keepRows);
    }
    const sc = this.own('scaling');
    up = sc ? up.mul(sc) : this.c.scaling === 1 ? up : up.mul(this.c.scaling as number);
    let out = this.drop.forward(up);
    if (this.gate) out = out.mul(this.gate.forward(z).sigmoid().mean(1).unsqueeze(-1));  // (B, 1, 1): mean over T
    return out;
  }

  /** Adapter.forward / ParallelAdapter.forward: the new hidden states. */
  forward(x: Tensor, residual: Tensor): Tensor {
    if (this.c.isParallel) {
      const out = this.delta(x, false);
      return this.adapter_norm_after ? this.adapter_norm_after.forward(out) : out;
    }
    let out = this.delta(x, true);
    if (this.c.adapterResidualBeforeLn) out = out.add(residual);
    if (this.adapter_norm_after) out = this.adapter_norm_after.forward(out);
    if (!this.c.adapterResidualBeforeLn) out = out.add(residual);
    return out;
  }

  /** pre_forward: (adapter input, adapter residual) from the sub-block output h and its input x. */
  preForward(h: Tensor, x: Tensor, ln: Norm): [Tensor, Tensor] {
    if (this.c.isParallel) return [x, x];
    const rbl = this.c.residualBeforeLn;
    let residual: Tensor | null = rbl === true ? h : null;
    let hs = h;
    if (this.c.originalLnBefore) {
      hs = h.add(x);
      if (ln) {
        if (rbl === 'post_add') residual = hs;
        hs = ln.forward(hs);
      }
    }
    if (rbl === false) residual = hs;
    if (residual === null) throw new Error('bottleneck adapter: residual_before_ln "post_add" needs a post-LN site (BERT); AdapterHub fails here as well');
    return [hs, residual];
  }

  /** post_forward: the site's output from the adapters' output. */
  postForward(hs: Tensor, h: Tensor, x: Tensor, ln: Norm): Tensor {
    let out = this.c.isParallel ? hs.add(h) : hs;
    if (this.c.originalLnAfter) out = ln ? ln.forward(out.add(x)) : out.add(x);
    return out;
  }

  /** Trainable tensors (the PHM rule only when learn_phm). */
  trainable(): Tensor[] {
    return distinct(this, (n) => !this.c.learnPhm && /(^|\.)phm_rule(_left|_right)?$/.test(n));
  }
}

export class BottleneckSite extends Module implements AdapterPart, SiteModule {
  readonly isAdapterPart = true as const;
  readonly isSiteModule = true as const;
  readonly peftType = 'BOTTLENECK';
  readonly mergedAdapters: readonly string[] = [];
  readonly adapters = this.module('adapters', new Container());

  constructor(private readonly ctx: AdapterContext, readonly layerIndex: number) {
    super();
  }

  hasAdapter(name: string): boolean { return this.adapters.child(name) !== null; }
  adapter(name: string): BnAdapter { return this.adapters.child(name) as BnAdapter; }
  addAdapter(name: string, a: BnAdapter): void {
    if (this.hasAdapter(name)) throw new Error(`bottleneck adapter "${name}" already exists at layer ${this.layerIndex}`);
    this.adapters.add(name, a);
  }
  deleteAdapter(name: string): void {
    const a = this.adapters.child(name);
    if (!a) return;
    this.adapters.remove(name);
    a.dispose();
  }
  /** Keys relative to this module, as AdapterHub's state dict: `adapters.<name>.adapter_down.0.weight`, … */
  adapterState(name: string): Map<string, Tensor> { return stateOf(this.adapter(name), `adapters.${name}.`); }
  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void { loadByName(this.adapter(name), 'adapters.', state, path); }
  adapterParameters(name: string): Tensor[] { return this.hasAdapter(name) ? this.adapter(name).trainable() : []; }
  merge(names: string[]): void {
    if (names.some((n) => this.hasAdapter(n))) throw new Error('bottleneck adapters are not mergeable (they add a nonlinear branch at each residual connection)');
  }
  unmerge(): void {}

  residual(out: Tensor, residual: Tensor, ln: Norm): Tensor {
    const plain = () => {
      const sum = out.add(residual);
      return ln ? ln.forward(sum) : sum;
    };
    if (this.ctx.disabled) return plain();
    const rows = this.ctx.rows;
    if (rows) {
      // Mixed batch: each adapter runs on the whole batch, then its rows are picked (no per-row loop).
      const used = rows.order.map((n, j) => [n, j] as const).filter(([n]) => this.hasAdapter(n));
      if (!used.length) return plain();
      let y = plain();  // (B, T, C)
      for (const [n, j] of used) y = where(rows.index.eq(j).view(-1, 1, 1), this.compose([n], out, residual, ln), y);
      return y;
    }
    const names = this.ctx.active.filter((n) => this.hasAdapter(n));
    return names.length ? this.compose(names, out, residual, ln) : plain();
  }

  /** AdapterHub's bottleneck_layer_forward with Stack(names) (a single name: the plain adapter). */
  private compose(names: string[], out: Tensor, residual: Tensor, ln: Norm): Tensor {
    const dt = out.dtype;
    const h = dt === 'float32' ? out : out.to('float32');  // (B, T, C)
    const x = residual.dtype === 'float32' ? residual : residual.to('float32');
    let [hs, res] = this.adapter(names[0]!).preForward(h, x, ln);
    for (const n of names) hs = this.adapter(n).forward(hs, res);
    const y = this.adapter(names[names.length - 1]!).postForward(hs, h, x, ln);
    return y.dtype === dt ? y : y.to(dt);
  }
}
