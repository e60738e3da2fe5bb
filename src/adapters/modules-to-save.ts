// modules_to_save (PEFT's ModulesToSaveWrapper): a module trained in full for each adapter, e.g. a
// classifier head. The original stays as `original_module`; each adapter gets a trainable copy
// under `modules_to_save.<name>`, used while that adapter is active.
import { Module, Container } from '../nn/module.js';
import { noGrad, tidy, tensor, cat, Tensor } from '../tensor/index.js';
import type { AdapterContext } from './types.js';

type Forwardable = Module & { forward(...args: never[]): unknown };

export class ModulesToSave extends Module {
  readonly isModulesToSave = true as const;
  readonly original_module: Forwardable;
  readonly modules_to_save = this.module('modules_to_save', new Container());

  constructor(original: Module, private readonly ctx: AdapterContext, private readonly copy: (m: Module) => Module) {
    super();
    this.original_module = this.module('original_module', original as Forwardable);
  }

  addAdapter(name: string): void {
    const c = noGrad(() => this.copy(this.original_module));
    c.requiresGrad_(true);
    this.modules_to_save.add(name, c);
  }
  hasAdapter(name: string): boolean {
    return this.modules_to_save.children().some(([n]) => n === name);
  }
  deleteAdapter(name: string): void {
    if (!this.hasAdapter(name)) return;
    this.modules_to_save.getSubmodule(name).dispose();
    this.modules_to_save.remove(name);
  }
  /** The module in use: the first active adapter's copy, else the original. */
  current(): Forwardable {
    if (!this.ctx.disabled) for (const a of this.ctx.active) if (this.hasAdapter(a)) return this.modules_to_save.getSubmodule(a) as Forwardable;
    return this.original_module;
  }
  forward(...args: unknown[]): unknown {
    if (this.ctx.rows && !this.ctx.disabled) return this.mixedBatch(args);
    const m = this.current() as unknown as { forward(...a: unknown[]): unknown };
    return m.forward(...args);
  }

  /**
   * A mixed batch (PEFT's ModulesToSaveWrapper._mixed_batch_forward): each row goes through its
   * adapter's copy (the original for base rows and for adapters without a copy here). The first
   * argument is split by rows; the outputs are put back in row order.
   */
  private mixedBatch(args: unknown[]): Tensor {
    const [x, ...rest] = args;
    if (!(x instanceof Tensor)) throw new Error('modules_to_save: a mixed batch needs a tensor input with rows first');
    const names = this.ctx.rows!.names;
    if (names.length !== x.shape[0]) throw new Error(`modules_to_save: ${names.length} adapter names for ${x.shape[0]} rows`);
    const groups = new Map<string | null, number[]>();
    names.forEach((n, i) => {
      const key = n !== null && this.hasAdapter(n) ? n : null;
      groups.set(key, [...(groups.get(key) ?? []), i]);
    });
    return tidy(() => {
      const outs: Tensor[] = [];
      const order: number[] = [];
      for (const [n, rows] of groups) {
        const m = (n === null ? this.original_module : this.modules_to_save.getSubmodule(n)) as unknown as { forward(...a: unknown[]): Tensor };
        outs.push(m.forward(x.indexSelect(0, tensor(rows, { dtype: 'int64', device: x.device })), ...rest));
        order.push(...rows);
      }
      const inverse = new Array<number>(order.length);
      order.forEach((row, j) => { inverse[row] = j; });
      return cat(outs, 0).indexSelect(0, tensor(inverse, { dtype: 'int64', device: x.device }));
    });
  }
  /** Parameters of an adapter's copy, keyed relative to the wrapped module ("weight", "dense.bias"). */
  adapterState(name: string): Map<string, Tensor> {
    if (!this.hasAdapter(name)) return new Map();
    return new Map(this.modules_to_save.getSubmodule(name).namedParameters());
  }
}
