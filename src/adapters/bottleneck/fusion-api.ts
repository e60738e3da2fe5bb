// AdapterFusion on a PeftModel, as AdapterHub's model_mixin (add_adapter_fusion, train_adapter_fusion,
// delete_adapter_fusion, get_fusion_regularization_loss) and loading.py AdapterFusionLoader:
// adapter_fusion_config.json (build_full_config: adapter_names, config, hidden_size, model_class,
// model_name, model_type, name, version; json.dump(indent=2, sort_keys=True)) and
// model_adapter_fusion.safetensors with the model's state-dict keys of the fusion layers
// (`transformer.h.0.output_adapters.adapter_fusion_layer.a,b.query.weight`; BERT:
// `bert.encoder.layer.0.output.adapter_fusion_layer.a,b.query.weight`).
// A fusion name ("a,b") is not an adapter name: its parameters are outside adapterParameters and
// their requiresGrad is set here (frozen when added; trainable after trainAdapterFusion).
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { noGrad, tidy, eye, type Tensor } from '../../tensor/index.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { writeSafetensors, readSafetensors } from '../../io/safetensors.js';
import type { PeftModel } from '../peft-model.js';
import { Fuse, fusionName, last, leaves, describe, type Block, type Setup } from '../composition.js';
import type { BottleneckConfig } from './config.js';
import { BertFusion, FUSION_FIELDS, resolveFusionConfig, type FusionConfig } from './fusion.js';
import { BottleneckSite } from './layer.js';
import { residualSites, hiddenSize } from './sites.js';
import { ADAPTERHUB_VERSION } from './format.js';

export const ADAPTERFUSION_CONFIG_NAME = 'adapter_fusion_config.json';
export const SAFE_ADAPTERFUSION_WEIGHTS_NAME = 'model_adapter_fusion.safetensors';

interface FusionEntry {
  config: FusionConfig;
  /** The fused adapters (AdapterHub's adapter_names: the Fuse block's children). */
  adapterNames: string[];
}

const registry = new WeakMap<PeftModel, Map<string, FusionEntry>>();
function fusionsOf(peft: PeftModel): Map<string, FusionEntry> {
  let m = registry.get(peft);
  if (!m) registry.set(peft, (m = new Map()));
  return m;
}

/** The AdapterFusions of a PeftModel: name -> {config, adapterNames}. */
export function adapterFusions(peft: PeftModel): ReadonlyMap<string, Readonly<FusionEntry>> {
  return fusionsOf(peft);
}

export interface AddFusionOptions {
  /** Seeds the query/key/value initialisation (default 0). */
  seed?: number;
  /** Replace a fusion of the same name (AdapterHub's overwrite_ok). */
  overwrite?: boolean;
}

/** PeftModel caches where its parts are; new sites must be announced (when it has that method). */
function structureChanged(peft: PeftModel): void {
  (peft as unknown as { structureChanged?(): void }).structureChanged?.();
}

/** Every fusion layer of `name` with its site path. */
function layersOf(peft: PeftModel, name: string): [string, BertFusion][] {
  const out: [string, BertFusion][] = [];
  for (const [path, m] of peft.model.namedModules()) if (m instanceof BottleneckSite && m.fusion(name)) out.push([path, m.fusion(name)!]);
  return out;
}

/**
 * Adds an AdapterFusion layer for a Fuse block at every residual site whose location (attention /
 * output) all fused adapters enable (AdapterHub's add_fusion_layer with common_config_value; left-out
 * layers included, as AdapterHub). Config: "dynamic" (default), "static", or an object (see
 * resolveFusionConfig). The new layers are frozen until trainAdapterFusion.
 */
export function addAdapterFusion(peft: PeftModel, fuse: Block | string, config: 'dynamic' | 'static' | (Partial<FusionConfig> & { preset?: 'static' | 'dynamic' }) = 'dynamic', opts: AddFusionOptions = {}): string {
  const block = typeof fuse === 'string' ? Fuse(...fuse.split(',')) : fuse;
  if (block.kind !== 'Fuse') throw new Error(`addAdapterFusion needs a Fuse block, got ${describe(block)}`);
  const name = fusionName(block);
  const adapterNames = block.children.map((c) => (typeof c === 'string' ? c : last(c)));
  for (const n of adapterNames) {
    const c = peft.configs.get(n);
    if (!c) throw new Error(`addAdapterFusion ${describe(block)}: no adapter "${n}" (have: ${peft.adapterNames().join(', ') || 'none'})`);
    if (c.peftType !== 'BOTTLENECK') throw new Error(`addAdapterFusion ${describe(block)}: adapter "${n}" is ${c.peftType}; AdapterFusion fuses bottleneck adapters`);
  }
  const cfg = resolveFusionConfig(config);
  const fusions = fusionsOf(peft);
  if (fusions.has(name)) {
    if (!opts.overwrite) throw new Error(`an AdapterFusion named "${name}" has already been added (pass { overwrite: true } to replace it)`);
    deleteAdapterFusion(peft, name);
  }
  const configs = adapterNames.map((n) => peft.configs.get(n) as BottleneckConfig);
  // common_config_value: the fused adapters must agree on each location.
  const common = (k: 'mhAdapter' | 'outputAdapter', field: string): boolean => {
    const v = configs[0]![k];
    if (configs.some((c) => c[k] !== v)) throw new Error(`addAdapterFusion ${describe(block)}: all fused adapters must define the same value for config attribute ${field}`);
    return v;
  };
  const mh = common('mhAdapter', 'mh_adapter'), outp = common('outputAdapter', 'output_adapter');
  const model = peft.model;
  const hidden = hiddenSize(model);
  const mc = model.config as Record<string, unknown>;
  const dropout = cfg.dropout_prob || (typeof mc.attention_probs_dropout_prob === 'number' ? mc.attention_probs_dropout_prob : 0);
  const seed = opts.seed ?? 0;
  let added = 0;
  for (const s of residualSites(model)) {
    if (s.site === 'attention' ? !mh : !outp) continue;
    let site = model.getSubmodule(s.owner).child(s.path.slice(s.owner.length + 1));
    if (site && !(site instanceof BottleneckSite)) throw new Error(`${s.path} is taken by a ${site.constructor.name}`);
    if (!site) {
      site = new BottleneckSite(peft.ctx, s.layer);
      model.addSubmodule(s.path, site);
    }
    const layer = new BertFusion(cfg, hidden, dropout, model.device, seed, `${s.path}.adapter_fusion_layer.${name}`);
    layer.training = model.training;
    layer.requiresGrad_(false);
    (site as BottleneckSite).adapter_fusion_layer.add(name, layer);
    added++;
  }
  if (!added) throw new Error(`addAdapterFusion ${describe(block)}: the fused adapters have no location (mh_adapter / output_adapter)`);
  structureChanged(peft);
  fusions.set(name, { config: cfg, adapterNames });
  peft.ctx.version++;
  return name;
}

/** Removes an AdapterFusion's layers (AdapterHub's delete_adapter_fusion); a missing one is an error. */
export function deleteAdapterFusion(peft: PeftModel, fuse: Block | string): void {
  const name = typeof fuse === 'string' ? fuse : fusionName(fuse);
  const fusions = fusionsOf(peft);
  if (!fusions.has(name)) throw new Error(`no AdapterFusion "${name}" (have: ${[...fusions.keys()].join('; ') || 'none'})`);
  for (const [, m] of peft.model.namedModules()) {
    if (!(m instanceof BottleneckSite)) continue;
    const l = m.fusion(name);
    if (!l) continue;
    m.adapter_fusion_layer.remove(name);
    l.dispose();
  }
  fusions.delete(name);
  peft.ctx.version++;
}

/** The fusion names a setup trains (AdapterHub's enable_adapters: the block itself and its direct children). */
function fusionsIn(s: Setup): string[] {
  if (typeof s === 'string') return [];
  const out = s.kind === 'Fuse' ? [fusionName(s)] : [];
  for (const c of s.children) if (typeof c !== 'string' && c.kind === 'Fuse') out.push(fusionName(c));
  return out;
}

/**
 * AdapterHub's train_adapter_fusion: training mode, the setup active, its fusion layers trainable and
 * everything else frozen: the fused adapters too unless unfreezeAdapters. A classifier head in the
 * adapters' modules_to_save stays trainable (PeftModel.setActive).
 */
export function trainAdapterFusion(peft: PeftModel, fuse: Block, opts: { unfreezeAdapters?: boolean } = {}): void {
  const names = fusionsIn(fuse);
  if (!names.length) throw new Error(`trainAdapterFusion: ${describe(fuse)} has no Fuse block`);
  const fusions = fusionsOf(peft);
  for (const n of names) if (!fusions.has(n)) throw new Error(`trainAdapterFusion: no AdapterFusion "${n}"; add it with addAdapterFusion(peft, fuse) first`);
  peft.model.train();
  peft.setActive(fuse);
  if (!opts.unfreezeAdapters) {
    // Through PeftModel.setTrainable when it has one, so its record of what is trainable stays true.
    const p = peft as unknown as { setTrainable?(names: readonly string[], on: (n: string) => boolean): void };
    if (p.setTrainable) {
      const names = peft.adapterNames();
      p.setTrainable(names, () => false);
      // Heads in modules_to_save stay trainable (AdapterHub's freeze_model leaves flex heads alone).
      for (const [, s] of peft.savers()) for (const n of leaves(fuse)) if (s.hasAdapter(n)) s.modules_to_save.getSubmodule(n).requiresGrad_(true);
    } else {
      for (const [, part] of peft.parts()) for (const n of peft.adapterNames()) for (const t of part.adapterParameters(n)) t.requiresGrad = false;
      for (const [, w] of peft.tokenWrappers()) for (const n of peft.adapterNames()) for (const t of w.adapterParameters(n)) t.requiresGrad = false;
    }
  }
  for (const [, m] of peft.model.namedModules()) {
    if (!(m instanceof BottleneckSite)) continue;
    for (const [n, l] of m.adapter_fusion_layer.children()) (l as BertFusion).requiresGrad_(names.includes(n));
  }
}

/**
 * AdapterHub's get_fusion_regularization_loss: Σ over fusion layers with a trainable value matrix of
 * 0.01 · ||I - W_value||² (AdapterTrainer adds it after each step of train_adapter_fusion); null when none.
 */
export function fusionRegularizationLoss(peft: PeftModel): Tensor | null {
  let loss: Tensor | null = null;
  for (const [, m] of peft.model.namedModules()) {
    if (!(m instanceof BottleneckSite)) continue;
    for (const [, l] of m.adapter_fusion_layer.children()) {
      const v = (l as BertFusion).value;
      if (!v || !v.weight.requiresGrad) continue;
      const c = v.weight.shape[0]!;
      const target = noGrad(() => eye(c, c, { device: v.weight.device }));
      const term = target.sub(v.weight).pow(2).sum().mul(0.01);
      loss = loss ? loss.add(term) : term;
    }
  }
  return loss;
}

/** AdapterHub's file key of a fusion tensor (BERT's sites are the *Output modules themselves). */
function fusionFileKey(sitePath: string, name: string, key: string): string {
  return `${sitePath}.adapter_fusion_layer.${name}.${key}`.replace(/(^|\.)output\.(?:attention|output)_adapters\.adapter_fusion_layer\./, '$1output.adapter_fusion_layer.');
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}

/** Writes adapter_fusion_config.json and model_adapter_fusion.safetensors into `dir` (AdapterFusionLoader.save). */
export function saveAdapterFusion(peft: PeftModel, name: string, dir: string): void {
  const e = fusionsOf(peft).get(name);
  if (!e) throw new Error(`unknown AdapterFusion "${name}" (have: ${[...fusionsOf(peft).keys()].join('; ') || 'none'})`);
  const model = peft.model;
  const mc = model.config as Record<string, unknown>;
  const tensors = new Map<string, Tensor>();
  for (const [path, l] of layersOf(peft, name)) for (const [k, t] of l.namedParameters()) tensors.set(fusionFileKey(path, name, k), t);
  const config: Record<string, unknown> = {};
  for (const f of FUSION_FIELDS) config[f] = e.config[f];
  const json = {
    adapter_names: e.adapterNames,
    config,
    hidden_size: mc.hidden_size ?? mc.n_embd ?? null,
    model_class: (Array.isArray(mc.architectures) ? mc.architectures[0] : null) ?? model.constructor.name,
    model_name: mc._name_or_path ?? null,
    model_type: model.modelType,
    name,
    version: ADAPTERHUB_VERSION,
  };
  mkdirSync(dir, { recursive: true });
  noGrad(() => writeSafetensors(join(dir, SAFE_ADAPTERFUSION_WEIGHTS_NAME), tensors, { format: 'pt' }));
  writeFileAtomic(join(dir, ADAPTERFUSION_CONFIG_NAME), new TextEncoder().encode(JSON.stringify(sortKeys(json), null, 2)));
}

/**
 * Loads an AdapterFusion saved by saveAdapterFusion or AdapterHub (AdapterFusionLoader.load): adds the
 * fusion if missing (its adapters must be loaded), copies its weights (every key checked), and by
 * default activates Fuse(adapter_names) as AdapterHub's set_active=True. Returns the fusion name.
 */
export function loadAdapterFusion(peft: PeftModel, dir: string, opts: { loadAs?: string; setActive?: boolean } = {}): string {
  const cfgPath = join(dir, ADAPTERFUSION_CONFIG_NAME);
  const wPath = join(dir, SAFE_ADAPTERFUSION_WEIGHTS_NAME);
  if (!existsSync(wPath)) {
    const bin = existsSync(join(dir, 'pytorch_model_adapter_fusion.bin'));
    throw new Error(`${dir}: no ${SAFE_ADAPTERFUSION_WEIGHTS_NAME}${bin ? ' (pytorch_model_adapter_fusion.bin is a pickle, which adapterkit does not read: re-save it with use_safetensors=True)' : ': not a directory where an AdapterFusion is saved'}`);
  }
  const raw = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
  const saved = raw.name;
  if (typeof saved !== 'string') throw new Error(`${cfgPath}: no "name"`);
  const name = opts.loadAs ?? saved;
  const adapterNames = Array.isArray(raw.adapter_names) ? (raw.adapter_names as string[]) : name.split(',');
  const fuse = Fuse(...adapterNames, ...(name !== adapterNames.join(',') ? [{ name }] : []));
  const fusions = fusionsOf(peft);
  if (!fusions.has(name)) {
    const c = raw.config;
    if (!c || typeof c !== 'object' || Array.isArray(c)) throw new Error(`${cfgPath}: "config" must be the fusion config object or a preset name`);
    addAdapterFusion(peft, fuse, c as Partial<FusionConfig>);
  }
  const model = peft.model;
  const expected = new Map<string, Tensor>();
  for (const [path, l] of layersOf(peft, name)) for (const [k, t] of l.namedParameters()) expected.set(fusionFileKey(path, name, k), t);
  const file = readSafetensors(wPath);
  const got = new Map<string, Tensor>();
  try {
    for (const [k0, t] of file) {
      // AdapterHub's filter (adapter_fusion_layer.<saved name>), rename to load_as, and base-prefix add/strip.
      if (!k0.includes(`adapter_fusion_layer.${saved}`)) continue;
      let k = k0.replace(`adapter_fusion_layer.${saved}.`, `adapter_fusion_layer.${name}.`);
      const top = k.split('.')[0]!;
      if (top !== model.basePrefix && model.child(top) === null) k = `${model.basePrefix}.${k}`;
      const p = expected.get(k);
      if (!p) throw new Error(`${wPath}: ${k0} is not a tensor of AdapterFusion "${name}" in this model`);
      if (t.shape.join() !== p.shape.join()) throw new Error(`${wPath}: ${k0} has shape [${t.shape.join(', ')}] but the fusion layer needs [${p.shape.join(', ')}]`);
      got.set(k, t);
    }
    for (const k of expected.keys()) if (!got.has(k)) throw new Error(`${wPath}: no ${k} for AdapterFusion "${name}"`);
    noGrad(() => {
      for (const [k, t] of got) tidy(() => { expected.get(k)!.copy_(t.to(expected.get(k)!.dtype, expected.get(k)!.device)); });
    });
  } finally {
    for (const t of file.values()) t.dispose();
  }
  if (opts.setActive !== false) peft.setActive(fuse);
  return name;
}
