// PeftModel: a frozen base model with named adapters injected into it (PEFT's get_peft_model).
// Adapters can be added, activated, disabled for a scope, deleted, mixed per row of a batch,
// merged and unmerged. Every method goes through the contract of types.ts only: this file names no
// method; what a method can do is read from its capabilities.
import { Module } from '../nn/module.js';
import { QuantLinear } from '../quant/linear.js';
import { tensor, noGrad, cat, type Tensor } from '../tensor/index.js';
import type { PretrainedModel, ModelInput, ModelOutput } from '../models/types.js';
import { adapterMethod, defaultAdapterMethod } from './registry.js';
import { findTargets, allLinearExclusions } from './targets.js';
import { isTunerLayer, isAdapterPart, type AdapterConfigBase, type AdapterContext, type AdapterMethod, type AdapterOptions, type AdapterPart, type MethodRuntime, type TunerLayer } from './types.js';
import { ModulesToSave } from './modules-to-save.js';
import { TrainableTokens, isTrainableTokens } from './trainable-tokens.js';
import { Embedding, Linear } from '../nn/layers.js';
import { leaves, validateSetup, parseSetup, describe, type Setup, type Block } from './composition.js';
import './builtin.js';

export interface AddAdapterOptions {
  /** Seeds the adapter's random initialisation (default 0). */
  seed?: number;
  /** Sample batches of input ids (B, T) for data-driven initialisations (CorDA, sensitivity budgets, …). */
  data?: Tensor[];
  /** The task's loss on sample batch i of `data` (labels included), for data-driven selections (LT-SFT, SPT). */
  taskLoss?: (batch: number) => Tensor;
}

export interface PeftInput extends ModelInput {
  /** Mixed batch: the adapter of each row, or null / "__base__" (PEFT's name) for the base model alone. */
  adapterNames?: readonly (string | null)[];
}

/** PEFT's placeholder for "no adapter" in a mixed batch. */
export const BASE_ROW = '__base__';

/** PEFT's PeftModelForSequenceClassification / ForTokenClassification add these heads to modules_to_save. */
const CLASSIFIER_HEADS: Record<string, string[]> = { SEQ_CLS: ['classifier', 'score'], TOKEN_CLS: ['classifier', 'score'] };

export class PeftModel {
  readonly ctx: AdapterContext = { active: [], disabled: false, rows: null, version: 0, slots: {}, composition: null };
  readonly configs = new Map<string, AdapterConfigBase>();
  /** Per-method state across forwards, by peft_type (created with the method's first adapter). */
  private readonly runtimes = new Map<string, MethodRuntime>();

  constructor(readonly model: PretrainedModel) {}

  /** Freezes the base and injects a first adapter, which becomes active (PEFT's get_peft_model). */
  static create(model: PretrainedModel, config: AdapterOptions, opts: AddAdapterOptions & { adapterName?: string } = {}): PeftModel {
    model.requiresGrad_(false);
    const p = new PeftModel(model);
    const name = opts.adapterName ?? 'default';
    p.addAdapter(name, config, opts);
    p.setAdapter(name);
    return p;
  }

  get modelType(): string { return this.model.modelType; }
  adapterNames(): string[] { return [...this.configs.keys()]; }
  get activeAdapters(): readonly string[] { return this.ctx.active; }
  /** The method of an adapter. */
  methodOf(name: string): AdapterMethod {
    const c = this.configs.get(name);
    if (!c) throw new Error(`no adapter "${name}" (have: ${this.adapterNames().join(', ') || 'none'})`);
    return adapterMethod(c.peftType);
  }
  /** The runtime of a method (its state across forwards), or null before its first adapter. */
  runtime<R extends MethodRuntime>(peftType: string): R | null {
    return (this.runtimes.get(peftType.toUpperCase()) as R | undefined) ?? null;
  }

  /** (path, module) pairs of the base model: wrappers stand for their base layer, adapter parts are left out. */
  private modules(): [string, Module][] {
    const out: [string, Module][] = [];
    const hidden: string[] = [];
    for (const [path, m] of this.model.namedModules()) {
      if (hidden.some((h) => path.startsWith(h + '.'))) continue;
      if (isTunerLayer(m) || m instanceof ModulesToSave || isTrainableTokens(m)) {
        hidden.push(path);
        out.push([path, isTunerLayer(m) ? m.baseLayer : m instanceof ModulesToSave ? m.original_module : m.baseLayer]);
      } else if (isAdapterPart(m)) hidden.push(path);
      else out.push([path, m]);
    }
    return out;
  }

  /**
   * The model's wrappers and parts, found once per change of structure (a walk of every module costs
   * milliseconds with hundreds of adapters resident, and forward and loading ask often).
   */
  private found: { parts: [string, AdapterPart][]; tuners: [string, TunerLayer][]; savers: [string, ModulesToSave][]; tokens: [string, TrainableTokens][] } | null = null;
  private structure(): NonNullable<PeftModel['found']> {
    if (this.found) return this.found;
    const parts: [string, AdapterPart][] = [];
    const tuners: [string, TunerLayer][] = [];
    const savers: [string, ModulesToSave][] = [];
    const tokens: [string, TrainableTokens][] = [];
    // Wrappers and parts are never nested in one another's adapter containers: their insides are skipped.
    const walk = (m: Module, path: string) => {
      if (isAdapterPart(m)) parts.push([path, m]);
      if (isTunerLayer(m)) tuners.push([path, m]);
      if (m instanceof ModulesToSave) savers.push([path, m]);
      if (isTrainableTokens(m)) tokens.push([path, m]);
      if (isAdapterPart(m) && !isTunerLayer(m)) return;
      for (const [n, c] of m.children()) {
        if (isTunerLayer(m) && n !== 'base_layer') continue;
        if (m instanceof ModulesToSave && n === 'modules_to_save') continue;
        walk(c, path ? `${path}.${n}` : n);
      }
    };
    walk(this.model, '');
    this.found = { parts, tuners, savers, tokens };
    return this.found;
  }
  /** Call after changing the model's modules outside PeftModel (the cached lists are rebuilt). */
  structureChanged(): void {
    this.found = null;
  }

  /** Every adapter part in the model (wrapped layers, residual-site modules, prompt encoders, …). */
  parts(): [string, AdapterPart][] {
    return [...this.structure().parts];
  }
  /** Readies adapter `name` for inference mixed batches in every part that can (a server calls it at load). */
  prepareMixedBatch(name: string): void {
    if (!this.configs.has(name)) throw new Error(`no adapter "${name}" (have: ${this.adapterNames().join(', ') || 'none'})`);
    noGrad(() => {
      for (const [, p] of this.parts()) if (p.hasAdapter(name)) p.prepareMixedBatch?.(name);
    });
  }
  tunerLayers(): [string, TunerLayer][] {
    return [...this.structure().tuners];
  }
  /** modules_to_save wrappers (a classifier head trained per adapter). */
  savers(): [string, ModulesToSave][] {
    return [...this.structure().savers];
  }
  /** trainable_token_indices wrappers (embeddings, and a head tied to one). */
  tokenWrappers(): [string, TrainableTokens][] {
    return [...this.structure().tokens];
  }

  addAdapter(name: string, partial: AdapterOptions | AdapterConfigBase, opts: AddAdapterOptions = {}): AdapterConfigBase {
    // No dots: an adapter name is one segment of module paths (lora_A.<name>), as in PyTorch's ModuleDict.
    if (!/^[A-Za-z0-9_-]+$/.test(name) || name === BASE_ROW) throw new Error(`adapter name "${name}" must use letters, digits, _ and - only (and not be "${BASE_ROW}")`);
    if (this.configs.has(name)) throw new Error(`adapter "${name}" already exists`);
    this.structureChanged();
    const given = (partial as { peftType?: string }).peftType;
    const method = given === undefined ? defaultAdapterMethod() : adapterMethod(given);
    const config = method.resolve({ ...partial, peftType: method.peftType } as never);
    // PEFT's PeftModelFor{Sequence,Token}Classification: the heads are always trained and saved.
    const heads = CLASSIFIER_HEADS[config.taskType ?? ''];
    if (heads) config.modulesToSave = [...(config.modulesToSave ?? []), ...heads.filter((h) => !(config.modulesToSave ?? []).includes(h))];
    const withBias = [...this.configs.values(), config].filter((c) => biasMode(c) !== 'none');
    if (withBias.length > 1) throw new Error(`only one adapter may train biases, as in PEFT; set bias "none" for "${name}"`);
    method.prepareModel?.(config, this.model, this.configs.size === 0, this.ctx);
    let paths: string[] = [];
    if (method.inject) {
      method.inject({ peft: this, name, config, seed: opts.seed ?? 0, data: opts.data ?? [], taskLoss: opts.taskLoss });
    } else {
      paths = this.wrapTargets(method, name, config, opts);
    }
    if (!this.runtimes.has(method.peftType.toUpperCase()) && method.runtime) this.runtimes.set(method.peftType.toUpperCase(), method.runtime(this));
    this.addModulesToSave(name, config.modulesToSave ?? []);
    this.addTrainableTokens(name, config);
    this.configs.set(name, config);
    this.applyBias(config, paths);
    this.structureChanged();
    // New parts and wrappers take the model's mode (a model in eval mode gets eval-mode adapters).
    for (const [, p] of this.parts()) p.train(this.model.training);
    for (const [, p] of this.savers()) p.train(this.model.training);
    this.ctx.version++;
    return config;
  }

  /** Target matching and wrapping for methods that wrap modules (LoRA, IA3, …). */
  private wrapTargets(method: AdapterMethod, name: string, config: AdapterConfigBase, opts: AddAdapterOptions): string[] {
    if (!method.canWrap || !method.wrap) throw new Error(`adapter method ${method.peftType} has neither wrap() nor inject()`);
    const canWrap = method.canWrap.bind(method);
    const targets = config.targetModules ?? method.defaultTargets?.(this.model.modelType) ?? null;
    if (targets === null) throw new Error(`no default target_modules for ${this.model.modelType}: set target_modules`);
    const mods = this.modules();
    const paths = findTargets(mods, config, targets, canWrap, allLinearExclusions(this.model, config.taskType));
    if (paths.length === 0) {
      const names = mods.filter(([, m]) => canWrap(m)).map(([p]) => p.split('.').pop()).filter((v, i, a) => a.indexOf(v) === i);
      throw new Error(`target_modules ${JSON.stringify(targets)} matched no module of this ${this.model.modelType} model (its wrappable modules are named: ${names.join(', ')})`);
    }
    const data = method.prepareAdapter?.({ config, model: this.model, paths, data: opts.data ?? [], taskLoss: opts.taskLoss }) ?? null;
    try {
      for (const path of paths) {
        const current = this.model.getSubmodule(path);
        let layer: TunerLayer;
        if (isTunerLayer(current)) {
          if (current.peftType !== method.peftType) throw new Error(`${path} already holds a ${current.peftType} adapter; one module takes adapters of one method (add "${name}" on other target_modules)`);
          layer = current;
        } else {
          layer = method.wrap!(current, this.ctx);
          this.model.setSubmodule(path, layer);
        }
        layer.addAdapter(name, config, path, { seed: opts.seed ?? 0, data: data?.get(path) });
      }
    } finally {
      data?.forEach((t) => (t as { dispose?: () => void } | null)?.dispose?.());
    }
    method.afterWrap?.(config, paths.map((p) => this.model.getSubmodule(p) as TunerLayer));
    return paths;
  }

  /**
   * PEFT's _set_trainable: every module whose path ends with an entry (a plain suffix, no dot
   * boundary) gets a trainable copy for this adapter; entries that match nothing are allowed (PEFT
   * adds "classifier" and "score" to every classification adapter, and a model has one of them).
   */
  private addModulesToSave(name: string, targets: string[]): void {
    if (!targets.length) return;
    const wrapped: string[] = [];
    const hits = this.modules().filter(([p]) => p !== '' && targets.some((t) => p.endsWith(t)));
    for (const [path] of hits) {
      if (wrapped.some((w) => path.startsWith(w + '.'))) continue;  // inside a module already copied
      wrapped.push(path);
      let w = this.model.getSubmodule(path);
      if (!(w instanceof ModulesToSave)) {
        w = new ModulesToSave(w, this.ctx, cloneModule);
        this.model.setSubmodule(path, w);
      }
      (w as ModulesToSave).addAdapter(name);
    }
  }

  /**
   * PEFT's trainable_token_indices (utils/other.py, set_additional_trainable_modules): a list trains
   * those rows of the input embedding; a {name: indices} map those of each module whose path ends
   * with the name (one must match). A head tied to the embedding reads the same rows (PEFT ties
   * them when the indices agree).
   */
  private addTrainableTokens(name: string, config: AdapterConfigBase): void {
    const spec = config.trainableTokenIndices;
    if (spec === null || spec === undefined) return;
    const embeddings = this.modules().filter(([, m]) => m instanceof Embedding).map(([p]) => p);
    const input = embeddings.find((p) => /(^|\.)(embed_tokens|wte|word_embeddings)$/.test(p)) ?? null;
    const targets: [string, number[]][] = Array.isArray(spec)
      ? [[input ?? '', spec]]
      : Object.entries(spec).map(([k, v]) => [k, v] as [string, number[]]);
    if (Array.isArray(spec) && input === null) throw new Error('trainable_token_indices: this model has no input embedding named embed_tokens / wte / word_embeddings');
    for (const [key] of targets) {
      if ((config.modulesToSave ?? []).includes(key)) throw new Error(`trainable_token_indices: "${key}" is in modules_to_save too (trained fully); use one or the other, as PEFT requires`);
    }
    const tied = this.model.tiedParameters();
    const wrapped: string[] = [];
    for (const [key, indices] of targets) {
      const hits = this.modules().filter(([p, m]) => p !== '' && p.endsWith(key) && (m instanceof Embedding || m instanceof Linear));
      if (!hits.length) throw new Error(`trainable_token_indices: "${key}" matched no embedding of this ${this.model.modelType} model`);
      for (const [path] of hits) {
        let w = this.model.getSubmodule(path);
        if (!isTrainableTokens(w)) {
          w = new TrainableTokens(w as Embedding | Linear, this.ctx);
          this.model.setSubmodule(path, w);
        }
        (w as TrainableTokens).addAdapter(name, indices);
        wrapped.push(path);
      }
    }
    // A head whose weight is tied to a wrapped embedding reads the same rows (not saved separately).
    for (const [headParam, embParam] of tied) {
      const head = headParam.replace(/\.weight$/, '');
      const emb = embParam.replace(/\.weight$/, '');
      if (!wrapped.includes(emb) || wrapped.includes(head)) continue;
      const src = this.model.getSubmodule(emb) as TrainableTokens;
      const cur = this.model.getSubmodule(head);
      if (!isTrainableTokens(cur)) this.model.setSubmodule(head, new TrainableTokens(cur as Linear, this.ctx, src));
    }
  }

  /** bias "all": every bias trains; "wrapped": the biases of the wrapped layers (PEFT's lora_only). */
  private applyBias(config: AdapterConfigBase, paths: string[]): void {
    const mode = biasMode(config);
    if (mode === 'all') for (const [n, t] of this.model.namedParameters()) if (n.endsWith('.bias') && t.isLeaf) t.requiresGrad = true;
    if (mode === 'wrapped') for (const p of paths) (this.model.getSubmodule(p) as TunerLayer).baseLayer.ownParameters().forEach(([n, t]) => { if (n === 'bias') t.requiresGrad = true; });
  }

  /**
   * Activates a composition of adapters with AdapterHub's semantics: a name, Stack(a, b) (applied in
   * order), Fuse, Split, BatchSplit, Parallel, Average, nested as AdapterHub allows; or its text form
   * ("Stack(lang_sw, Fuse(nli, qa))"). The adapters of the setup become trainable (see setAdapter).
   */
  setActive(setup: Setup): void {
    const s = typeof setup === 'string' && /[(),]/.test(setup) ? parseSetup(setup) : setup;
    validateSetup(s);
    const names = leaves(s);
    for (const n of names) if (!this.configs.has(n)) throw new Error(`no adapter "${n}" in ${describe(s)} (have: ${this.adapterNames().join(', ') || 'none'})`);
    const plain = typeof s === 'string' || (s.kind === 'Stack' && s.children.every((c) => typeof c === 'string'));
    if (!plain) this.checkComposition(s as Block);
    this.setAdapter(names);
    this.ctx.composition = plain ? null : (s as Block);
  }

  /** Every adapter of a composition must belong to a method that applies the blocks around it. */
  private checkComposition(b: Block, top = true): void {
    const kinds = new Set<string>();
    const walk = (x: Setup, depth: number) => {
      if (typeof x === 'string') return;
      if (!((x.kind === 'Parallel' || x.kind === 'BatchSplit') && depth === 0) && x.kind !== 'Stack') kinds.add(x.kind);
      if ((x.kind === 'Parallel' || x.kind === 'BatchSplit') && depth > 0) kinds.add(x.kind);
      x.children.forEach((c) => walk(c, depth + 1));
    };
    walk(b, 0);
    void top;
    for (const n of leaves(b)) {
      const m = this.methodOf(n);
      const c = this.configs.get(n)!;
      if (!m.capabilities(c).composable) throw new Error(`adapter "${n}" (${m.peftType}) cannot take part in a composition`);
      const missing = [...kinds].filter((k) => !(m.compositions ?? []).includes(k as never));
      if (missing.length) throw new Error(`adapter "${n}" (${m.peftType}) does not support ${missing.join(', ')} in ${describe(b)}`);
      if ((b.kind === 'Parallel' || b.kind === 'BatchSplit') && !m.capabilities(c).mixedBatch) throw new Error(`${b.kind} runs adapters as a mixed batch, which adapter "${n}" (${m.peftType}) does not support`);
    }
    if ((b.kind === 'Parallel' || b.kind === 'BatchSplit') && b.children.some((c) => typeof c !== 'string')) {
      throw new Error(`${describe(b)}: ${b.kind} of nested blocks is not supported (each branch must be one adapter)`);
    }
  }

  /** Activates adapters (applied in order, a Stack); only their parameters are trainable. */
  setAdapter(names: string | readonly string[]): void {
    const list = typeof names === 'string' ? [names] : [...names];
    for (const n of list) if (!this.configs.has(n)) throw new Error(`no adapter "${n}" (have: ${this.adapterNames().join(', ') || 'none'})`);
    this.ctx.active = list;
    this.ctx.composition = null;
    this.ctx.version++;
    // Only adapters whose trainability changes are touched (a server with a thousand adapters loads often).
    const change = this.adapterNames().filter((n) => this.trainable.get(n) !== list.includes(n));
    this.setTrainable(change, (n) => list.includes(n));
    for (const rt of this.runtimes.values()) rt.onActivate?.();
  }

  /** What setAdapter last made trainable, per adapter (absent: not set yet, e.g. just added). */
  private readonly trainable = new Map<string, boolean>();

  /** Sets requiresGrad of the named adapters' parameters everywhere (parts, modules_to_save copies, token rows). */
  setTrainable(names: readonly string[], on: (name: string) => boolean): void {
    if (!names.length) return;
    for (const [, part] of this.parts()) for (const n of names) for (const t of part.adapterParameters(n)) t.requiresGrad = on(n);
    for (const [, s] of this.savers()) for (const n of names) if (s.hasAdapter(n)) s.modules_to_save.getSubmodule(n).requiresGrad_(on(n));
    for (const [, w] of this.tokenWrappers()) for (const n of names) for (const t of w.adapterParameters(n)) t.requiresGrad = on(n);
    for (const n of names) this.trainable.set(n, on(n));
  }

  deleteAdapter(name: string): void {
    if (!this.configs.has(name)) throw new Error(`no adapter "${name}"`);
    for (const [path, part] of this.parts()) {
      if (!part.hasAdapter(name)) continue;
      part.deleteAdapter(name);
      if (this.adapterNames().some((n) => n !== name && part.hasAdapter(n))) continue;
      // Its last adapter is gone: a wrapper gives its base layer back, other parts leave the model.
      if (isTunerLayer(part)) this.model.setSubmodule(path, part.unload());
      else {
        part.detach?.(this.model);
        this.model.removeSubmodule(path).dispose();
      }
    }
    for (const [, s] of this.savers()) s.deleteAdapter(name);
    for (const [path, w] of this.tokenWrappers()) {
      w.deleteAdapter(name);
      if (!this.adapterNames().some((n) => n !== name && w.hasAdapter(n))) this.model.setSubmodule(path, w.unload([]));
    }
    this.configs.delete(name);
    this.trainable.delete(name);
    this.ctx.active = this.ctx.active.filter((n) => n !== name);
    this.ctx.version++;
    this.structureChanged();
  }

  /** Runs `fn` with every adapter off: the base model alone. */
  withAdaptersDisabled<T>(fn: () => T): T {
    const prev = this.ctx.disabled;
    this.ctx.disabled = true;
    try {
      return fn();
    } finally {
      this.ctx.disabled = prev;
    }
  }

  /** Per-forward preparation done by forward() (each method's runtime); call it before running the model's segments directly. */
  prepareForward(): void {
    for (const rt of this.runtimes.values()) rt.beforeForward?.(this.model.training);
  }
  /** @deprecated the name before contract v2; same as prepareForward(). */
  prepareTrainingForward(): void {
    this.prepareForward();
  }

  forward(input: PeftInput): ModelOutput {
    this.prepareForward();
    const comp = this.ctx.composition;
    if (!input.adapterNames && comp && !this.ctx.disabled && (comp.kind === 'Parallel' || comp.kind === 'BatchSplit')) return this.splitForward(input, comp);
    if (!input.adapterNames) return this.model.forward(input);
    // PEFT's checks (LoraModel._enable_peft_forward_hooks, LoraLayer._check_forward_args).
    const names = input.adapterNames.map((n) => (n === BASE_ROW ? null : n));
    const b = input.inputIds.shape[0]!;
    if (names.length !== b) throw new Error(`adapterNames has ${names.length} entries for a batch of ${b} rows`);
    if (this.model.training) throw new Error('adapterNames (a mixed batch) cannot be used in training mode, as in PEFT: call model.eval() first');
    // Sorted: the same set of adapters gives the same stacked weights whatever the row order.
    const order = [...new Set(names.filter((n): n is string => n !== null))].sort();
    for (const n of order) {
      const m = this.methodOf(n);
      if (!m.capabilities(this.configs.get(n)!).mixedBatch) throw new Error(`adapter "${n}" (${m.peftType}) cannot be used in a mixed batch: its method does not support per-row adapters`);
    }
    if (this.parts().some(([, l]) => l.mergedAdapters.length > 0)) throw new Error('adapterNames (a mixed batch) cannot be used while adapters are merged, as in PEFT: call unmerge() first');
    const index = tensor(names.map((n) => (n === null ? order.length : order.indexOf(n))), { dtype: 'int64', device: this.model.device });
    this.ctx.rows = { order, index, names };
    try {
      return this.model.forward(input);
    } finally {
      this.ctx.rows = null;
      index.dispose();
    }
  }

  /**
   * Top-level Parallel (the batch replicated once per adapter; outputs stacked along the batch, K x B
   * rows) and BatchSplit (consecutive rows per adapter), run as one mixed batch.
   */
  private splitForward(input: PeftInput, comp: Block): ModelOutput {
    if (this.model.training) throw new Error(`${describe(comp)} runs as a mixed batch, which is for inference (as in PEFT): call model.eval(), or train each adapter on its own`);
    const b = input.inputIds.shape[0]!;
    const kids = comp.children as string[];
    if (comp.kind === 'BatchSplit') {
      const sizes = comp.batchSizes!;
      const total = sizes.reduce((a, x) => a + x, 0);
      if (total !== b) throw new Error(`${describe(comp)}: batch sizes add up to ${total} but the batch has ${b} rows`);
      return this.runRows(input, kids.flatMap((n, i) => new Array<string>(sizes[i]!).fill(n)));
    }
    const rep = (t: Tensor | null | undefined) => (t ? cat(kids.map(() => t), 0) : t);
    const wide = { ...input, inputIds: rep(input.inputIds)!, attentionMask: rep(input.attentionMask), positionIds: input.positionIds && input.positionIds.shape[0] === b ? rep(input.positionIds) : input.positionIds, tokenTypeIds: rep(input.tokenTypeIds) };
    return this.runRows(wide, kids.flatMap((n) => new Array<string>(b).fill(n)));
  }

  /** A forward where row r uses adapter names[r] (training included: composition blocks may train). */
  private runRows(input: PeftInput, names: string[]): ModelOutput {
    const order = [...new Set(names)];
    const index = tensor(names.map((n) => order.indexOf(n)), { dtype: 'int64', device: this.model.device });
    const prevActive = this.ctx.active;
    this.ctx.rows = { order, index, names };
    try {
      return this.model.forward({ ...input, adapterNames: undefined } as ModelInput);
    } finally {
      this.ctx.rows = null;
      this.ctx.active = prevActive;
      index.dispose();
    }
  }

  /** The sum of the methods' auxiliary losses of the last forward (routers' load balancing), or null. */
  auxLoss(): Tensor | null {
    let total: Tensor | null = null;
    for (const rt of this.runtimes.values()) {
      const l = rt.auxLoss?.() ?? null;
      if (l) total = total ? total.add(l) : l;
    }
    return total;
  }

  /** Every method runtime's resumable state (training checkpoints), by peft_type. */
  runtimeState(): Record<string, Record<string, unknown>> {
    const out: Record<string, Record<string, unknown>> = {};
    for (const [k, rt] of this.runtimes) {
      const s = rt.saveState?.();
      if (s) out[k] = s;
    }
    return out;
  }
  loadRuntimeState(state: Record<string, Record<string, unknown>>): void {
    for (const [k, s] of Object.entries(state)) this.runtimes.get(k)?.loadState?.(s);
  }

  trainableParameters(): Tensor[] {
    return this.model.trainableParameters();
  }

  /** PEFT's print_trainable_parameters line. */
  printTrainableParameters(log: (s: string) => void = console.log): string {
    // A quantized base layer holds no parameter tensor; its out x in weights count, as PEFT counts 4-bit ones.
    const quantized = this.model.namedModules().reduce((n, [, m]) => n + (m instanceof QuantLinear ? m.inFeatures * m.outFeatures : 0), 0);
    const all = this.model.numParameters() + quantized;
    const tr = this.model.numParameters({ trainableOnly: true });
    const s = `trainable params: ${tr.toLocaleString('en-US')} || all params: ${all.toLocaleString('en-US')} || trainable%: ${((100 * tr) / all).toFixed(4)}`;
    log(s);
    return s;
  }

  /** Folds adapters (default: the active ones) into the base weights; refused for a method that cannot merge. */
  merge(names: readonly string[] = this.ctx.active): void {
    for (const n of names) {
      const m = this.methodOf(n);
      if (!m.capabilities(this.configs.get(n)!).mergeable) throw new Error(`adapter "${n}" (${m.peftType}) cannot be merged into the base weights; run it unmerged`);
    }
    for (const [, part] of this.parts()) part.merge([...names]);
  }
  /** Restores the base weights exactly. */
  unmerge(): void {
    for (const [, part] of this.parts()) part.unmerge();
  }
  /** Merges the active adapters and returns the plain model (no adapter layers left). */
  mergeAndUnload(): PretrainedModel {
    this.merge();
    for (const [path, layer] of this.tunerLayers()) this.model.setSubmodule(path, layer.unload());
    this.structureChanged();
    for (const [path, part] of this.parts()) {
      part.detach?.(this.model);
      this.model.removeSubmodule(path).dispose();
    }
    for (const [path, s] of this.savers()) {
      const keepMod = s.current();
      this.model.setSubmodule(path, keepMod);
    }
    // Trained token rows are written into the embedding; a tied head is pointed at the new weight.
    const wrappers = this.tokenWrappers();
    for (const [path, w] of wrappers) if (!w.isTied) this.model.setSubmodule(path, w.unload([...this.ctx.active]));
    for (const [path, w] of wrappers) {
      if (!w.isTied) continue;
      const head = w.unload([]);
      noGrad(() => head.setParameter('weight', w.source!.baseLayer.weight, false));
      this.model.setSubmodule(path, head);
    }
    this.configs.clear();
    this.trainable.clear();
    this.ctx.active = [];
    this.structureChanged();
    return this.model;
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** The bias training mode of a config (its method's biasMode; none when the method has no biases). */
function biasMode(c: AdapterConfigBase): 'none' | 'all' | 'wrapped' {
  return adapterMethod(c.peftType).biasMode?.(c as never) ?? 'none';
}

/** A trainable float32 deep copy of a module (for modules_to_save). */
function cloneModule(m: Module): Module {
  const c = m.cloneDeep();
  noGrad(() => {
    for (const [n, t] of c.namedParameters()) if (t.dtype !== 'float32') c.setParameter(n, t.to('float32'), true);
  });
  return c.requiresGrad_(true);
}
