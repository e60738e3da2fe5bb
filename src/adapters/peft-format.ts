// Adapter folders both ways: adapter_config.json plus one safetensors file. By default PEFT's format
// (adapter_model.safetensors, keys `base_model.model.<module path>.<key>` with no adapter name;
// non-default adapters in a subfolder named after them); a method may bring its own format
// (AdapterHub's for bottleneck adapters). Writes are atomic. This file names no method.
import { existsSync, mkdirSync } from 'node:fs';
import { readJsonObjectFile } from '../io/files.js';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { noGrad, type Tensor } from '../tensor/index.js';
import type { PretrainedModel } from '../models/types.js';
import { adapterMethod, adapterMethodList } from './registry.js';
import { PeftModel } from './peft-model.js';
import { ModulesToSave } from './modules-to-save.js';
import { type AdapterConfigBase, type AdapterFileFormat, type AdapterMethod } from './types.js';

import { PEFT_FORMAT, PEFT_PREFIX as PREFIX } from './format.js';

export { PEFT_FORMAT };

/** Options for savePeftAdapters; methods add their own keys by declaration merging (e.g. a conversion on save). */
export interface SaveOptions {
  /** Which adapters (default: all). */
  adapters?: string[];
}

export function adapterDir(dir: string, name: string): string {
  return name === 'default' ? dir : join(dir, name);
}

function formatOf(method: AdapterMethod): AdapterFileFormat {
  return method.format ?? PEFT_FORMAT;
}

/** Writes each adapter as an adapter folder in its method's format. */
export function savePeftAdapters(peft: PeftModel, dir: string, opts: SaveOptions = {}): void {
  const names = opts.adapters ?? peft.adapterNames();
  for (const name of names) {
    const config = peft.configs.get(name);
    if (!config) throw new Error(`no adapter "${name}"`);
    const method = adapterMethod(config.peftType);
    const format = formatOf(method);
    const model = peft.model;
    const key = (path: string, k: string) => format.fileKey(path, k, model);
    const tensors = new Map<string, Tensor>();
    const parts = peft.parts().filter(([, p]) => p.hasAdapter(name));
    const json = method.toJson(config as never, { name, model });
    const transformed = method.saveTransform?.({ name, config: config as never, parts, json, options: opts as Record<string, unknown> }) ?? null;
    const temps = transformed?.temps ?? [];
    try {
      for (const [path, part] of parts) {
        const state = transformed?.states.get(path) ?? part.adapterState(name);
        for (const [k, t] of state) tensors.set(key(path, k), t);
      }
      for (const [path, m] of peft.savers()) for (const [k, t] of m.adapterState(name)) tensors.set(key(path, k), t);
      for (const [path, w] of peft.tokenWrappers()) for (const [k, t] of w.adapterState(name)) tensors.set(key(path, k), t);
      for (const [k, t] of trainedBiases(peft, name, config)) tensors.set(key('', k), t);
      if ('base_model_name_or_path' in json) json.base_model_name_or_path = config.baseModelNameOrPath ?? (model.config._name_or_path as string | undefined) ?? null;
      const out = adapterDir(dir, name);
      mkdirSync(out, { recursive: true });
      noGrad(() => writeSafetensors(join(out, format.weightsFile), tensors, { format: 'pt' }));
      writeFileAtomic(join(out, 'adapter_config.json'), new TextEncoder().encode(format.configText?.(json) ?? JSON.stringify(json, null, 2) + '\n'));
    } finally {
      temps.forEach((t) => t.dispose());
    }
  }
}

/**
 * PEFT's BaseTuner._get_learnable_bias_state_dict: bias "all" saves every `.bias` of the model under
 * its state-dict name (a wrapped layer's as `<path>.base_layer.bias`, a modules_to_save original as
 * `<path>.original_module.bias`); "wrapped" the base_layer biases of the layers holding the adapter.
 * Adapter tensors (an adapter's own bias) and modules_to_save copies are saved by their owners.
 */
function trainedBiases(peft: PeftModel, name: string, config: AdapterConfigBase): [string, Tensor][] {
  const mode = adapterMethod(config.peftType).biasMode?.(config as never) ?? 'none';
  if (mode === 'none') return [];
  const parts = peft.parts().map(([p]) => p);
  if (mode === 'all') {
    // Every bias of the base model: inside a part only its base layer's; never a modules_to_save copy's.
    return peft.model.namedParameters().filter(([n]) => {
      if (!n.endsWith('.bias') || /(^|\.)modules_to_save\./.test(n)) return false;
      const owner = parts.find((p) => n.startsWith(p + '.'));
      return owner === undefined || n.startsWith(owner + '.base_layer.');
    });
  }
  const out: [string, Tensor][] = [];
  for (const [path, layer] of peft.tunerLayers()) {
    if (!layer.hasAdapter(name)) continue;
    const b = layer.baseLayer.ownParameters().find(([n]) => n === 'bias');
    if (b) out.push([`${path}.base_layer.bias`, b[1]]);
  }
  return out;
}

/**
 * Loads a saved base-model bias (bias mode "all" / "wrapped") into the model: keys as PEFT writes them
 * (`<path>.base_layer.bias`, `<module>.bias`, `<wrapper>.original_module.bias`), or `<path>.bias` of a
 * wrapped layer. Returns false for a key that is not a bias of this model.
 */
function loadBias(peft: PeftModel, key: string, t: Tensor): boolean {
  if (!key.endsWith('.bias')) return false;
  const params = new Map(peft.model.namedParameters());
  const layerPaths = new Set(peft.tunerLayers().map(([p]) => p));
  const mod = key.slice(0, -'.bias'.length);
  const name = params.has(key) ? key : layerPaths.has(mod) ? `${mod}.base_layer.bias` : null;
  if (name === null || !params.has(name)) return false;
  const p = params.get(name)!;
  if (t.shape.join() !== p.shape.join()) throw new Error(`${key}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${p.shape.join(', ')}]`);
  noGrad(() => peft.model.setParameter(name, t.to(p.dtype), p.requiresGrad));
  return true;
}

/** The adapter_config.json of a folder and the method it belongs to (peft_type, or a method that recognises it). */
export function readAdapterConfig(dir: string, warn: (m: string) => void): AdapterConfigBase {
  const file = join(dir, 'adapter_config.json');
  if (!existsSync(file)) throw new Error(`no adapter_config.json in ${dir}`);
  const r = readJsonObjectFile(file, 'adapter config');  // refuses a FIFO or device instead of blocking
  if (r.peft_type !== undefined) return adapterMethod(r.peft_type).fromJson(r, warn);
  const m = adapterMethodList().find((x) => x.detect?.(r));
  if (!m) throw new Error(`${file} has no peft_type and no adapter method recognises it (supported: PEFT's adapter_config.json, AdapterHub's bottleneck configs)`);
  return m.fromJson(r, warn);
}

export interface LoadAdapterOptions {
  adapterName?: string;
  /** Keep the adapter trainable (default false: inference). */
  isTrainable?: boolean;
  warn?: (m: string) => void;
}

/**
 * Loads a PEFT adapter folder onto a model (creating the PeftModel) or onto an existing PeftModel.
 * A key for a module the model lacks, or a shape that differs, is an error naming the first one.
 */
export function loadPeftAdapter(target: PretrainedModel | PeftModel, dir: string, opts: LoadAdapterOptions = {}): PeftModel {
  const warn = opts.warn ?? ((m: string) => console.warn(`adapterkit: ${m}`));
  const name = opts.adapterName ?? 'default';
  const read = readAdapterConfig(dir, warn);
  const method = adapterMethod(read.peftType);
  // The saved weights are the adapter: no data-driven surgery on the base when loading.
  const config = method.forLoad?.(read as never) ?? read;
  const format = formatOf(method);
  const file = join(dir, format.weightsFile);
  if (!existsSync(file)) {
    const alt = (format.alternatives ?? []).find((f) => existsSync(join(dir, f)));
    throw new Error(alt ? `${dir} holds ${alt} (pickle); adapterkit reads ${format.weightsFile} only` : `no ${format.weightsFile} in ${dir}`);
  }
  const fresh = !(target instanceof PeftModel);
  const peft = target instanceof PeftModel ? target : new PeftModel(target);
  if (fresh) peft.model.requiresGrad_(false);
  const weights = readSafetensors(file);
  try {
    peft.addAdapter(name, config as never, {});
    const byOwner = new Map<string, Map<string, Tensor>>();
    const partPaths = peft.parts().filter(([, p]) => p.hasAdapter(name)).map(([p]) => p);
    const layerPaths = peft.tunerLayers().map(([p]) => p);
    const saverPaths = peft.savers().map(([p]) => p);
    const tokens = new Map(peft.tokenWrappers());
    const tokensLoaded = new Set<string>();
    for (const [key, t] of weights) {
      const k = format.modelKey(key, peft.model);
      if (k === null) throw new Error(`adapter key "${key}" is not a key of ${format.weightsFile} as ${method.peftType} writes it (${format === PEFT_FORMAT ? `it does not start with "${PREFIX}"` : 'another format?'})`);
      const tokenOwner = [...tokens.keys()].find((p) => k === `${p}.token_adapter.trainable_tokens_delta`);
      if (tokenOwner !== undefined && tokens.get(tokenOwner)!.hasAdapter(name)) {
        tokens.get(tokenOwner)!.loadDelta(name, t, tokenOwner);
        tokensLoaded.add(tokenOwner);
        continue;
      }
      const owner = [...partPaths, ...saverPaths].filter((p) => p === '' || k.startsWith(p + '.')).sort((a, b) => b.length - a.length)[0];
      const rest = owner === undefined ? k : owner === '' ? k : k.slice(owner.length + 1);
      // Base-model biases trained with bias "all" / "wrapped" (not an adapter's own bias, not a modules_to_save copy's).
      const baseBias = owner === undefined ? true : layerPaths.includes(owner) ? /^(base_layer\.)?bias$/.test(rest) : saverPaths.includes(owner) ? rest.startsWith('original_module.') : false;
      if (baseBias && loadBias(peft, k, t)) continue;
      // bias "all" also lists `<wrapper>.modules_to_save.bias` (the copy's bias with the adapter name cut); `<wrapper>.bias` holds the same.
      if (owner !== undefined && saverPaths.includes(owner) && rest.startsWith('modules_to_save.')) continue;
      if (owner === undefined) throw new Error(`adapter key "${key}" names a module this ${peft.model.modelType} model does not have (was the adapter made for another base model?)`);
      if (!byOwner.has(owner)) byOwner.set(owner, new Map());
      byOwner.get(owner)!.set(rest, t);
    }
    for (const [path, w] of tokens) {
      if (!w.isTied && w.hasAdapter(name) && !tokensLoaded.has(path)) throw new Error(`adapter file has no ${path}.token_adapter.trainable_tokens_delta (trainable_token_indices)`);
    }
    for (const path of partPaths) {
      const part = peft.model.getSubmodule(path);
      if (!('loadAdapterState' in part)) continue;
      (part as unknown as { loadAdapterState(n: string, s: Map<string, Tensor>, p: string): void }).loadAdapterState(name, byOwner.get(path) ?? new Map(), path);
    }
    for (const path of saverPaths) {
      const s = peft.model.getSubmodule(path) as ModulesToSave;
      if (!s.hasAdapter(name)) continue;
      const copy = s.modules_to_save.getSubmodule(name);
      const got = byOwner.get(path) ?? new Map<string, Tensor>();
      noGrad(() => {
        for (const [pn, pt] of copy.namedParameters()) {
          const t = got.get(pn);
          if (!t) throw new Error(`adapter file has no ${path}.${pn} (modules_to_save)`);
          if (t.shape.join() !== pt.shape.join()) throw new Error(`${path}.${pn}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${pt.shape.join(', ')}] (was it made for another base model?)`);
          copy.setParameter(pn, t.to(pt.dtype), true);
        }
      });
    }
  } catch (e) {
    if (peft.configs.has(name)) peft.deleteAdapter(name);
    throw e;
  } finally {
    for (const t of weights.values()) t.dispose();
  }
  if (peft.activeAdapters.length === 0) peft.setAdapter(name);
  else peft.setAdapter(peft.activeAdapters);  // keeps trainability as it was
  if (!opts.isTrainable) {
    // Inference (PEFT's inference_mode): nothing of this adapter trains, its modules_to_save copies and
    // loaded biases included (a fresh PeftModel: the whole model is frozen).
    peft.setTrainable([name], () => false);
    if (fresh) peft.model.requiresGrad_(false);
  }
  return peft;
}
