// Quantizing a whole model's base (QLoRA's recipe: every Linear of the transformer body, heads and
// embeddings kept in the compute dtype, as transformers does with bitsandbytes), undoing it, and
// the memory the weights take, per dtype and format.
import { Linear, Conv1D } from '../nn/layers.js';
import type { Module } from '../nn/module.js';
import { DTYPE_BYTES, type Tensor } from '../tensor/index.js';
import { QuantLinear } from './linear.js';
import type { QuantizeOptions, QuantFormat } from './weight.js';

/** What quantizeModel needs to know about the model (PretrainedModel has it). */
export interface QuantizableModel extends Module {
  tiedParameters(): Map<string, string>;
  isHeadParameter(name: string): boolean;
}

export interface QuantizeModelOptions extends QuantizeOptions {
  /** Module paths to leave in full precision (matched as a suffix of the path, e.g. "lm_head"). */
  skip?: readonly string[];
  /** Called after each layer (for progress). */
  onLayer?: (path: string, index: number, total: number) => void;
}

/** The Linear/Conv1D layers quantizeModel would quantize. */
export function quantizableLayers(model: QuantizableModel, skip: readonly string[] = []): [string, Linear | Conv1D][] {
  const tied = new Set([...model.tiedParameters()].flat());
  return model.namedModules().filter(([path, m]): boolean => {
    if (!(m instanceof Linear || m instanceof Conv1D) || m instanceof QuantLinear) return false;
    if (path === '' || model.isHeadParameter(`${path}.weight`) || tied.has(`${path}.weight`)) return false;
    if (/(^|\.)(lm_head|score|classifier|qa_outputs|pooler\.dense)$/.test(path)) return false;  // heads, as transformers' llm_int8_skip_modules default
    // inside an adapter (lora_A, lora_B, …): only base layers are quantized
    if (/(^|\.)(lora_|adapter|hada_|lokr_|ia3_|fusion)/.test(path)) return false;
    return !skip.some((s) => path === s || path.endsWith(`.${s}`));
  }) as [string, Linear | Conv1D][];
}

/** Replaces every quantizable layer by a QuantLinear in place; returns how many. */
export function quantizeModel(model: QuantizableModel, opts: QuantizeModelOptions): number {
  const layers = quantizableLayers(model, opts.skip);
  layers.forEach(([path, m], i) => {
    model.setSubmodule(path, QuantLinear.fromLayer(m, opts));
    m.dispose();
    opts.onLayer?.(path, i + 1, layers.length);
  });
  return layers.length;
}

/** Replaces every QuantLinear by a plain Linear holding its dequantized weight (e.g. before a merge); returns how many. */
export function dequantizeModel(model: Module): number {
  const qs = model.namedModules().filter(([, m]) => m instanceof QuantLinear) as [string, QuantLinear][];
  for (const [path, q] of qs) {
    const lin = new Linear(q.inFeatures, q.outFeatures, { bias: q.bias !== null, dtype: q.computeDtype });
    lin.setParameter('weight', q.weight, false);
    if (q.bias) lin.setParameter('bias', q.bias.detach().clone(), false);
    model.setSubmodule(path, lin);
    q.dispose();
  }
  return qs.length;
}

export interface MemoryRow {
  /** A dtype ("bfloat16") or a quantized format ("nf4"). */
  kind: string;
  /** Weight elements (a quantized matrix counts out * in). */
  elements: number;
  bytes: number;
}

/** Parameter memory per dtype and quantized format (each tensor counted once, tied ones too). */
export function weightMemory(model: Module): { rows: MemoryRow[]; totalBytes: number } {
  const rows = new Map<string, MemoryRow>();
  const add = (kind: string, elements: number, bytes: number) => {
    const r = rows.get(kind) ?? { kind, elements: 0, bytes: 0 };
    r.elements += elements;
    r.bytes += bytes;
    rows.set(kind, r);
  };
  const seen = new Set<Tensor>();
  for (const [, t] of model.namedParameters()) {
    if (seen.has(t)) continue;
    seen.add(t);
    add(t.dtype, t.numel, t.numel * DTYPE_BYTES[t.dtype]);
  }
  for (const [, m] of model.namedModules()) if (m instanceof QuantLinear) add(m.format, m.inFeatures * m.outFeatures, m.weightBytes());
  const list = [...rows.values()].sort((a, b) => b.bytes - a.bytes);
  return { rows: list, totalBytes: list.reduce((n, r) => n + r.bytes, 0) };
}

/** The quantized formats present in a model. */
export function quantFormatsOf(model: Module): QuantFormat[] {
  const s = new Set<QuantFormat>();
  for (const [, m] of model.namedModules()) if (m instanceof QuantLinear) s.add(m.format);
  return [...s];
}
