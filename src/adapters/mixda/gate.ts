// The MixDA gate part (one per model, at `mixda_gate`): per adapter name a Linear(C, n) over the
// mean-pooled embedding output, softmax per example. The embeddingOutput hook pools x once per forward
// into ctx.slots.MIXDA; each layer computes the (tiny) gate from it where it runs, so the gate gets its
// gradient under gradient checkpointing too (blocks recomputed with a graph). The LoRA layers that hold the domain adapters then
// add Σ_i g_i(example) Δ_i(x), Δ_i = scaling_i B_i A_i x (+ lora_B bias): LoRA's files are not edited,
// the gate reads LoRA's public layer API (A, B, Bbias, scaling) from an output hook it installs on
// those layer instances (an own `forward` that calls the class's forward first; removed on detach).
// Shapes: B batch, T time, C hidden, n domains, I in, O out.
import { Module, Container } from '../../nn/module.js';
import { Linear } from '../../nn/layers.js';
import { noGrad, tidy, keep, zeros, empty, type Tensor, type Device } from '../../tensor/index.js';
import type { PretrainedModel } from '../../models/types.js';
import type { AdapterContext, AdapterPart } from '../types.js';
import { LoraLayer } from '../lora/layer.js';
import { seedFor } from '../lora/init.js';

export const GATE_PATH = 'mixda_gate';

/** What ctx.slots.MIXDA holds during a forward: the mean-pooled embedding output (B, C), float32. */
export interface MixdaSlot {
  pooled: Tensor | null;
}

type Hook = NonNullable<PretrainedModel['hooks']['embeddingOutput']>;
const PATCH = Symbol('mixda.forward');
type Patched = LoraLayer & { [PATCH]?: true; forward(x: Tensor): Tensor };

export class MixdaGate extends Module implements AdapterPart {
  readonly isAdapterPart = true as const;
  readonly peftType = 'MIXDA';
  readonly mergedAdapters: readonly string[] = [];
  readonly gate = this.module('gate', new Container());
  /** Domain adapter names of each MixDA adapter, in gate order. */
  readonly domains = new Map<string, string[]>();
  private readonly prev: Hook | undefined;
  private readonly patched = new Set<Patched>();
  private patchedAt = -1;

  constructor(private readonly ctx: AdapterContext, private readonly model: PretrainedModel) {
    super();
    // Chained: a hook installed before (invertible adapters) still runs, after the gate has read x.
    this.prev = model.hooks.embeddingOutput;
    model.hooks.embeddingOutput = this.hook;
  }

  hasAdapter(name: string): boolean { return this.domains.has(name); }
  linear(name: string): Linear { return this.gate.getSubmodule(name) as Linear; }

  addAdapter(name: string, domains: string[], channels: number, init: boolean, device: Device, seed: number): void {
    if (this.domains.has(name)) throw new Error(`MixDA adapter "${name}" already exists`);
    const n = domains.length;
    const lin = this.gate.add(name, new Linear(channels, n, { dtype: 'float32' }));
    noGrad(() => {
      const o = { dtype: 'float32', device } as const;
      const bound = 1 / Math.sqrt(channels);  // nn.Linear's default: U(±1/√C) for weight and bias
      lin.setParameter('weight', init ? zeros([n, channels], o) : empty([n, channels], o).uniform_(-bound, bound, seedFor(seed, `${GATE_PATH}.${name}.weight`)), true);
      lin.setParameter('bias', init ? zeros([n], o) : empty([n], o).uniform_(-bound, bound, seedFor(seed, `${GATE_PATH}.${name}.bias`)), true);
    });
    this.domains.set(name, [...domains]);
    this.patchedAt = -1;
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    if (!this.domains.has(name)) return;
    this.gate.getSubmodule(name).dispose();
    this.gate.remove(name);
    this.domains.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    if (!this.domains.has(name)) return [];
    const l = this.linear(name);
    return [l.weight, l.bias!];
  }

  adapterState(name: string): Map<string, Tensor> {
    if (!this.domains.has(name)) return new Map();
    const l = this.linear(name);
    return new Map([['weight', l.weight], ['bias', l.bias!]]);
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    if (!this.domains.has(name)) throw new Error(`no MixDA adapter "${name}" on ${path}`);
    const l = this.linear(name);
    const want = new Map([['weight', l.weight.shape], ['bias', l.bias!.shape]]);
    for (const k of state.keys()) if (!want.has(k)) throw new Error(`adapter file has ${path}.${k}, which a MixDA gate does not use`);
    for (const [k, shape] of want) {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      if (t.shape.length !== shape.length || t.shape.some((v, i) => v !== shape[i])) {
        throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${shape.join(', ')}] (another base model, or another number of domain adapters?)`);
      }
    }
    noGrad(() => {
      for (const k of ['weight', 'bias']) {
        const cur = l.getParameter(k);
        l.setParameter(k, tidy(() => state.get(k)!.to(cur.dtype, cur.device).clone()), cur.requiresGrad);
      }
    });
    this.ctx.version++;
  }

  override dispose(): void {
    this.dropPooled();
    super.dispose();
  }

  merge(names: string[]): void {
    if (names.some((n) => this.domains.has(n))) throw new Error('MixDA gates cannot be merged into the base weights (the mixture depends on each example); run unmerged');
  }
  unmerge(): void {}

  detach(model: PretrainedModel): void {
    for (const layer of this.patched) delete (layer as Partial<Patched>).forward;  // the class's forward again
    this.patched.clear();
    this.dropPooled();
    if (model.hooks.embeddingOutput === this.hook) {
      if (this.prev) model.hooks.embeddingOutput = this.prev;
      else delete model.hooks.embeddingOutput;
    }
  }

  /** The LoRA layers holding a domain adapter of any MixDA adapter (the model's current ones). */
  loraLayers(): [string, LoraLayer][] {
    const all = new Set([...this.domains.values()].flat());
    return this.model.namedModules().filter((e): e is [string, LoraLayer] => e[1] instanceof LoraLayer && [...all].some((d) => (e[1] as LoraLayer).hasAdapter(d)));
  }

  /** Installs the output hook on every LoRA layer that holds a domain adapter (again after adapters change). */
  private ensurePatched(active: string[]): void {
    if (this.patchedAt === this.ctx.version) return;
    const layers = this.loraLayers();
    for (const name of active) {
      for (const d of this.domains.get(name)!) {
        if (!layers.some(([, l]) => l.hasAdapter(d))) throw new Error(`MixDA adapter "${name}": its domain adapter "${d}" is no longer on the model (deleted?); the gate needs every domain adapter it was made with`);
      }
    }
    for (const [, layer] of layers) {
      const p = layer as Patched;
      if (this.patched.has(p) && Object.prototype.hasOwnProperty.call(p, 'forward')) continue;
      const base = LoraLayer.prototype.forward;
      p.forward = (x: Tensor) => this.addMixture(p, x, base.call(p, x));
      this.patched.add(p);
    }
    this.patchedAt = this.ctx.version;
  }

  /** The embeddingOutput hook: computes each active gate from x (B, T, C), then runs a chained hook. */
  private readonly hook: Hook = () => {
    const prevFn = this.prev?.() ?? null;
    this.dropPooled();  // fresh every forward: a pooled input never outlives the next forward
    const active = this.ctx.disabled ? [] : this.ctx.active.filter((n) => this.domains.has(n));
    if (!active.length) return prevFn;
    this.ensurePatched(active);
    return (x: Tensor) => {
      // (B, C), padding included (the hook sees no attention mask); kept past the embedding segment's scope.
      this.dropPooled();
      this.ctx.slots.MIXDA = { pooled: keep(x.to('float32').mean(1)) } satisfies MixdaSlot;
      return prevFn ? prevFn(x) : x;
    };
  };

  private dropPooled(): void {
    const s = this.ctx.slots.MIXDA as MixdaSlot | undefined;
    s?.pooled?.dispose();
    this.ctx.slots.MIXDA = { pooled: null } satisfies MixdaSlot;
  }

  /** The gate (B, n) of MixDA adapter `name` for the current forward: softmax(Linear(pooled)). */
  gateOf(name: string): Tensor {
    const pooled = (this.ctx.slots.MIXDA as MixdaSlot | undefined)?.pooled;
    if (!pooled) throw new Error(`MixDA adapter "${name}": no pooled input in this forward (the model's embeddingOutput hook no longer reaches the gate: was it replaced by another method added later?)`);
    return this.linear(name).forward(pooled).softmax(-1);
  }

  /** y + Σ_i g_i Δ_i(x) for every active MixDA adapter whose domains live on this layer. */
  private addMixture(layer: LoraLayer, x: Tensor, y: Tensor): Tensor {
    if (this.ctx.disabled) return y;
    let out = y;
    for (const name of this.ctx.active) {
      const domains = this.domains.get(name);
      if (!domains) continue;
      if (this.ctx.rows) throw new Error(`MixDA adapter "${name}" cannot run in a mixed batch (per-row adapters); its gate mixes the domain adapters per example instead`);
      const on = domains.filter((d) => layer.hasAdapter(d));
      if (!on.length) continue;
      const both = on.find((d) => this.ctx.active.includes(d));
      if (both) throw new Error(`domain adapter "${both}" is active together with its MixDA gate "${name}" (it would be added twice): activate the gate alone`);
      if (layer.mergedAdapters.length) throw new Error(`MixDA adapter "${name}" cannot run while LoRA adapters are merged into its layers: unmerge first`);
      const g = this.gateOf(name);  // (B, n)
      const n = g.shape[0]!;
      if (x.shape[0] !== n) throw new Error(`MixDA adapter "${name}": the gate has ${n} rows but the layer input has ${x.shape[0]}`);
      const x3 = x.reshape(n, -1, layer.inFeatures);  // (B, T, I)
      let acc: Tensor | null = null;
      for (const d of on) {
        const i = domains.indexOf(d);
        const A = layer.A(d);  // (R, I)
        const xa = x3.dtype === A.dtype ? x3 : x3.to(A.dtype);
        let delta = xa.matmul(A.transpose(0, 1)).matmul(layer.B(d).transpose(0, 1));  // (B, T, O)
        const bb = layer.Bbias(d);
        if (bb) delta = delta.add(bb);
        const w = g.narrow(1, i, 1).reshape(n, 1, 1).mul(layer.scaling(d));  // (B, 1, 1)
        const term = delta.mul(w);
        acc = acc ? acc.add(term) : term;
      }
      out = out.add(acc!.to(out.dtype).view(...out.shape));
    }
    return out;
  }
}
