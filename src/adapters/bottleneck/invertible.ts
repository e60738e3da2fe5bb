// Invertible adapters (MAD-X; AdapterHub NICECouplingBlock, modeling.py) applied to the embedding
// output. Held by one part at `<basePrefix>.invertible_adapters` with per-adapter `<name>.F.*`/`<name>.G.*`
// (AdapterHub's keys), installing the model's embeddingOutput hook: the first active adapter that
// has one is applied (AdapterHub uses adapter_setup.first()); none when disabled.
//   forward:  y1 = x1 + F(x2); y2 = x2 + G(y1)        inverse: x2 = y2 - G(y1); x1 = y1 - F(x2)
// with x1 = x[..., :C//2], x2 = x[..., C//2:], F/G = Linear -> act -> Linear (N(0, 0.02) weights, zero biases).
// The inverse before the LM head is not applied: AdapterHub applies it only in its flex-head models
// (GPT2AdapterModel, BertAdapterModel), not in the static HF heads (GPT2LMHeadModel, …) these models are.
// Shapes: B batch, T time, C channels.
import { Module } from '../../nn/module.js';
import { Linear } from '../../nn/layers.js';
import { cat, noGrad, zeros, empty, tidy, where, type Tensor, type Device } from '../../tensor/index.js';
import type { AdapterContext, AdapterPart } from '../types.js';
import type { PretrainedModel } from '../../models/types.js';
import { bnActivation } from './activation.js';
import { seedFor } from './init.js';
import { loadByName, stateOf, distinct } from './state.js';

/** nn.Sequential(Linear(i, i // rf), act, Linear(i // rf, o)): params at `0.*` and `2.*`. */
class Subnet extends Module {
  constructor(dimsIn: number, dimsOut: number, rf: number, private readonly act: (x: Tensor) => Tensor, device: Device, seed: number, key: string) {
    super();
    const mid = Math.floor(dimsIn / rf);
    if (mid < 1) throw new Error(`invertible adapter: ${dimsIn} // inv_adapter_reduction_factor ${rf} is 0; use a smaller reduction factor`);
    for (const [i, a, b] of [['0', dimsIn, mid], ['2', mid, dimsOut]] as const) {
      const l = this.module(i, new Linear(a, b, { dtype: 'float32' }));
      noGrad(() => {
        l.setParameter('weight', empty([b, a], { device }).normal_(0, 0.02, seedFor(seed, `${key}.${i}`)), true);
        l.setParameter('bias', zeros([b], { device }), true);
      });
    }
  }
  forward(x: Tensor): Tensor {
    return (this.child('2') as Linear).forward(this.act((this.child('0') as Linear).forward(x)));
  }
}

export class NICECouplingBlock extends Module {
  readonly F: Subnet;
  readonly G: Subnet;
  readonly split1: number;
  constructor(channels: number, nonLinearity: string, rf: number, device: Device, seed: number, key: string) {
    super();
    this.split1 = Math.floor(channels / 2);
    const split2 = channels - this.split1;
    const act = bnActivation(nonLinearity);
    this.F = this.module('F', new Subnet(split2, this.split1, rf, act, device, seed, `${key}.F`));
    this.G = this.module('G', new Subnet(this.split1, split2, rf, act, device, seed, `${key}.G`));
  }
  /** (B, T, C) -> (B, T, C); rev: the exact inverse. */
  forward(x: Tensor, rev = false): Tensor {
    const c = x.shape[x.shape.length - 1]!;
    const x1 = x.narrow(-1, 0, this.split1);  // (B, T, C//2)
    const x2 = x.narrow(-1, this.split1, c - this.split1);  // (B, T, C - C//2)
    if (!rev) {
      const y1 = x1.add(this.F.forward(x2));
      return cat([y1, x2.add(this.G.forward(y1))], -1);
    }
    const y2 = x2.sub(this.G.forward(x1));
    return cat([x1.sub(this.F.forward(y2)), y2], -1);
  }
}

export class InvertibleAdapters extends Module implements AdapterPart {
  readonly isAdapterPart = true as const;
  readonly peftType = 'BOTTLENECK';
  readonly mergedAdapters: readonly string[] = [];

  constructor(private readonly ctx: AdapterContext, model: PretrainedModel) {
    super();
    model.hooks.embeddingOutput = () => this.hook();
  }

  hasAdapter(name: string): boolean { return this.child(name) !== null; }
  block(name: string): NICECouplingBlock { return this.child(name) as NICECouplingBlock; }

  addAdapter(name: string, channels: number, nonLinearity: string, rf: number, device: Device, seed: number, key: string): void {
    if (this.hasAdapter(name)) throw new Error(`invertible adapter "${name}" already exists`);
    this.addSubmodule(name, new NICECouplingBlock(channels, nonLinearity, rf, device, seed, key));
  }
  deleteAdapter(name: string): void {
    const m = this.child(name);
    if (!m) return;
    this.removeSubmodule(name);
    m.dispose();
  }
  adapterState(name: string): Map<string, Tensor> { return stateOf(this.block(name), `${name}.`); }
  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void { loadByName(this.block(name), '', state, path); }
  adapterParameters(name: string): Tensor[] { return this.hasAdapter(name) ? distinct(this.block(name)) : []; }
  merge(names: string[]): void {
    if (names.some((n) => this.hasAdapter(n))) throw new Error('bottleneck adapters are not mergeable (invertible adapters act on the embedding output)');
  }
  unmerge(): void {}
  detach(model: PretrainedModel): void {
    delete model.hooks.embeddingOutput;
  }

  /** What the model applies after its embeddings in this forward, or null. */
  private hook(): ((x: Tensor) => Tensor) | null {
    if (this.ctx.disabled) return null;
    const rows = this.ctx.rows;
    if (rows) {
      const used = rows.order.map((n, j) => [n, j] as const).filter(([n]) => this.hasAdapter(n));
      if (!used.length) return null;
      return (x) => tidy(() => {
        let out = x;
        for (const [n, j] of used) {
          const mask = rows.index.eq(j).view(-1, 1, 1);  // (B, 1, 1)
          out = where(mask, this.apply(n, x), out);
        }
        return out;
      });
    }
    const first = this.ctx.active[0];
    if (first === undefined || !this.hasAdapter(first)) return null;
    return (x) => this.apply(first, x);
  }

  /** Runs in float32 and returns the activations' dtype. */
  apply(name: string, x: Tensor, rev = false): Tensor {
    return tidy(() => {
      const y = this.block(name).forward(x.dtype === 'float32' ? x : x.to('float32'), rev);
      return y.dtype === x.dtype ? y : y.to(x.dtype);
    });
  }
}
