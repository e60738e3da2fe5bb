// Compacter's parameters shared by every layer of one adapter (AdapterHub init_shared_parameters),
// held by one part at `<basePrefix>.shared_parameters` with keys `<name>.phm_rule` (or
// `<name>.phm_rule_left` / `<name>.phm_rule_right` when factorized), as AdapterHub saves them.
// Init: c_init "normal" N(0, phm_init_range), "uniform" U(-1, 1).
import { Module, Container } from '../../nn/module.js';
import { empty, noGrad, type Tensor, type Device } from '../../tensor/index.js';
import type { AdapterPart } from '../types.js';
import type { BottleneckConfig } from './config.js';
import { ruleShapes, ruleOf } from './phm.js';
import { seedFor } from './init.js';
import { loadByName, stateOf, distinct } from './state.js';

export class SharedParameters extends Module implements AdapterPart {
  readonly isAdapterPart = true as const;
  readonly peftType = 'BOTTLENECK';
  readonly mergedAdapters: readonly string[] = [];
  private readonly learn = new Map<string, boolean>();
  private readonly factorized = new Map<string, boolean>();

  hasAdapter(name: string): boolean { return this.child(name) !== null; }
  private dict(name: string): Container { return this.child(name) as Container; }

  addAdapter(name: string, c: BottleneckConfig, device: Device, seed: number, key: string): void {
    if (this.hasAdapter(name)) throw new Error(`shared parameters of "${name}" already exist`);
    const d = new Container();
    noGrad(() => {
      for (const [n, shape] of ruleShapes(c)) {
        const t = empty(shape, { dtype: 'float32', device });
        if (c.phmCInit === 'uniform') t.uniform_(-1, 1, seedFor(seed, `${key}.${n}`));
        else t.normal_(0, c.phmInitRange, seedFor(seed, `${key}.${n}`));
        d.addParam(n, t, c.learnPhm);
      }
    });
    this.addSubmodule(name, d);
    this.learn.set(name, c.learnPhm);
    this.factorized.set(name, c.factorizedPhmRule);
  }

  /** The rule (n, n, n) of an adapter, for its PHM layers at forward time. */
  rule(name: string): Tensor {
    const d = this.dict(name);
    return ruleOf((k) => d.getParameter(k), this.factorized.get(name)!);
  }

  deleteAdapter(name: string): void {
    const m = this.child(name);
    if (!m) return;
    this.removeSubmodule(name);
    m.dispose();
  }
  adapterState(name: string): Map<string, Tensor> { return stateOf(this.dict(name), `${name}.`); }
  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void { loadByName(this.dict(name), '', state, path); }
  adapterParameters(name: string): Tensor[] { return this.hasAdapter(name) && this.learn.get(name) ? distinct(this.dict(name)) : []; }
  merge(names: string[]): void {
    if (names.some((n) => this.hasAdapter(n))) throw new Error('bottleneck adapters are not mergeable');
  }
  unmerge(): void {}
}
