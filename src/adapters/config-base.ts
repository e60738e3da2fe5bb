// The config fields every method shares (targets, layers, modules_to_save, …) and the JSON plumbing
// every PEFT-format method needs: snake_case <-> camelCase, unknown fields kept in `extra` (warned
// unless they are PEFT bookkeeping), and one check that names the first bad value.
import type { AdapterConfigBase } from './types.js';
import { normalizeKeys } from './config-keys.js';

export type BaseFields = Omit<AdapterConfigBase, 'peftType' | 'extra'>;

export const BASE_DEFAULTS: BaseFields = {
  targetModules: null,
  layersToTransform: null,
  layersPattern: null,
  excludeModules: null,
  modulesToSave: null,
  trainableTokenIndices: null,
  baseModelNameOrPath: null,
  taskType: null,
};

/** PEFT JSON name <-> camelCase key of the shared fields. */
export const BASE_FIELDS: readonly [string, keyof AdapterConfigBase][] = [
  ['peft_type', 'peftType'], ['target_modules', 'targetModules'], ['exclude_modules', 'excludeModules'],
  ['layers_to_transform', 'layersToTransform'], ['layers_pattern', 'layersPattern'], ['modules_to_save', 'modulesToSave'],
  ['trainable_token_indices', 'trainableTokenIndices'], ['base_model_name_or_path', 'baseModelNameOrPath'], ['task_type', 'taskType'],
];

/** PEFT fields with no effect on the math, kept for the round trip without a warning. */
export const BOOKKEEPING = ['peft_version', 'revision', 'inference_mode', 'auto_mapping', 'runtime_config', 'megatron_core'];

const isNames = (v: unknown): v is string[] | string => typeof v === 'string' || (Array.isArray(v) && v.every((t) => typeof t === 'string'));
const isIdx = (i: unknown) => Number.isInteger(i) && (i as number) >= 0;

export function configError(what: string, field: string, want: string, got: unknown): never {
  throw new Error(`${what}: ${field} must be ${want}, got ${JSON.stringify(got)}`);
}

/** Checks the shared fields of a resolved config; throws naming the first bad one. */
export function checkBaseFields(what: string, c: AdapterConfigBase): void {
  const bad = (f: string, want: string, got: unknown) => configError(what, f, want, got);
  if (c.targetModules !== null && !isNames(c.targetModules)) bad('target_modules', 'a list of names, a regex string or "all-linear"', c.targetModules);
  if (c.excludeModules !== null && !isNames(c.excludeModules)) bad('exclude_modules', 'a list of names or a regex string', c.excludeModules);
  if (c.modulesToSave !== null && !(Array.isArray(c.modulesToSave) && c.modulesToSave.every((t) => typeof t === 'string'))) bad('modules_to_save', 'a list of module names', c.modulesToSave);
  if (c.layersToTransform !== null && !(isIdx(c.layersToTransform) || (Array.isArray(c.layersToTransform) && c.layersToTransform.every(isIdx)))) {
    bad('layers_to_transform', 'a layer index or a list of layer indices', c.layersToTransform);
  }
  if (c.layersPattern !== null && !isNames(c.layersPattern)) bad('layers_pattern', 'a name or a list of names', c.layersPattern);
  const isIds = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every(isIdx);
  const tti = c.trainableTokenIndices;
  if (tti !== null && !(isIds(tti) || (typeof tti === 'object' && !Array.isArray(tti) && Object.keys(tti).length > 0 && Object.values(tti).every(isIds)))) {
    bad('trainable_token_indices', 'a list of token ids or {module name: [token ids]}', tti);
  }
  if (typeof c.targetModules === 'string' && c.layersToTransform !== null) bad('layers_to_transform', 'null when target_modules is a string (a regex must select the layers itself)', c.layersToTransform);
  if (typeof c.targetModules === 'string' && c.layersPattern !== null) bad('layers_pattern', 'null when target_modules is a string', c.layersPattern);
  const emptyPattern = c.layersPattern === null || c.layersPattern.length === 0;
  if (!emptyPattern && c.layersToTransform === null) bad('layers_to_transform', 'set when layers_pattern is set', c.layersToTransform);
}

/**
 * Resolves options for a method: camelCase keys (PEFT's snake_case names accepted as aliases; any other
 * key is an error with a "did you mean"), defaults filled, shared fields checked. The method checks
 * its own fields afterwards.
 */
export function resolveWith<C extends AdapterConfigBase>(what: string, peftType: string, partial: Record<string, unknown>, defaults: Omit<C, 'extra' | 'peftType'>, fields: readonly [string, string][], hints: Record<string, string> = {}): C {
  const all = [...BASE_FIELDS, ...fields] as [string, string][];
  const aliases: Record<string, string> = Object.fromEntries(all.filter(([j, k]) => j !== k));
  const known = [...new Set([...all.map(([, k]) => k), ...Object.keys(defaults), 'peftType', 'extra'])];
  const given = normalizeKeys(what, { ...partial }, known, aliases, hints);
  const c = { ...BASE_DEFAULTS, ...defaults, extra: {}, ...given, peftType } as unknown as C;
  checkBaseFields(what, c);
  return c;
}

const isUnset = (v: unknown) => v === null || v === undefined || v === false || (Array.isArray(v) && v.length === 0) || (typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0);

/**
 * A PEFT adapter_config.json -> options for resolve(): known fields renamed (null kept only where null
 * means something), unknown ones into `extra` with a warning unless bookkeeping or unset. `ignored`:
 * fields known to have no effect here (written by PEFT, kept without a warning).
 */
export function peftJsonToOptions(what: string, peftType: string, raw: Record<string, unknown>, fields: readonly [string, string][], warn: (m: string) => void, ignored: readonly string[] = []): Record<string, unknown> {
  const all = [...BASE_FIELDS, ...fields] as [string, string][];
  const partial: Record<string, unknown> = {};
  const extra: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw)) {
    const f = all.find(([j]) => j === k);
    if (f) {
      if (v !== null || BASE_FIELDS.some(([j]) => j === k)) partial[f[1]] = v;
    } else {
      extra[k] = v;
      if (BOOKKEEPING.includes(k) || ignored.includes(k) || isUnset(v)) continue;
      const value = JSON.stringify(v);
      warn(`adapter_config.json: field "${k}" (${value && value.length > 40 ? value.slice(0, 40) + '…' : value}) is not known to this version of ${what} and is ignored`);
    }
  }
  if (partial.peftType !== undefined && String(partial.peftType).toUpperCase() !== peftType) configError(what, 'peft_type', JSON.stringify(peftType), partial.peftType);
  delete partial.peftType;
  return { ...partial, extra };
}

/** Options -> PEFT JSON: extra fields first, then every known field, inference_mode true (as PEFT's save_pretrained). */
export function optionsToPeftJson(c: AdapterConfigBase, fields: readonly [string, string][]): Record<string, unknown> {
  const out: Record<string, unknown> = { ...c.extra };
  for (const [j, k] of [...BASE_FIELDS, ...fields]) out[j] = (c as unknown as Record<string, unknown>)[k] ?? null;
  out.inference_mode = true;
  return out;
}
