// Loading and saving Hugging Face checkpoints: config.json + safetensors (single or sharded), with
// HF's key conventions (with or without the base-model prefix, ignored buffers, tied weights) and
// an error listing every missing, unexpected or mis-shaped key.
import { join } from 'node:path';
import { existsSync, mkdirSync } from 'node:fs';
import { CheckpointReader, writeSharded } from '../io/checkpoint.js';
import { writeFileAtomic } from '../io/atomic.js';
import { resolveDtype, type DType, type Device, type Tensor } from '../tensor/index.js';
import { readConfig, ConfigError } from './config.js';
import { checkModelFits } from './size.js';
import { modelFamily, taskFromArchitectures } from './registry.js';
import type { PretrainedModel, RawConfig, Task } from './types.js';
import { Linear, Conv1D, computeDtype } from '../nn/layers.js';
import { empty } from '../tensor/index.js';
import { QuantLinear } from '../quant/linear.js';
import { quantizableLayers, quantFormatsOf } from '../quant/model.js';
import { findQuantizedModules, readQuantized, quantizedEntries, quantizationConfig } from '../quant/bnb.js';
import { parseQuantFormat, defaultBlocksize, type QuantFormat, type QuantizeOptions } from '../quant/weight.js';

export interface LoadOptions {
  /**
   * Weights are converted to this dtype as they are read. Default 'auto': bfloat16 where the device
   * computes it natively (AMX, Arm BF16, CUDA 8.0+), else float32 (see `autoDtype`).
   */
  dtype?: DType | 'auto';
  /** Where the weights live and the forward runs (default 'cpu'). */
  device?: Device;
  /** Default: from config.json's architectures, else the family's usual task. */
  task?: Task;
  numLabels?: number;
  /** Seed for newly initialised head weights (e.g. a classifier on a base checkpoint). */
  seed?: number;
  /** Print notes (ignored keys, newly initialised heads) with this function. */
  log?: (msg: string) => void;
  /**
   * Quantize the base's Linear layers as they are read (QLoRA's recipe: heads and embeddings stay
   * in `dtype`): 'nf4' | 'fp4' (block 64, double-quantized scales), 'int8' (per row), 'int4'
   * (groups of 128), or the full options. Only one layer is ever held in full precision. A
   * checkpoint saved quantized (bitsandbytes' format) loads quantized without this.
   */
  quantize?: QuantFormat | (QuantizeOptions & { skip?: string[] });
}

export type LoadedModel = PretrainedModel & { initWeights(seed: number, only?: (path: string) => boolean): void };

export class CheckpointMismatchError extends Error {
  override readonly name = 'CheckpointMismatchError';
}

/** Builds the model named by `config` with random (HF-initialised) weights. */
export function createModel(config: RawConfig, opts: { dtype?: DType | 'auto'; device?: Device; task?: Task; numLabels?: number; seed?: number } = {}): LoadedModel {
  const fam = modelFamily(config.model_type);
  const task = opts.task ?? taskFromArchitectures(config) ?? fam.defaultTask;
  if (!fam.tasks.includes(task)) throw new ConfigError(`${String(config.model_type)} has no ${task} head (supported: ${fam.tasks.join(', ')})`);
  const dtype = opts.dtype === 'auto' ? resolveDtype('auto', opts.device) : opts.dtype ?? 'float32';
  checkModelFits(config, dtype, `model config (${String(config.model_type)})`);  // before allocating anything
  const model = fam.build(config, { task, dtype, numLabels: opts.numLabels });
  model.initWeights(opts.seed ?? 0);
  tie(model);
  if (opts.device && opts.device !== 'cpu') model.to(opts.device);
  model.requiresGrad_(false).eval();  // frozen and in eval mode until a trainer says otherwise
  return model;
}

function tie(model: PretrainedModel): void {
  for (const [target, source] of model.tiedParameters()) model.setParameter(target, model.getParameter(source));
}

/** Loads a checkpoint folder (config.json + model.safetensors or a sharded index). */
export function loadModel(dir: string, opts: LoadOptions = {}): LoadedModel {
  const config = readConfig(join(dir, 'config.json'));
  const fam = modelFamily(config.model_type);
  const task = opts.task ?? taskFromArchitectures(config) ?? fam.defaultTask;
  if (!fam.tasks.includes(task)) throw new ConfigError(`${String(config.model_type)} has no ${task} head (supported: ${fam.tasks.join(', ')})`);
  const dtype = resolveDtype(opts.dtype, opts.device);
  checkModelFits(config, dtype, `${join(dir, 'config.json')} (${String(config.model_type)})`);  // before allocating anything
  const model = fam.build(config, { task, dtype, numLabels: opts.numLabels });
  try {
    loadWeights(model, dir, opts);
    if (opts.device && opts.device !== 'cpu') model.to(opts.device);
    model.requiresGrad_(false).eval();  // frozen and in eval mode (as HF from_pretrained) until a trainer says otherwise
    // As HF's from_pretrained: the folder it came from, which adapter configs record as base_model_name_or_path.
    if (typeof config._name_or_path !== 'string' || config._name_or_path === '') config._name_or_path = dir;
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

function quantOptions(q: LoadOptions['quantize']): (QuantizeOptions & { skip?: string[] }) | null {
  if (q === undefined) return null;
  if (typeof q === 'string') return { format: parseQuantFormat(q) };
  parseQuantFormat(q.format);
  return q;
}

// Pre-quantized layers (bitsandbytes' keys): each becomes a QuantLinear before the float weights
// are matched; returns the checkpoint keys consumed.
function loadQuantizedLayers(model: LoadedModel, reader: CheckpointReader): Set<string> {
  const consumed = new Set<string>();
  const prefix = model.basePrefix + '.';
  for (const [ckpt, keys] of findQuantizedModules(reader)) {
    const candidates = [ckpt, prefix + ckpt, ckpt.startsWith(prefix) ? ckpt.slice(prefix.length) : null];
    const path = candidates.find((c): c is string => {
      if (c === null) return false;
      try {
        const m = model.getSubmodule(c);
        return m instanceof Linear || m instanceof Conv1D;
      } catch {
        return false;
      }
    });
    if (path === undefined) throw new CheckpointMismatchError(`quantized weight ${ckpt}.weight has no Linear layer in ${model.modelType}`);
    const old = model.getSubmodule(path) as Linear | Conv1D;
    const q = readQuantized(reader, ckpt, [old.outFeatures, old.inFeatures]);
    const bias = old.bias ? empty([old.outFeatures], { dtype: model.dtype }) : null;
    model.setSubmodule(path, new QuantLinear(q, bias, computeDtype(model.dtype)));
    old.dispose();
    keys.forEach((k) => consumed.add(k));
  }
  return consumed;
}

function loadWeights(model: LoadedModel, dir: string, opts: LoadOptions): void {
  const reader = CheckpointReader.open(dir);
  try {
    const consumed = loadQuantizedLayers(model, reader);
    const quant = quantOptions(opts.quantize);
    const already = quantFormatsOf(model);
    if (quant && already.length && !already.includes(quant.format)) throw new ConfigError(`${dir} is already quantized (${already.join(', ')}); load it without quantize, or as ${already.join('/')}`);
    const targets = new Map<string, string>((quant ? quantizableLayers(model, quant.skip) : []).map(([p]) => [`${p}.weight`, p]));
    const expected = new Map(model.namedParameters().map(([n, t]) => [n, t.shape] as const));
    const tied = model.tiedParameters();
    const prefix = model.basePrefix + '.';
    const plan = new Map<string, string>();  // model name -> checkpoint key
    const unexpected: string[] = [];
    const mismatched: string[] = [];
    let ignored = 0;
    for (const key of reader.names()) {
      if (consumed.has(key)) continue;
      const candidates = [key, prefix + key, key.startsWith(prefix) ? key.slice(prefix.length) : null];
      const name = candidates.find((c): c is string => c !== null && expected.has(c));
      if (name === undefined || tied.has(name)) {
        if (name !== undefined || candidates.some((c) => c !== null && model.isIgnoredKey(c))) ignored++;
        else unexpected.push(key);
        continue;
      }
      const want = expected.get(name)!;
      const got = reader.info(key).shape;
      if (want.length !== got.length || want.some((s, i) => s !== got[i])) {
        mismatched.push(`${key}: checkpoint [${got.join(', ')}] vs model [${want.join(', ')}]`);
        continue;
      }
      if (plan.has(name)) {
        unexpected.push(`${key} (a second key for ${name})`);
        continue;
      }
      plan.set(name, key);
    }
    const missing = [...expected.keys()].filter((n) => !plan.has(n) && !tied.has(n));
    const newHead = missing.filter((n) => model.isHeadParameter(n));
    const reallyMissing = missing.filter((n) => !model.isHeadParameter(n));
    if (reallyMissing.length || unexpected.length || mismatched.length) {
      const list = (title: string, xs: string[]) => (xs.length ? `\n  ${title} (${xs.length}): ${xs.slice(0, 12).join(', ')}${xs.length > 12 ? ', …' : ''}` : '');
      throw new CheckpointMismatchError(
        `checkpoint ${dir} does not fit ${model.modelType} (${model.task}):` +
          list('missing keys', reallyMissing) + list('unexpected keys', unexpected) + list('shape mismatches', mismatched) +
          '\n  help: is this checkpoint for another architecture or size? config.json and the weights must agree');
    }
    for (const [name, key] of plan) if (!targets.has(name)) model.setParameter(name, reader.read(key, { dtype: model.dtype }), false);
    if (newHead.length) {
      const heads = new Set(newHead);
      model.initWeights(opts.seed ?? 0, (path) => [...heads].some((h) => h.startsWith(path + '.') || h === path));
      opts.log?.(`newly initialised (not in the checkpoint): ${newHead.join(', ')}`);
    }
    tie(model);
    // Quantized layers last, one at a time: the full-precision weight of one layer is the only one held.
    for (const [name, path] of targets) {
      model.setParameter(name, reader.read(plan.get(name)!, { dtype: model.dtype }), false);
      const m = model.getSubmodule(path) as Linear | Conv1D;
      model.setSubmodule(path, QuantLinear.fromLayer(m, { ...quant!, blocksize: quant!.blocksize ?? (defaultBlocksize(quant!.format) || undefined) }));
      m.dispose();
    }
    if (targets.size) opts.log?.(`quantized ${targets.size} layers to ${quant!.format}`);
    if (ignored) opts.log?.(`ignored ${ignored} checkpoint keys (buffers, tied copies, other heads)`);
  } finally {
    reader.close();
  }
}

/** Writes config.json and the weights (tied copies omitted, as HF does); every file atomically. */
export function saveModel(model: PretrainedModel, dir: string, opts: { maxShardBytes?: number; dtype?: DType } = {}): void {
  mkdirSync(dir, { recursive: true });
  const tied = model.tiedParameters();
  const tensors = new Map<string, Tensor>();
  const casts: Tensor[] = [];
  for (const [name, t] of model.namedParameters()) {
    if (tied.has(name)) continue;
    if (opts.dtype && t.dtype !== opts.dtype) {
      const c = t.to(opts.dtype);
      casts.push(c);
      tensors.set(name, c);
    } else tensors.set(name, t);
  }
  const formats = quantFormatsOf(model);
  if (formats.length > 1) throw new Error(`cannot save a base quantized to several formats (${formats.join(', ')})`);
  let qcfg: Record<string, unknown> | null = null;
  for (const [path, m] of model.namedModules()) {
    if (!(m instanceof QuantLinear)) continue;
    const { entries, owned } = quantizedEntries(path, m);
    for (const [k, t] of entries) tensors.set(k, t);
    casts.push(...owned);
    const sp = m.spec();
    qcfg ??= quantizationConfig(m.format, { blocksize: sp.blocksize, doubleQuant: sp.nestedAbsmax !== undefined, computeDtype: m.computeDtype, skip: ['lm_head'] });
  }
  try {
    writeSharded(dir, tensors, { maxShardBytes: opts.maxShardBytes ?? 4 * 2 ** 30 });
  } finally {
    casts.forEach((c) => c.dispose());
  }
  const config: Record<string, unknown> = { ...model.config };
  if (qcfg) config.quantization_config = qcfg;
  else delete config.quantization_config;
  if (opts.dtype) config.torch_dtype = opts.dtype;
  writeFileAtomic(join(dir, 'config.json'), new TextEncoder().encode(JSON.stringify(config, null, 2) + '\n'));
}

export function isCheckpointDir(dir: string): boolean {
  return existsSync(join(dir, 'config.json'));
}
