// The adapter contract, version 2 (convention 3). A method (LoRA, IA3, bottleneck adapters, prefix
// tuning, …) registers an AdapterMethod: it parses and writes its config file, says which modules it
// can wrap or injects itself through the model's hooks, and puts AdapterParts into the model that hold
// one state per adapter name. The PeftModel drives every method through this contract only (it names
// no method), so a new method, in this repository or in a user's package, never changes the framework.
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/index.js';
import type { PretrainedModel } from '../models/types.js';
import type { PeftModel } from './peft-model.js';
import type { Block, BlockKind } from './composition.js';

/** Fields every adapter config has, in adapterkit's camelCase. */
export interface AdapterConfigBase {
  peftType: string;
  /** Names or suffixes, a regex (full match), "all-linear", or null for the method's default per model type. */
  targetModules: string[] | string | null;
  /**
   * Only these layer indices (one index or a list), matched in paths like `layers.3.` / `h.3.`. As in
   * PEFT, it applies only to a list-form targetModules (a regex string must encode layers itself).
   */
  layersToTransform: number[] | number | null;
  /** The name(s) of the layer list (e.g. "layers", "h") when layersToTransform is set; null: any. */
  layersPattern: string | string[] | null;
  /** Modules never adapted: names/suffixes (list) or a full-match regex (string), as targetModules. */
  excludeModules: string[] | string | null;
  /** Modules trained in full and saved with the adapter (e.g. a classifier head). */
  modulesToSave: string[] | null;
  /**
   * Rows of an embedding trained per adapter (PEFT's trainable_token_indices): token ids of the
   * input embedding, or {module name: token ids}.
   */
  trainableTokenIndices: number[] | Record<string, number[]> | null;
  baseModelNameOrPath: string | null;
  taskType: string | null;
  /** Fields this version does not know, kept so that saving round-trips them. */
  extra: Record<string, unknown>;
}

/** What a method can do; the framework, the CLI and the server read these instead of method names. */
export interface AdapterCapabilities {
  /** merge() folds the adapter into the base weights, so inference costs nothing extra. */
  mergeable: boolean;
  /** Rows of one batch may use different adapters of this method (PeftInput.adapterNames). */
  mixedBatch: boolean;
  /** Works with a KV cache in generation. */
  kvCache: boolean;
  /** May take part in composition blocks (Stack, Fuse, …). */
  composable: boolean;
}

/** Shared, per-PeftModel state every adapter part reads at forward time. */
export interface AdapterContext {
  /** Adapters applied to every row (in order). */
  active: string[];
  /** When true, parts run their base only. */
  disabled: boolean;
  /** Mixed batch: row r uses adapter `order[index[r]]`; index = order.length means no adapter. */
  rows: { order: string[]; index: Tensor; names: readonly (string | null)[] } | null;
  /** Bumped on any change of adapters, so parts can cache stacked weights. */
  version: number;
  /** Per-forward values of each method, keyed by peftType (set by the method's runtime.beforeForward). */
  slots: Record<string, unknown>;
  /**
   * The active composition when it is more than a Stack of names (PeftModel.setActive): Fuse, Split,
   * Average (and nested Stacks) are applied by the parts of methods that list them in `compositions`;
   * top-level Parallel and BatchSplit run as mixed batches. null: ctx.active applies in order (Stack).
   */
  composition: Block | null;
  /** Layers share base weights (layer replication): merging into them is refused. */
  sharedBaseWeights?: boolean;
}

/**
 * Anything a method puts into the model that holds per-adapter tensors: a wrapped layer, a module at a
 * residual site, a prompt encoder. Found by the framework with isAdapterPart; its module path plus the
 * keys of adapterState() name the tensors in adapter files.
 */
export interface AdapterPart extends Module {
  readonly isAdapterPart: true;
  /** The method that owns it. */
  readonly peftType: string;
  hasAdapter(name: string): boolean;
  deleteAdapter(name: string): void;
  /** Tensors to save for an adapter, keyed relative to this part ("lora_A.weight", "ia3_l", …). */
  adapterState(name: string): Map<string, Tensor>;
  /** Loads saved tensors; every shape is checked and a mismatch names the key and both shapes. */
  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void;
  /** Trainable tensors of one adapter. */
  adapterParameters(name: string): Tensor[];
  merge(names: string[]): void;
  unmerge(): void;
  readonly mergedAdapters: readonly string[];
  /** Called when its last adapter is gone and the part leaves the model (hooks are uninstalled here). */
  detach?(model: PretrainedModel): void;
  /**
   * Serving: readies adapter `name` for inference mixed batches before its first step (LoRA writes its
   * slot of the stacked serving tensors), so a step never pays for an adapter's arrival.
   */
  prepareMixedBatch?(name: string): void;
}

export interface AddLayerOptions {
  seed: number;
  /** What the method's prepareAdapter computed for this path (e.g. CorDA's input covariance). */
  data?: unknown;
}

/** A part that wraps one module of the base model (a Linear, an Embedding, a LayerNorm). */
export interface TunerLayer extends AdapterPart {
  readonly isTunerLayer: true;
  readonly baseLayer: Module;
  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void;
  /** Gives back the base layer with every merged adapter folded in (for mergeAndUnload). */
  unload(): Module;
}

/** Per-PeftModel, per-method state that lives across forwards (DyLoRA's step counter, a sensitivity budget). */
export interface MethodRuntime {
  /** Before every forward (training or not): put per-forward values into ctx.slots[peftType]. */
  beforeForward?(training: boolean): void;
  /** After every setAdapter / setActive: a method freezes what it trains outside adapters (AdapterFusion layers). */
  onActivate?(): void;
  /** An auxiliary loss of the last training forward (a router's load-balancing loss), added by the trainer; null: none. */
  auxLoss?(): Tensor | null;
  /** JSON-able state saved in training checkpoints for an exact resume. */
  saveState?(): Record<string, unknown>;
  loadState?(state: Record<string, unknown>): void;
}

/** Where an adapter's tensors go on disk and what its files are called. */
export interface AdapterFileFormat {
  /** The weights file inside the adapter folder. */
  weightsFile: string;
  /** The file key of tensor `key` of the part (or wrapper) at module path `path` (`path` may be ''). */
  fileKey(path: string, key: string, model: PretrainedModel): string;
  /** The model key ("<module path>.<key>") a file key stands for; null when the key is not this format's. */
  modelKey(fileKey: string, model: PretrainedModel): string | null;
  /** Other formats' weights files to name in the error when weightsFile is missing. */
  alternatives?: string[];
  /** The config file's text (default: JSON, indent 2); AdapterHub needs floats written as floats. */
  configText?(json: Record<string, unknown>): string;
}

export interface SaveTransformArgs<C> {
  name: string;
  config: C;
  /** Every part holding this adapter, with its path. */
  parts: [string, AdapterPart][];
  /** The JSON about to be written (from toJson); may be edited. */
  json: Record<string, unknown>;
  /** The caller's save options (methods read their own keys). */
  options: Readonly<Record<string, unknown>>;
}

export interface InjectArgs<C> {
  peft: PeftModel;
  name: string;
  config: C;
  seed: number;
  /** Sample batches of input ids (B, T) for data-driven initialisations. */
  data: Tensor[];
  /** The task's loss on sample batch i (labels included), when the caller has one; else a method uses its own proxy. */
  taskLoss?: (batch: number) => Tensor;
}

export interface AdapterMethod<C extends AdapterConfigBase = AdapterConfigBase> {
  /** The peft_type string ("LORA", "IA3", …; adapterkit's own methods use names PEFT does not). */
  readonly peftType: string;
  /** Names for `--method` and YAML `method:` (lower case); a preset fills config fields for that name. */
  readonly names: readonly string[];
  readonly presets?: Readonly<Record<string, Partial<C>>>;
  /** One line for `adapterkit train --help` and the README: paper, what it trains. */
  readonly summary: string;
  /**
   * Options given as text that a runner with a tokenizer turns into token ids before creating the
   * adapter: text key -> ids key (prompt tuning: promptTuningInitText -> promptTuningInitIds).
   */
  readonly textOptions?: Readonly<Record<string, string>>;
  /** `adapterkit train` flags this method takes, flag name -> config key (e.g. r -> r, alpha -> loraAlpha). */
  readonly cliFlags?: Readonly<Record<string, string>>;
  capabilities(config: C): AdapterCapabilities;
  /** Composition blocks the method's parts apply beyond Stack (Fuse, Split, Average); Parallel and BatchSplit come from mixedBatch. */
  readonly compositions?: readonly BlockKind[];
  /** The file format (default: PEFT's adapter_model.safetensors with `base_model.model.` keys). */
  readonly format?: AdapterFileFormat;
  /** True when a config JSON without peft_type is this method's (AdapterHub files have none). */
  detect?(raw: Record<string, unknown>): boolean;
  /** From the config JSON; unknown fields go to `extra` with a warning. */
  fromJson(raw: Record<string, unknown>, warn: (msg: string) => void): C;
  toJson(config: C, ctx: { name: string; model: PretrainedModel }): Record<string, unknown>;
  /** Fills defaults and throws an error naming the first bad value. */
  resolve(partial: Partial<C>): C;
  /** Config for loading saved weights (e.g. LoRA skips PiSSA's surgery on the base: the file is the adapter). */
  forLoad?(config: C): C;

  // ---- injection: wrapping modules found by target matching, or inject() for everything else ----
  defaultTargets?(modelType: string): string[] | null;
  canWrap?(m: Module): boolean;
  wrap?(base: Module, ctx: AdapterContext): TunerLayer;
  isTunerLayer?(m: Module): m is TunerLayer;
  /** Called before targets are matched (LoRA's layer_replication rebuilds the layer list here, as PEFT's _prepare_model). */
  prepareModel?(config: C, model: PretrainedModel, firstAdapter: boolean, ctx: AdapterContext): void;
  /** Data-driven initialisation: per target path, what the layer's addAdapter receives as `data`. */
  prepareAdapter?(args: { config: C; model: PretrainedModel; paths: string[]; data: Tensor[]; taskLoss?: (batch: number) => Tensor }): Map<string, unknown>;
  /** Called once an adapter is on its layers (LoRA records fan_in_fan_out from the layer types, as PEFT). */
  afterWrap?(config: C, layers: TunerLayer[]): void;
  /** For methods that are not wrapped layers: adds the adapter's parts and installs model hooks. */
  inject?(args: InjectArgs<C>): void;

  /** Which base-model biases an adapter trains and saves: none, all of them, or those of its wrapped layers. */
  biasMode?(config: C): 'none' | 'all' | 'wrapped';
  /** Per-PeftModel state across forwards. */
  runtime?(peft: PeftModel): MethodRuntime;
  /** Rewrites what is saved (per-part tensors and the JSON); returns the states and tensors to free after writing. */
  saveTransform?(args: SaveTransformArgs<C>): { states: Map<string, Map<string, Tensor>>; temps: Tensor[] } | null;
}

/**
 * Typed options for PeftModel.create / addAdapter, one entry per method: each method folder adds its
 * own by declaration merging (`declare module '../types.js' { interface AdapterOptionsByType { … } }`),
 * so the framework names no method and an unknown key in an object literal is a compile error.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface AdapterOptionsByType {}
export type AdapterOptions = AdapterOptionsByType[keyof AdapterOptionsByType];

export function isTunerLayer(m: Module): m is TunerLayer {
  return (m as unknown as Partial<TunerLayer>).isTunerLayer === true;
}

export function isAdapterPart(m: Module): m is AdapterPart {
  return (m as unknown as Partial<AdapterPart>).isAdapterPart === true;
}
