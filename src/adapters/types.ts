// The adapter contract (convention 3). A method (LoRA, IA3, bottleneck adapters, prefix tuning, …)
// registers an AdapterMethod: it parses and writes its adapter_config.json, says which modules it
// can wrap, and wraps them in a TunerLayer that holds one state per adapter name. The PeftModel
// drives every method through this contract only, so a new method never changes the framework.
import type { Module } from '../nn/module.js';
import type { Tensor } from '../tensor/index.js';
import type { PretrainedModel } from '../models/types.js';

/** Fields every PEFT adapter_config.json has, in adapterkit's camelCase. */
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

/** Shared, per-PeftModel state every tuner layer reads at forward time. */
export interface AdapterContext {
  /** Adapters applied to every row (in order). */
  active: string[];
  /** When true, layers run their base only. */
  disabled: boolean;
  /** Mixed batch: row r uses adapter `order[index[r]]`; index = order.length means no adapter. */
  rows: { order: string[]; index: Tensor; names: readonly (string | null)[] } | null;
  /** Bumped on any change of adapters, so layers can cache stacked weights. */
  version: number;
  /** Per-forward values a variant needs (DyLoRA's sampled rank). */
  step: { dyloraRank?: number };
  /** Layers share base weights (layer replication): merging into them is refused. */
  sharedBaseWeights?: boolean;
}

export interface TunerLayer extends Module {
  readonly isTunerLayer: true;
  readonly baseLayer: Module;
  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: { seed: number }): void;
  deleteAdapter(name: string): void;
  hasAdapter(name: string): boolean;
  /** Tensors to save for an adapter, keyed as in PEFT files relative to this layer ("lora_A.weight"). */
  adapterState(name: string): Map<string, Tensor>;
  /** Loads saved tensors; every shape is checked and a mismatch names the key and both shapes. */
  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void;
  /** Trainable tensors of one adapter. */
  adapterParameters(name: string): Tensor[];
  merge(names: string[]): void;
  unmerge(): void;
  readonly mergedAdapters: readonly string[];
  /** Gives back the base layer with every merged adapter folded in (for mergeAndUnload). */
  unload(): Module;
}

export interface AdapterMethod<C extends AdapterConfigBase = AdapterConfigBase> {
  readonly peftType: string;
  /** From adapter_config.json (PEFT's snake_case names); unknown fields go to `extra` with a warning. */
  fromJson(raw: Record<string, unknown>, warn: (msg: string) => void): C;
  toJson(config: C): Record<string, unknown>;
  /** Fills defaults and throws an error naming the first bad value. */
  resolve(partial: Partial<C>): C;
  defaultTargets(modelType: string): string[] | null;
  canWrap(m: Module): boolean;
  wrap(base: Module, ctx: AdapterContext): TunerLayer;
  /** Called before targets are matched (LoRA's layer_replication rebuilds the layer list here, as PEFT's _prepare_model). */
  prepareModel?(config: C, model: PretrainedModel, firstAdapter: boolean, ctx: AdapterContext): void;
  /** Called once an adapter is on its layers (LoRA records fan_in_fan_out from the layer types, as PEFT). */
  afterWrap?(config: C, layers: TunerLayer[]): void;
  isTunerLayer(m: Module): m is TunerLayer;
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
