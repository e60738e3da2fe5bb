// modules_to_save (PEFT's ModulesToSaveWrapper): a module trained in full for each adapter, e.g. a
// classifier head. The original stays as `original_module`; each adapter gets a trainable copy
// under `modules_to_save.<name>`, used while that adapter is active.
import { Module, Container } from '../nn/module.js';
import { noGrad, type Tensor } from '../tensor/index.js';
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
    const m = this.current() as unknown as { forward(...a: unknown[]): unknown };
    return m.forward(...args);
  }
  /** Parameters of an adapter's copy, keyed relative to the wrapped module ("weight", "dense.bias"). */
  adapterState(name: string): Map<string, Tensor> {
    if (!this.hasAdapter(name)) return new Map();
    return new Map(this.modules_to_save.getSubmodule(name).namedParameters());
  }
}
