// AdapterHub's adapter folder (adapters 1.2.0, utils.py / loading.py): adapter_config.json as
// build_full_config writes it and adapter.safetensors with the model's full state-dict keys, filtered
// to the adapter's (`transformer.h.0.output_adapters.adapters.<name>.adapter_down.0.weight`,
// `bert.encoder.layer.0.output.adapters.<name>.…`, `transformer.invertible_adapters.<name>.F.0.weight`,
// `transformer.shared_parameters.<name>.phm_rule`). In BERT AdapterHub's BertSelfOutput/BertOutput ARE
// the bottleneck layer, so their keys have no `attention_adapters.`/`output_adapters.` segment; here
// the site is a child of those modules, and the segment is dropped and restored by the key mapping.
// AdapterHub keys carry the adapter name; the parts accept any name on load (renaming, as AdapterHub does).
import type { AdapterFileFormat } from '../types.js';
import type { PretrainedModel } from '../../models/types.js';
import { BN_FIELDS, FLOAT_FIELDS, type BottleneckConfig } from './config.js';

export const ADAPTERHUB_VERSION = 'adapters.1.2.0';

const BERT_SITE = /(^|\.)output\.(?:attention|output)_adapters\.adapters\./;
/** AdapterHub's legacy module names (loading.py) -> today's. */
const LEGACY: [RegExp, string][] = [
  [/\.(attention_text_task|attention_text_lang|layer_text_task|layer_text_lang)_adapters\./, '.adapters.'],
  [/(^|\.)invertible_lang_adapters\./, '$1invertible_adapters.'],
];

/**
 * `configText` is not (yet) part of AdapterFileFormat: the framework's writer should call it when
 * present (JSON.stringify writes Python floats such as scaling 4.0 as ints, which AdapterHub rejects).
 */
export const ADAPTERHUB_FORMAT: AdapterFileFormat & { configText(json: Record<string, unknown>): string } = {
  weightsFile: 'adapter.safetensors',
  configText: (json) => adapterHubJsonText(json),
  alternatives: ['pytorch_adapter.bin'],
  fileKey(path: string, key: string): string {
    const full = path ? `${path}.${key}` : key;
    return full.replace(BERT_SITE, '$1output.adapters.');
  },
  modelKey(fileKey: string, model: PretrainedModel): string | null {
    let k = fileKey;
    for (const [re, to] of LEGACY) k = k.replace(re, to);
    // AdapterHub adds or strips base_model_prefix on load: a file from a bare GPT2Model/BertModel has none.
    const top = k.split('.')[0]!;
    const adapterKey = /(^|_|\.)adapters\.|(^|\.)shared_parameters\./.test(k);
    if (adapterKey && top !== model.basePrefix && model.child(top) === null) k = `${model.basePrefix}.${k}`;
    // BERT: `…attention.output.adapters.` is the attention site, `…layer.N.output.adapters.` the feed-forward one.
    k = k.replace(/(^|\.)attention\.output\.adapters\./, '$1attention.output.attention_adapters.adapters.');
    k = k.replace(/(^|\.)(\d+)\.output\.adapters\./, '$1$2.output.output_adapters.adapters.');
    return k;
  },
};

/** A JSON number as Python writes a float (4 -> 4.0). */
function pyFloat(v: number): string {
  return Number.isInteger(v) ? v.toFixed(1) : JSON.stringify(v);
}

function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (v && typeof v === 'object') return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys((v as Record<string, unknown>)[k])]));
  return v;
}

/**
 * adapter_config.json text as AdapterHub writes it (json.dump(indent=2, sort_keys=True)): keys
 * sorted, and the float fields of the config written as floats (AdapterHub rejects an int scaling).
 */
export function adapterHubJsonText(json: Record<string, unknown>): string {
  let text = JSON.stringify(sortKeys(json), null, 2);
  const config = json.config as Record<string, unknown> | undefined;
  for (const f of FLOAT_FIELDS) {
    const v = config?.[f];
    if (typeof v !== 'number' || !Number.isInteger(v)) continue;
    // Only inside "config", where each field name appears once, indented by 4.
    text = text.replace(new RegExp(`(\\n    "${f}": )${v}(,?\\n)`), `$1${pyFloat(v)}$2`);
  }
  return text;
}

/** BottleneckConfig -> the full AdapterHub JSON. */
export function bottleneckToJson(c: BottleneckConfig, ctx: { name: string; model: PretrainedModel }): Record<string, unknown> {
  const { config: unknownFields, ...rest } = c.extra;
  const config: Record<string, unknown> = { ...(unknownFields as Record<string, unknown> | undefined) };
  for (const [j, k] of BN_FIELDS) config[j] = c[k];
  const mc = ctx.model.config as Record<string, unknown>;
  const out: Record<string, unknown> = {
    ...rest,
    config,
    hidden_size: mc.hidden_size ?? mc.n_embd ?? null,
    model_class: (Array.isArray(mc.architectures) ? mc.architectures[0] : null) ?? ctx.model.constructor.name,
    model_name: c.baseModelNameOrPath ?? mc._name_or_path ?? null,
    model_type: ctx.model.modelType,
    name: ctx.name,
    version: ADAPTERHUB_VERSION,
  };
  // adapterkit's shared fields have no place in AdapterHub's file; written only when set (AdapterHub ignores them).
  if (c.modulesToSave !== null) out.modules_to_save = c.modulesToSave;
  if (c.taskType !== null) out.task_type = c.taskType;
  return out;
}

/** True for an AdapterHub adapter_config.json (no peft_type; a bottleneck "config"). */
export function detectAdapterHub(raw: Record<string, unknown>): boolean {
  const c = raw.config;
  if (!c || typeof c !== 'object' || Array.isArray(c)) return false;
  const cfg = c as Record<string, unknown>;
  const arch = cfg.architecture;
  return (arch === undefined || arch === null || arch === 'bottleneck') && ('reduction_factor' in cfg || 'mh_adapter' in cfg);
}

/** Top-level keys of the file that are not the config. */
const META = ['hidden_size', 'model_class', 'model_name', 'model_type', 'name', 'version', 'config'];

/** The AdapterHub JSON -> options for resolveBottleneck (unknown config fields kept in `extra`, with a warning). */
export function bottleneckJsonToOptions(raw: Record<string, unknown>, warn: (m: string) => void): Record<string, unknown> {
  if (!detectAdapterHub(raw)) throw new Error('adapter_config.json: not an AdapterHub bottleneck adapter (no "config" with reduction_factor / mh_adapter, or another architecture)');
  const cfg = { ...(raw.config as Record<string, unknown>) };
  delete cfg.architecture;
  // Legacy {invertible_adapter: {block_type, reduction_factor}} (AdapterConfig.from_dict).
  const inv = cfg.invertible_adapter as { block_type?: string; reduction_factor?: number } | undefined;
  if (inv && typeof inv === 'object') {
    cfg.inv_adapter = inv.block_type ?? null;
    cfg.inv_adapter_reduction_factor = inv.reduction_factor ?? null;
  }
  delete cfg.invertible_adapter;
  // Files without "version" are adapter-transformers' (loading.py ACTIVATION_RENAME): "gelu" meant tanh-GELU.
  if (raw.version === undefined && typeof cfg.non_linearity === 'string') {
    const rename: Record<string, string> = { gelu: 'gelu_new', gelu_orig: 'gelu' };
    cfg.non_linearity = rename[cfg.non_linearity] ?? cfg.non_linearity;
  }
  const opts: Record<string, unknown> = {};
  const unknownFields: Record<string, unknown> = {};
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(cfg)) {
    const f = BN_FIELDS.find(([j]) => j === k);
    if (f) {
      if (v !== null || ['initWeightsSeed', 'invAdapter', 'invAdapterReductionFactor'].includes(f[1])) opts[f[1]] = v;
    } else {
      unknownFields[k] = v;
      warn(`adapter_config.json: config field "${k}" (${JSON.stringify(v)}) is not known to adapterkit's bottleneck adapters and is ignored`);
    }
  }
  for (const [k, v] of Object.entries(raw)) {
    if (k === 'modules_to_save') opts.modulesToSave = v;
    else if (k === 'task_type') opts.taskType = v;
    else if (!META.includes(k)) extra[k] = v;
  }
  if (typeof raw.model_name === 'string') opts.baseModelNameOrPath = raw.model_name;
  // Unknown config fields and top-level keys are kept to write them back; the meta keys are rewritten from the model.
  if (Object.keys(unknownFields).length) extra.config = unknownFields;
  opts.extra = extra;
  return opts;
}
