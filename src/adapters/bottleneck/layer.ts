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
import { empty, ones, zeros, noGrad, where, rand, cat, stack, type Tensor, type Device } from '../../tensor/index.js';
import type { AdapterContext, AdapterPart } from '../types.js';
import type { SiteModule } from '../../models/hooks.js';
import type { BottleneckConfig } from './config.js';
import { bnActivation } from './activation.js';
import { PHMLayer } from './phm.js';
import { seedFor, truncNormal_ } from './init.js';
import { loadByName, stateOf, distinct } from './state.js';
import { BertFusion, FusionLayers } from './fusion.js';
import { Stack, leaves, first, last, fusionName, describe as describeSetup, type Block, type Setup } from '../composition.js';

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

  /**
   * f(z) before the residual: dropout(scaling · up(act(down(z)))), gated; `seq` adds DropPath. Also
   * returns AdapterHub's `up` (scaled, before dropout and gating), which AdapterFusion attends over.
   */
  private delta(z: Tensor, seq: boolean): [Tensor, Tensor] {
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
    return [out, up];
  }

  /** Adapter.forward / ParallelAdapter.forward: the new hidden states. */
  forward(x: Tensor, residual: Tensor): Tensor {
    return this.forwardUp(x, residual)[0];
  }

  /** Adapter.forward's (output, up): the new hidden states and the scaled up-projection. */
  forwardUp(x: Tensor, residual: Tensor): [Tensor, Tensor] {
    if (this.c.isParallel) {
      const [out, up] = this.delta(x, false);
      return [this.adapter_norm_after ? this.adapter_norm_after.forward(out) : out, up];
    }
    let [out, up] = this.delta(x, true);
    if (this.c.adapterResidualBeforeLn) out = out.add(residual);
    if (this.adapter_norm_after) out = this.adapter_norm_after.forward(out);
    if (!this.c.adapterResidualBeforeLn) out = out.add(residual);
    return [out, up];
  }

  /** pre_forward: (adapter input, adapter residual) from the sub-block output h and its input x. */
  preForward(h: Tensor, x: Tensor, ln: Norm): [Tensor, Tensor] {
    const [hs, , res] = this.preForwardQuery(h, x, ln, false);
    return [hs, res];
  }

  /**
   * pre_forward with a fusion config: also AdapterFusion's query, the input hidden states h when
   * query_before_ln, else the adapter input (the parallel adapter: the sub-block input x).
   */
  preForwardQuery(h: Tensor, x: Tensor, ln: Norm, queryBeforeLn: boolean): [Tensor, Tensor, Tensor] {
    if (this.c.isParallel) return [x, x, x];
    const [hs, res] = this.preForwardSeq(h, x, ln);
    return [hs, queryBeforeLn ? h : hs, res];
  }

  private preForwardSeq(h: Tensor, x: Tensor, ln: Norm): [Tensor, Tensor] {
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
  /** AdapterFusion layers by fusion name (AdapterHub's adapter_fusion_layer ModuleDict). */
  readonly adapter_fusion_layer = this.module('adapter_fusion_layer', new FusionLayers());

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
      // Mixed batch (adapterNames, or a top-level Parallel / BatchSplit run by PeftModel as one): each
      // adapter runs on the whole batch, then its rows are picked (no per-row loop).
      const used = rows.order.map((n, j) => [n, j] as const).filter(([n]) => this.hasAdapter(n));
      if (!used.length) return plain();
      let y = plain();  // (B, T, C)
      for (const [n, j] of used) y = where(rows.index.eq(j).view(-1, 1, 1), this.run(n, out, residual, ln), y);
      return y;
    }
    const comp = this.ctx.composition;
    if (comp) return leaves(comp).some((n) => this.hasAdapter(n)) ? this.run(comp, out, residual, ln) : plain();
    const names = this.ctx.active.filter((n) => this.hasAdapter(n));
    return names.length ? this.run(Stack(...names), out, residual, ln) : plain();
  }

  /** The fusion layer `name` at this site, or null. */
  fusion(name: string): BertFusion | null {
    return this.adapter_fusion_layer.get(name);
  }

  /**
   * AdapterHub's bottleneck_layer_forward: the setup composed over the state (h, x) from the first
   * pre_forward, then post_forward of the last adapter applied. A name is Stack(name).
   */
  private run(setup: Setup, out: Tensor, residual: Tensor, ln: Norm): Tensor {
    const dt = out.dtype;
    const h = dt === 'float32' ? out : out.to('float32');  // (B, T, C)
    const x = residual.dtype === 'float32' ? residual : residual.to('float32');
    const top = typeof setup === 'string' ? Stack(setup) : setup;
    const st = this.composeBlock(top, { hs: h, x, res: x, up: null, last: null }, ln, 0);
    if (st.last === null) {
      const sum = h.add(x);
      const y = ln ? ln.forward(sum) : sum;
      return y.dtype === dt ? y : y.to(dt);
    }
    const y = this.adapter(st.last).postForward(st.hs, h, st.x, ln);
    return y.dtype === dt ? y : y.to(dt);
  }

  /** pre_block: the first adapter's pre_forward (its input and residual). */
  private preBlock(setup: Setup, st: BnState, ln: Norm): BnState {
    const name = first(setup);
    if (!this.hasAdapter(name)) throw new Error(`${describeSetup(setup)}: its first adapter "${name}" is not at layer ${this.layerIndex} (leave_out?), and AdapterHub runs its pre_forward here`);
    const [hs, res] = this.adapter(name).preForward(st.hs, st.x, ln);
    return { ...st, hs, res };
  }

  private single(name: string, st: BnState): BnState {
    const [hs, up] = this.adapter(name).forwardUp(st.hs, st.res);
    return { ...st, hs, up, last: name };
  }

  private composeChild(parent: Block, c: Setup, st: BnState, ln: Norm, lvl: number): BnState | null {
    if (typeof c !== 'string') {
      checkNesting(parent, c, lvl);
      return this.composeBlock(c, st, ln, lvl + 1);
    }
    return this.hasAdapter(c) ? this.single(c, st) : null;
  }

  private composeBlock(b: Block, st: BnState, ln: Norm, lvl: number): BnState {
    switch (b.kind) {
      case 'Stack': {
        for (const c of b.children) {
          if (typeof c !== 'string') {
            checkNesting(b, c, lvl);
            st = this.composeBlock(c, st, ln, lvl + 1);
          } else if (this.hasAdapter(c)) st = this.single(c, this.preBlock(c, st, ln));
        }
        return st;
      }
      case 'Fuse': return this.fuse(b, st, ln, lvl);
      case 'Split': {
        const t = st.hs.shape[1]!;
        const total = b.splits!.reduce((a, v) => a + v, 0);
        if (total !== t) throw new Error(`${describeSetup(b)}: the input has sequence length ${t}, which is not the sum of the splits (${total})`);
        st = this.preBlock(b, st, ln);
        const outs: Tensor[] = [];
        let last: string | null = null, at = 0;
        b.children.forEach((c, i) => {
          const n = b.splits![i]!;
          const part = sliceState(st, 1, at, n);
          at += n;
          const r = this.composeChild(b, c, part, ln, lvl) ?? part;  // an adapter not at this layer: its positions pass through
          outs.push(r.hs);
          last = r.last ?? last;
        });
        return { ...st, hs: cat(outs, 1), last };
      }
      case 'BatchSplit': {
        const rows = st.hs.shape[0]!;
        const total = b.batchSizes!.reduce((a, v) => a + v, 0);
        if (total !== rows) throw new Error(`${describeSetup(b)}: the batch has ${rows} rows, which is not the sum of the batch sizes (${total})`);
        st = this.preBlock(b, st, ln);
        const states: BnState[] = [];
        let at = 0;
        b.children.forEach((c, i) => {
          const n = b.batchSizes![i]!;
          const part = sliceState(st, 0, at, n);
          at += n;
          states.push(this.composeChild(b, c, part, ln, lvl) ?? part);
        });
        // pad_and_concat: every field concatenated along the batch; `last` of the last child.
        const up = states[0]!.up !== null && states.every((s) => s.up !== null) ? cat(states.map((s) => s.up!), 0) : null;
        return { hs: cat(states.map((s) => s.hs), 0), x: cat(states.map((s) => s.x), 0), res: cat(states.map((s) => s.res), 0), up, last: states[states.length - 1]!.last };
      }
      case 'Average': {
        st = this.preBlock(b, st, ln);
        const got: [BnState, number][] = [];
        b.children.forEach((c, i) => {
          const r = this.composeChild(b, c, st, ln, lvl);
          if (r) got.push([r, b.weights![i]!]);
        });
        if (!got.length) return st;
        // AdapterHub's mean(): torch.mean(stack(hidden_states) * weights, dim=0) = Σ w_k h_k / K.
        let acc = got[0]![0].hs.mul(got[0]![1]);
        for (const [r, w] of got.slice(1)) acc = acc.add(r.hs.mul(w));
        const s0 = got[0]![0];
        return { hs: got.length === 1 ? acc : acc.div(got.length), x: s0.x, res: s0.res, up: s0.up, last: got[got.length - 1]![0].last };
      }
      case 'Parallel':
        if (lvl === 0) throw new Error(`${describeSetup(b)}: a top-level Parallel runs through PeftModel.forward (the batch replicated once per adapter); call peft.forward, not the model directly`);
        throw new Error(`${describeSetup(b)}: a Parallel nested in ${'a Stack'} replicates the batch inside the model, which adapterkit's models do not support; use a top-level Parallel`);
    }
  }

  /** AdapterHub's compose_fuse (the last adapter's pre_forward gives the query). */
  private fuse(b: Block, st: BnState, ln: Norm, lvl: number): BnState {
    const name = fusionName(b);
    const layer = this.fusion(name);
    if (!layer) throw new Error(`${describeSetup(b)}: no AdapterFusion "${name}" at layer ${this.layerIndex}; add it with addAdapterFusion(peft, fuse)`);
    const lastName = last(b);
    if (!this.hasAdapter(lastName)) throw new Error(`${describeSetup(b)}: its last adapter "${lastName}" is not at layer ${this.layerIndex} (leave_out?), and AdapterHub runs its pre_forward here`);
    const [hs, query, res] = this.adapter(lastName).preForwardQuery(st.hs, st.x, ln, layer.config.query_before_ln);
    st = { ...st, hs, res };
    const ups: Tensor[] = [];
    for (const c of b.children) {
      const r = this.composeChild(b, c, st, ln, lvl);
      if (!r) continue;
      if (r.up === null) throw new Error(`${describeSetup(b)}: ${describeSetup(c)} applied no adapter at layer ${this.layerIndex}`);
      ups.push(r.up);
    }
    if (!ups.length) return { ...st, last: lastName };
    const upList = stack(ups, 2);  // (B, T, K, C): AdapterHub's stack(dim 0).permute(1, 2, 0, 3)
    return { ...st, hs: layer.forward(query, upList, upList, st.res), last: lastName };
  }
}

/** AdapterHub's BottleneckState (the layer norm is passed alongside). */
interface BnState {
  hs: Tensor;
  /** The sub-block residual input (input_tensor). */
  x: Tensor;
  /** The adapter residual. */
  res: Tensor;
  /** The last adapter's up-projection (for Fuse). */
  up: Tensor | null;
  last: string | null;
}

function sliceState(st: BnState, dim: number, start: number, length: number): BnState {
  return { hs: st.hs.narrow(dim, start, length), x: st.x.narrow(dim, start, length), res: st.res.narrow(dim, start, length), up: st.up ? st.up.narrow(dim, start, length) : null, last: null };
}

/** AdapterHub's ALLOWED_NESTINGS (composition.py). */
const ALLOWED: Record<string, string[]> = {
  Stack: ['Fuse', 'Split', 'Parallel', 'BatchSplit', 'Average'],
  Fuse: ['Stack'],
  Split: ['Split', 'Stack', 'BatchSplit', 'Average'],
  Parallel: ['Stack', 'BatchSplit', 'Average'],
  BatchSplit: ['Stack', 'Split', 'BatchSplit', 'Average'],
  Average: ['Stack', 'Split', 'BatchSplit'],
};

/** AdapterHub's check_composition_valid. */
function checkNesting(parent: Block, child: Block, lvl: number): void {
  if (parent.kind === 'Stack' && lvl >= 1) throw new Error(`adapter setup is too deep: cannot have ${child.kind} at level ${lvl} (in ${describeSetup(parent)})`);
  if (!ALLOWED[parent.kind]!.includes(child.kind)) throw new Error(`cannot nest ${child.kind} inside ${parent.kind}; ${parent.kind} may contain only: adapter names, ${ALLOWED[parent.kind]!.join(', ')}`);
}
