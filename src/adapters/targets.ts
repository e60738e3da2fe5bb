// Which modules an adapter goes on, with PEFT's matching rules (tuners_utils.check_target_module_exists):
// a list matches a module whose path equals an entry or ends with "." + entry; a string is a regex
// that must match the whole path; "all-linear" is every linear layer except the output head.
import type { Module } from '../nn/module.js';
import { isLinearLayer } from '../nn/layers.js';
import type { AdapterConfigBase } from './types.js';

/** PEFT's default LoRA targets (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING). */
export const DEFAULT_LORA_TARGETS: Readonly<Record<string, string[]>> = {
  gpt2: ['c_attn'],
  llama: ['q_proj', 'v_proj'],
  mistral: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  bert: ['query', 'value'],
  roberta: ['query', 'value'],
  'xlm-roberta': ['query', 'value'],
};

const OUTPUT_HEADS = /(^|\.)(lm_head|score|classifier|cls\.predictions\.decoder|lm_head\.decoder|out_proj)$/;
const LAYER_INDEX = /(?:^|\.)(layers|h|layer|blocks|block)\.(\d+)\./;

export function matchesTarget(path: string, targets: string[] | string): boolean {
  if (typeof targets === 'string') {
    if (targets === 'all-linear') return false;  // handled by the caller with the module type
    return new RegExp(`^(?:${targets})$`).test(path);
  }
  return targets.some((t) => path === t || path.endsWith('.' + t));
}

/** The layer index in a path ("model.layers.3.self_attn.q_proj" -> 3), honouring layersPattern. */
export function layerIndexOf(path: string, layersPattern: string | null): number | null {
  if (layersPattern) {
    const m = new RegExp(`(?:^|\\.)${layersPattern}\\.(\\d+)\\.`).exec(path);
    return m ? Number(m[1]) : null;
  }
  const m = LAYER_INDEX.exec(path);
  return m ? Number(m[2]) : null;
}

/**
 * The paths of the modules to wrap, in model order. `modules` are (path, module) pairs where a module
 * already wrapped by a tuner layer appears once, as its base layer (so a second adapter finds it).
 */
export function findTargets(modules: [string, Module][], config: AdapterConfigBase, targets: string[] | string, canWrap: (m: Module) => boolean): string[] {
  const out: string[] = [];
  for (const [path, m] of modules) {
    if (path === '') continue;
    const hit = targets === 'all-linear' ? isLinearLayer(m) && !OUTPUT_HEADS.test(path) : matchesTarget(path, targets);
    if (!hit) continue;
    if (config.layersToTransform) {
      const idx = layerIndexOf(path, config.layersPattern);
      if (idx === null || !config.layersToTransform.includes(idx)) continue;
    }
    if (!canWrap(m)) {
      if (targets === 'all-linear') continue;
      throw new Error(`target module "${path}" is a ${m.constructor.name}, which this adapter cannot wrap (it needs a linear layer)`);
    }
    out.push(path);
  }
  return out;
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
