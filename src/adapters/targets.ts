// Which modules an adapter goes on, with PEFT's matching rules (tuners_utils.check_target_module_exists):
// a list matches a module whose path equals an entry or ends with "." + entry; a string is a regex
// that must match the whole path; "all-linear" is every linear layer except the output head.
import type { Module } from '../nn/module.js';
import { isLinearLayer } from '../nn/layers.js';
import type { AdapterConfigBase } from './types.js';

/** The attention query/value projections of each family (PEFT's default low-rank targets, TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
export const DEFAULT_QV_TARGETS: Readonly<Record<string, string[]>> = {
  gpt2: ['c_attn'],
  llama: ['q_proj', 'v_proj'],
  mistral: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  bert: ['query', 'value'],
  roberta: ['query', 'value'],
  'xlm-roberta': ['query', 'value'],
};

export function matchesTarget(path: string, targets: string[] | string): boolean {
  if (typeof targets === 'string') {
    if (targets === 'all-linear') return false;  // handled by the caller with the module type
    return new RegExp(`^(?:${targets})$`).test(path);
  }
  return targets.some((t) => path === t || path.endsWith('.' + t));
}

/**
 * PEFT's layer index for layers_to_transform (tuners_utils.check_target_module_exists): the first
 * numbered segment after a dot, `.*?\.[^.]*\.(\d+)\.`, or with layers_pattern (a name or a list, tried
 * in order) `.*?\.<pattern>\.(\d+)\.`. Both need a dot before the layer list's name, as in PEFT.
 */
export function layerIndexOf(path: string, layersPattern: string | string[] | null): number | null {
  const patterns = layersPattern === null || layersPattern.length === 0 ? null : typeof layersPattern === 'string' ? [layersPattern] : layersPattern;
  if (patterns === null) {
    const m = /^.*?\.[^.]*\.(\d+)\./.exec(path);
    return m ? Number(m[1]) : null;
  }
  for (const p of patterns) {
    const m = new RegExp(`^.*?\\.(?:${p})\\.(\\d+)\\.`).exec(path);
    if (m) return Number(m[1]);
  }
  return null;
}

/** PEFT's modules_to_save guard: a module at or under a modules_to_save name never gets an adapter. */
export function underModulesToSave(path: string, modulesToSave: string[] | null): boolean {
  return (modulesToSave ?? []).some((m) => new RegExp(`(^|.*\\.)(?:${m})($|\\..*)`).test(path));
}

export function isExcluded(path: string, exclude: string[] | string | null): boolean {
  if (exclude === null || exclude.length === 0) return false;
  if (typeof exclude === 'string') return new RegExp(`^(?:${exclude})$`).test(path);
  return exclude.some((e) => path === e || path.endsWith('.' + e));
}

/**
 * PEFT's check_target_module_exists for one path: exclude_modules and modules_to_save first, then
 * targets; layers_to_transform applies only to a list target matched by suffix (a path listed in
 * full is taken whatever its layer), exactly as PEFT does.
 */
export function targetMatch(path: string, config: AdapterConfigBase, targets: string[] | string): boolean {
  if (isExcluded(path, config.excludeModules)) return false;
  if (underModulesToSave(path, config.modulesToSave)) return false;
  if (typeof targets === 'string') return matchesTarget(path, targets);
  if (targets.includes(path)) return true;
  if (!targets.some((t) => path.endsWith('.' + t))) return false;
  const want = config.layersToTransform;
  if (want === null || (Array.isArray(want) && want.length === 0)) return true;
  const idx = layerIndexOf(path, config.layersPattern);
  if (idx === null) return false;
  return typeof want === 'number' ? idx === want : want.includes(idx);
}

/**
 * The paths of the modules to wrap, in model order. `modules` are (path, module) pairs where a module
 * already wrapped by a tuner layer appears once, as its base layer (so a second adapter finds it).
 * `allLinearExclude`: for "all-linear", the model's output embedding or classification head (PEFT's
 * _maybe_include_all_linear_layers).
 */
export function findTargets(modules: [string, Module][], config: AdapterConfigBase, targets: string[] | string, canWrap: (m: Module) => boolean, allLinearExclude: string[] = []): string[] {
  const out: string[] = [];
  for (const [path, m] of modules) {
    if (path === '') continue;
    let hit: boolean;
    if (targets === 'all-linear') {
      hit = isLinearLayer(m) && !allLinearExclude.includes(path) && !isExcluded(path, config.excludeModules) && !underModulesToSave(path, config.modulesToSave);
    } else hit = targetMatch(path, config, targets);
    if (!hit) continue;
    if (!canWrap(m)) {
      if (targets === 'all-linear') continue;
      throw new Error(`target module "${path}" is a ${m.constructor.name}, which this adapter cannot wrap (it needs a linear layer)`);
    }
    out.push(path);
  }
  return out;
}

/**
 * What "all-linear" leaves out, as PEFT: the output embedding of LM models (lm_head, BERT's
 * cls.predictions.decoder, RoBERTa's lm_head.decoder); for task_type SEQ_CLS models without one, the
 * classification head (`score` or `classifier`, the first that exists). Nothing else: a token
 * classification head is excluded only through modules_to_save, as in PEFT.
 */
export function allLinearExclusions(model: { task: string; getSubmodule(p: string): Module }, taskType: string | null): string[] {
  const has = (p: string) => { try { model.getSubmodule(p); return true; } catch { return false; } };
  if (model.task === 'causal-lm' || model.task === 'masked-lm') {
    return ['lm_head', 'cls.predictions.decoder', 'lm_head.decoder'].filter(has).slice(-1);
  }
  if (taskType === 'SEQ_CLS') return ['score', 'classifier'].filter(has).slice(0, 1);
  return [];
}

/**
 * PEFT's get_pattern_key: the rank_pattern / alpha_pattern key that matches a module path, where a
 * key matches when the path is the key or ends with "." + key (keys may be regexes).
 */
export function patternValue<T>(pattern: Readonly<Record<string, T>>, path: string): T | undefined {
  for (const key of Object.keys(pattern)) {
    if (new RegExp(`^(?:.*\\.)?(?:${key})$`).test(path)) return pattern[key];
  }
  return undefined;
}
