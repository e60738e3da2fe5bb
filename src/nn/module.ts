// Module: named parameters and submodules whose dotted paths equal Hugging Face state-dict keys
// (convention 2), so PEFT target_modules and adapter keys map one to one. A module owns its
// parameters (they are kept out of every scope) and frees them in dispose().
import { keep, noGrad, TorchError, type Tensor, type DType, type Device } from '../tensor/index.js';

export class Module {
  training = true;
  private readonly _params = new Map<string, Tensor>();
  private readonly _buffers = new Map<string, Tensor>();
  private readonly _modules = new Map<string, Module>();

  /** Registers (or replaces) a parameter; the module now owns it. */
  protected param(name: string, t: Tensor, trainable = true): Tensor {
    keep(t);
    if (t.requiresGrad !== trainable && t.isLeaf) t.requiresGrad = trainable;
    this._params.set(name, t);
    return t;
  }

  /** A non-trainable tensor that is not part of the state dict (e.g. a RoPE table). */
  protected buffer(name: string, t: Tensor): Tensor {
    keep(t);
    const old = this._buffers.get(name);
    if (old && old !== t) old.dispose();
    this._buffers.set(name, t);
    return t;
  }

  /** An own parameter by name (fast path for forward passes); null when absent. */
  protected own(name: string): Tensor | null {
    return this._params.get(name) ?? null;
  }

  /** An own buffer by name; null when absent. */
  protected ownBuffer(name: string): Tensor | null {
    return this._buffers.get(name) ?? null;
  }

  /** Forgets a buffer (the caller disposes it). */
  protected dropBuffer(name: string): void {
    this._buffers.delete(name);
  }

  protected module<M extends Module>(name: string, m: M): M {
    this._modules.set(name, m);
    return m;
  }

  protected removeModule(name: string): void {
    this._modules.delete(name);
  }

  protected dropParam(name: string): void {
    this._params.delete(name);
  }

  /** Direct children, in registration order. */
  children(): [string, Module][] {
    return [...this._modules.entries()];
  }

  /** Own parameters (not recursive). */
  ownParameters(): [string, Tensor][] {
    return [...this._params.entries()];
  }

  /** Every parameter with its dotted path; a tied parameter appears under each of its names. */
  namedParameters(prefix = ''): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [n, t] of this._params) out.push([prefix + n, t]);
    for (const [n, m] of this._modules) out.push(...m.namedParameters(`${prefix}${n}.`));
    return out;
  }

  /** Every module with its dotted path ('' for this one). */
  namedModules(prefix = ''): [string, Module][] {
    const out: [string, Module][] = [[prefix.replace(/\.$/, ''), this]];
    for (const [n, m] of this._modules) out.push(...m.namedModules(`${prefix}${n}.`));
    return out;
  }

  /** Distinct parameter tensors (tied weights counted once). */
  parameters(): Tensor[] {
    return [...new Set(this.namedParameters().map(([, t]) => t))];
  }

  trainableParameters(): Tensor[] {
    return this.parameters().filter((t) => t.requiresGrad);
  }

  numParameters(opts: { trainableOnly?: boolean } = {}): number {
    return (opts.trainableOnly ? this.trainableParameters() : this.parameters()).reduce((n, t) => n + t.numel, 0);
  }

  getParameter(path: string): Tensor {
    const dot = path.lastIndexOf('.');
    const owner = dot < 0 ? this : this.getSubmodule(path.slice(0, dot));
    const t = owner._params.get(path.slice(dot + 1));
    if (!t) throw new TorchError('getParameter', [path], `no parameter named "${path}"`);
    return t;
  }

  /** Replaces a parameter by path; the old tensor is disposed unless it is still used elsewhere. */
  setParameter(path: string, t: Tensor, trainable?: boolean): void {
    const dot = path.lastIndexOf('.');
    const owner = dot < 0 ? this : this.getSubmodule(path.slice(0, dot));
    const name = path.slice(dot + 1);
    const old = owner._params.get(name);
    if (!old) throw new TorchError('setParameter', [path], `no parameter named "${path}"`);
    owner.param(name, t, trainable ?? old.requiresGrad);
    if (old !== t && !this.parameters().includes(old)) old.dispose();
  }

  getSubmodule(path: string): Module {
    if (path === '') return this;
    let m: Module = this;
    for (const part of path.split('.')) {
      const next = m._modules.get(part);
      if (!next) throw new TorchError('getSubmodule', [path], `no submodule "${part}" in "${path}"`);
      m = next;
    }
    return m;
  }

  /** The direct child `name`, or null (how model code finds optional adapter sites). */
  child(name: string): Module | null {
    return this._modules.get(name) ?? null;
  }

  /** Adds a new submodule at `path` (its parent must exist; the name must be free). */
  addSubmodule(path: string, m: Module): void {
    const dot = path.lastIndexOf('.');
    const parent = dot < 0 ? this : this.getSubmodule(path.slice(0, dot));
    const name = path.slice(dot + 1);
    if (parent._modules.has(name)) throw new TorchError('addSubmodule', [path], `submodule "${path}" already exists`);
    parent._modules.set(name, m);
  }

  /** Removes the submodule at `path` and returns it (not disposed). */
  removeSubmodule(path: string): Module {
    const dot = path.lastIndexOf('.');
    const parent = dot < 0 ? this : this.getSubmodule(path.slice(0, dot));
    const name = path.slice(dot + 1);
    const m = parent._modules.get(name);
    if (!m) throw new TorchError('removeSubmodule', [path], `no submodule "${path}" to remove`);
    parent._modules.delete(name);
    return m;
  }

  /** Swaps a submodule (how adapters are injected); the field of the same name follows. */
  setSubmodule(path: string, m: Module): void {
    const dot = path.lastIndexOf('.');
    const parent = dot < 0 ? this : this.getSubmodule(path.slice(0, dot));
    const name = path.slice(dot + 1);
    const old = parent._modules.get(name);
    if (!old) throw new TorchError('setSubmodule', [path], `no submodule "${path}" to replace`);
    parent._modules.set(name, m);
    // Model code calls children through fields (this.c_attn.forward): every field that held the old
    // module now holds the new one, whatever the field is called.
    const fields = parent as unknown as Record<string, unknown>;
    for (const k of Object.keys(fields)) if (fields[k] === old) fields[k] = m;
  }

  train(on = true): this {
    for (const [, m] of this.namedModules()) m.training = on;
    return this;
  }
  eval(): this {
    return this.train(false);
  }

  /** Freezes (or unfreezes) every parameter. */
  requiresGrad_(on: boolean): this {
    for (const t of this.parameters()) if (t.isLeaf) t.requiresGrad = on;
    return this;
  }

  /** Parameters by path, sharing storage with the module (no copies). */
  stateDict(): Map<string, Tensor> {
    return new Map(this.namedParameters());
  }

  /** Casts every floating parameter to `dtype` in place of the old one. */
  toDtype(dtype: DType): this {
    const floating = ['float32', 'float16', 'bfloat16', 'float64'];
    return this.convert((t) => t.dtype !== dtype && floating.includes(t.dtype), (t) => t.to(dtype), false);
  }

  /** Moves every parameter and buffer to `device` (tied parameters stay tied; gradients are not kept). */
  to(device: Device): this {
    return this.convert((t) => t.device !== device, (t) => t.toDevice(device), true);
  }

  /** The device of the first parameter ('cpu' for a module without parameters). */
  get device(): Device {
    return this.firstParameter()?.device ?? 'cpu';
  }

  // Depth-first, stopping at the first parameter: `device` is read on every mixed-batch forward, so
  // it must not build the whole named-parameter list.
  private firstParameter(): Tensor | null {
    for (const t of this._params.values()) return t;
    for (const m of this._modules.values()) {
      const t = m.firstParameter();
      if (t) return t;
    }
    return null;
  }

  // Replaces each parameter (and buffer, with `buffers`) that `need` selects by `make(old)`; a tensor
  // shared by several modules is converted once, so ties survive. The old tensors are freed.
  private convert(need: (t: Tensor) => boolean, make: (t: Tensor) => Tensor, buffers: boolean): this {
    const converted = new Map<Tensor, Tensor>();
    const get = (t: Tensor): Tensor => {
      let c = converted.get(t);
      if (!c) {
        c = make(t);
        converted.set(t, c);
      }
      return c;
    };
    noGrad(() => {
      for (const [, m] of this.namedModules()) {
        for (const [n, t] of m._params) if (need(t)) m.param(n, get(t), t.requiresGrad);
        if (buffers) for (const [n, t] of m._buffers) if (need(t)) m._buffers.set(n, keep(get(t)));
        // Model code may hold a buffer or parameter in a field (this.invFreq): point it at the new one.
        const fields = m as unknown as Record<string, unknown>;
        for (const k of Object.keys(fields)) {
          const v = fields[k];
          if (v && typeof v === 'object' && converted.has(v as Tensor)) fields[k] = converted.get(v as Tensor);
        }
      }
    });
    for (const t of converted.keys()) t.dispose();
    return this;
  }

  /**
   * A deep copy: same class and settings, every parameter and buffer cloned (detached), children
   * cloned recursively; fields that pointed at the old children point at the new ones.
   */
  cloneDeep(): this {
    const c = Object.create(Object.getPrototypeOf(this) as object) as this;
    Object.assign(c, this);
    const mods = new Map<Module, Module>();
    const self = c as unknown as { _params: Map<string, Tensor>; _buffers: Map<string, Tensor>; _modules: Map<string, Module> };
    self._params = new Map([...this._params].map(([n, t]) => [n, keep(noGrad(() => t.detach().clone()))] as [string, Tensor]));
    for (const [n, t] of self._params) if (this._params.get(n)!.requiresGrad) t.requiresGrad = true;
    self._buffers = new Map([...this._buffers].map(([n, t]) => [n, keep(t.clone())] as [string, Tensor]));
    self._modules = new Map([...this._modules].map(([n, m]) => {
      const k = m.cloneDeep();
      mods.set(m, k);
      return [n, k] as [string, Module];
    }));
    const fields = c as unknown as Record<string, unknown>;
    for (const k of Object.keys(fields)) {
      const v = fields[k];
      if (v instanceof Module && mods.has(v)) fields[k] = mods.get(v);
    }
    return c;
  }

  /** Frees every parameter and buffer of this module and its children. */
  dispose(): void {
    for (const [, m] of this._modules) m.dispose();
    for (const t of this._params.values()) t.dispose();  // disposing twice (tied) is harmless
    for (const t of this._buffers.values()) t.dispose();
    this._params.clear();
    this._buffers.clear();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}

/** A numbered list of modules: paths `h.0`, `layers.1`, ... */
export class ModuleList<M extends Module> extends Module {
  readonly length: number;
  constructor(items: M[]) {
    super();
    items.forEach((m, i) => this.module(String(i), m));
    this.length = items.length;
  }
  at(i: number): M {
    return this.getSubmodule(String(i)) as M;
  }
  *[Symbol.iterator](): IterableIterator<M> {
    for (let i = 0; i < this.length; i++) yield this.at(i);
  }
}

/** A plain named container (BERT's `cls`; an adapter's per-name `lora_A.<name>` modules). */
export class Container extends Module {
  add<M extends Module>(name: string, m: M): M {
    return this.module(name, m);
  }
  /** Adds or replaces a parameter held by the container itself (DoRA's per-adapter magnitudes). */
  addParam(name: string, t: Tensor, trainable: boolean): Tensor {
    const old = this.own(name);
    this.param(name, t, trainable);
    if (old && old !== t) old.dispose();
    return t;
  }
  remove(name: string): void {
    this.removeModule(name);
  }
  removeParam(name: string): void {
    this.own(name)?.dispose();
    this.dropParam(name);
  }
}
