// The HF PEFT file format both ways: adapter_config.json and adapter_model.safetensors with PEFT's
// keys (`base_model.model.<module path>.lora_A.weight`, no adapter name in keys; non-default
// adapters in a subfolder named after them). Writes are atomic.
import { existsSync, mkdirSync } from 'node:fs';
import { readJsonObjectFile } from '../io/files.js';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import { noGrad, type Tensor } from '../tensor/index.js';
import type { PretrainedModel } from '../models/types.js';
import { adapterMethod } from './registry.js';
import { PeftModel } from './peft-model.js';
import { ModulesToSave } from './modules-to-save.js';
import type { AdapterConfigBase } from './types.js';
import type { LoraLayer } from './lora/layer.js';

const PREFIX = 'base_model.model.';

export interface SaveOptions {
  /** Which adapters (default: all). */
  adapters?: string[];
  /** PiSSA/CorDA: save as a rank-2r LoRA relative to the ORIGINAL base (default true), as PEFT's conversion. */
  convertToLora?: boolean;
  /** DyLoRA: save the first k components as a plain rank-k LoRA (alpha scaled to keep the update). */
  dyloraRank?: number;
}

export function adapterDir(dir: string, name: string): string {
  return name === 'default' ? dir : join(dir, name);
}

/** Writes each adapter as a PEFT adapter folder. */
export function savePeftAdapters(peft: PeftModel, dir: string, opts: SaveOptions = {}): void {
  const names = opts.adapters ?? peft.adapterNames();
  for (const name of names) {
    const config = peft.configs.get(name);
    if (!config) throw new Error(`no adapter "${name}"`);
    const method = adapterMethod(config.peftType);
    const tensors = new Map<string, Tensor>();
    const temps: Tensor[] = [];
    let converted = false;
    for (const [path, layer] of peft.tunerLayers()) {
      if (!layer.hasAdapter(name)) continue;
      const conv = opts.convertToLora !== false ? (layer as unknown as LoraLayer).convertedState?.(name) ?? null : null;
      let state = conv ?? layer.adapterState(name);
      const k = opts.dyloraRank;
      if (k !== undefined && (config as { dylora?: boolean }).dylora) {
        const a = state.get('lora_A.weight')!;
        if (!(k >= 1 && k <= a.shape[0]!)) throw new Error(`dyloraRank must be in [1, ${a.shape[0]}], got ${k}`);
        const cut = new Map([['lora_A.weight', a.narrow(0, 0, k).contiguous()], ['lora_B.weight', state.get('lora_B.weight')!.narrow(1, 0, k).contiguous()]]);
        temps.push(...cut.values());
        state = cut;
      }
      if (conv) {
        converted = true;
        temps.push(...conv.values());
      }
      for (const [k, t] of state) tensors.set(`${PREFIX}${path}.${k}`, t);
    }
    for (const [path, m] of peft.model.namedModules()) {
      if (m instanceof ModulesToSave) for (const [k, t] of m.adapterState(name)) tensors.set(`${PREFIX}${path}.${k}`, t);
    }
    for (const [path, w] of peft.tokenWrappers()) for (const [k, t] of w.adapterState(name)) tensors.set(`${PREFIX}${path}.${k}`, t);
    for (const [k, t] of trainedBiases(peft, config)) tensors.set(`${PREFIX}${k}`, t);
    const json = method.toJson(config);
    if (converted) {
      // As PEFT's save_pretrained(path_initial_model_for_weight_conversion=...): rank doubles, alpha
      // follows so that the scaling is unchanged, and the result is an ordinary LoRA.
      const rs = json.use_rslora === true;
      const f = rs ? Math.SQRT2 : 2;
      json.r = (json.r as number) * 2;
      json.lora_alpha = (json.lora_alpha as number) * f;
      json.rank_pattern = Object.fromEntries(Object.entries(json.rank_pattern as Record<string, number>).map(([k, v]) => [k, v * 2]));
      json.alpha_pattern = Object.fromEntries(Object.entries(json.alpha_pattern as Record<string, number>).map(([k, v]) => [k, v * f]));
      json.init_lora_weights = true;
    }
    const k = opts.dyloraRank;
    if (k !== undefined && (config as { dylora?: boolean }).dylora) {
      // A truncation keeps the full-rank scaling alpha/r, so a rank-k file carries alpha * k / r.
      const r = json.r as number;
      json.lora_alpha = ((json.lora_alpha as number) * k) / r;
      json.r = k;
      json.rank_pattern = {};
      json.alpha_pattern = {};
      delete json.adapterkit;
    }
    json.base_model_name_or_path = config.baseModelNameOrPath ?? (peft.model.config._name_or_path as string | undefined) ?? null;
    const out = adapterDir(dir, name);
    mkdirSync(out, { recursive: true });
    try {
      noGrad(() => writeSafetensors(join(out, 'adapter_model.safetensors'), tensors, { format: 'pt' }));
    } finally {
      temps.forEach((t) => t.dispose());
    }
    writeFileAtomic(join(out, 'adapter_config.json'), new TextEncoder().encode(JSON.stringify(json, null, 2) + '\n'));
  }
}

/**
 * PEFT's BaseTuner._get_learnable_bias_state_dict: bias "all" saves every `.bias` of the model under
 * its state-dict name (a wrapped layer's as `<path>.base_layer.bias`, a modules_to_save original as
 * `<path>.original_module.bias`); "lora_only" the base_layer biases of the tuner layers. Adapter
 * tensors (lora_B biases) and modules_to_save copies are saved by their owners.
 */
function trainedBiases(peft: PeftModel, config: AdapterConfigBase): [string, Tensor][] {
  const bias = (config as { bias?: string }).bias ?? 'none';
  if (bias === 'none') return [];
  if (bias === 'all') {
    return peft.model.namedParameters().filter(([n]) => n.endsWith('.bias') && !/\.lora_[A-Za-z_]+\./.test(n) && !/(^|\.)modules_to_save\./.test(n));
  }
  const out: [string, Tensor][] = [];
  for (const [path, layer] of peft.tunerLayers()) {
    const b = layer.baseLayer.ownParameters().find(([n]) => n === 'bias');
    if (b) out.push([`${path}.base_layer.bias`, b[1]]);
  }
  return out;
}

/**
 * Loads a saved base-model bias (bias "all" / "lora_only") into the model: keys as PEFT writes them
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

export function readAdapterConfig(dir: string, warn: (m: string) => void): AdapterConfigBase {
  const file = join(dir, 'adapter_config.json');
  if (!existsSync(file)) throw new Error(`no adapter_config.json in ${dir}`);
  const r = readJsonObjectFile(file, 'adapter config');  // refuses a FIFO or device instead of blocking
  return adapterMethod(r.peft_type).fromJson(r, warn);
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
  const config = readAdapterConfig(dir, warn);
  // The saved weights are the adapter: load as a plain LoRA (no PiSSA/CorDA surgery on the base).
  (config as { initLoraWeights?: unknown }).initLoraWeights = true;
  const file = join(dir, 'adapter_model.safetensors');
  if (!existsSync(file)) {
    throw new Error(existsSync(join(dir, 'adapter_model.bin')) ? `${dir} holds adapter_model.bin (pickle); adapterkit reads adapter_model.safetensors only` : `no adapter_model.safetensors in ${dir}`);
  }
  const fresh = !(target instanceof PeftModel);
  const peft = target instanceof PeftModel ? target : new PeftModel(target);
  if (fresh) peft.model.requiresGrad_(false);
  const weights = readSafetensors(file);
  try {
    peft.addAdapter(name, config as never, {});
    const byLayer = new Map<string, Map<string, Tensor>>();
    const layerPaths = peft.tunerLayers().map(([p]) => p);
    const saverPaths = peft.model.namedModules().filter(([, m]) => m instanceof ModulesToSave).map(([p]) => p);
    const tokens = new Map(peft.tokenWrappers());
    const tokensLoaded = new Set<string>();
    for (const [key, t] of weights) {
      if (!key.startsWith(PREFIX)) throw new Error(`adapter key "${key}" does not start with "${PREFIX}" (not a PEFT adapter file?)`);
      // Older PEFT files may keep the adapter name in the key (lora_A.default.weight).
      const k = key.slice(PREFIX.length).replace(/\.(lora_[AB])\.[^.]+\.(weight|bias)$/, '.$1.$2').replace(/\.lora_magnitude_vector\.[^.]+$/, '.lora_magnitude_vector');
      const tokenOwner = [...tokens.keys()].find((p) => k === `${p}.token_adapter.trainable_tokens_delta`);
      if (tokenOwner !== undefined && tokens.get(tokenOwner)!.hasAdapter(name)) {
        tokens.get(tokenOwner)!.loadDelta(name, t, tokenOwner);
        tokensLoaded.add(tokenOwner);
        continue;
      }
      const owner = [...layerPaths, ...saverPaths].filter((p) => k.startsWith(p + '.')).sort((a, b) => b.length - a.length)[0];
      const rest = owner === undefined ? k : k.slice(owner.length + 1);
      // Base-model biases trained with bias "all" / "lora_only" (not lora_B's own bias, not a modules_to_save copy's).
      const baseBias = owner === undefined ? true : layerPaths.includes(owner) ? /^(base_layer\.)?bias$/.test(rest) : rest.startsWith('original_module.');
      if (baseBias && loadBias(peft, k, t)) continue;
      // bias "all" also lists `<wrapper>.modules_to_save.bias` (the copy's bias with the adapter name cut); `<wrapper>.bias` holds the same.
      if (owner !== undefined && saverPaths.includes(owner) && rest.startsWith('modules_to_save.')) continue;
      if (!owner) throw new Error(`adapter key "${key}" names a module this ${peft.model.modelType} model does not have (was the adapter made for another base model?)`);
      if (!byLayer.has(owner)) byLayer.set(owner, new Map());
      byLayer.get(owner)!.set(k.slice(owner.length + 1), t);
    }
    for (const [path, w] of tokens) {
      if (!w.isTied && w.hasAdapter(name) && !tokensLoaded.has(path)) throw new Error(`adapter file has no ${path}.token_adapter.trainable_tokens_delta (trainable_token_indices)`);
    }
    for (const [path, layer] of peft.tunerLayers()) {
      if (!layer.hasAdapter(name)) continue;
      layer.loadAdapterState(name, byLayer.get(path) ?? new Map(), path);
    }
    for (const path of saverPaths) {
      const s = peft.model.getSubmodule(path) as ModulesToSave;
      if (!s.hasAdapter(name)) continue;
      const copy = s.modules_to_save.getSubmodule(name);
      const got = byLayer.get(path) ?? new Map<string, Tensor>();
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
    for (const [, l] of peft.tunerLayers()) for (const t of l.adapterParameters(name)) t.requiresGrad = false;
    for (const path of peft.model.namedModules().filter(([, m]) => m instanceof ModulesToSave).map(([p]) => p)) {
      const s = peft.model.getSubmodule(path) as ModulesToSave;
      if (s.hasAdapter(name)) s.modules_to_save.getSubmodule(name).requiresGrad_(false);
    }
    for (const [, w] of peft.tokenWrappers()) for (const t of w.adapterParameters(name)) t.requiresGrad = false;
    if (fresh) peft.model.requiresGrad_(false);
  }
  return peft;
}
