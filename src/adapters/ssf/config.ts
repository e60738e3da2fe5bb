// SSF configuration (Lian et al. 2022, "Scaling & Shifting Your Features: A New Baseline for Efficient
// Model Tuning"). No library ships an SSF file format, so adapterkit writes PEFT-style folders with
// peft_type "SSF" and the fields below (snake_case, as PEFT's own methods).
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

/**
 * "normal": the SSF paper's code (init_ssf_scale_shift): scale ~ N(1, 0.02), shift ~ N(0, 0.02), so
 * the layer starts near, not at, the base. "identity": scale 1, shift 0 (the layer starts as the base).
 */
export type SsfInit = 'normal' | 'identity';

export interface SsfConfig extends AdapterConfigBase {
  peftType: 'SSF';
  initSsfWeights: SsfInit;
}

export type SsfOptions = Partial<Omit<SsfConfig, 'extra' | 'peftType'>> & { peftType: 'SSF'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    SSF: SsfOptions;
  }
}

export const DEFAULT_SSF: Pick<SsfConfig, 'initSsfWeights'> = { initSsfWeights: 'normal' };

export const SSF_FIELDS: readonly [string, keyof SsfConfig][] = [['init_ssf_weights', 'initSsfWeights']];

/**
 * Default targets: every linear layer of attention and MLP (the paper puts SSF after every operation
 * of a ViT block: qkv, proj, fc1, fc2 and the norms). Norms are left out of the defaults because a
 * shift after a bias-free RMSNorm cannot be merged; name them in target_modules to adapt them.
 * BERT-style lists name the layers' own denses (not the pooler's or a classifier's).
 */
export const DEFAULT_SSF_TARGETS: Readonly<Record<string, string[]>> = {
  gpt2: ['c_attn', 'attn.c_proj', 'c_fc', 'mlp.c_proj'],
  llama: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  mistral: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  qwen2: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  bert: ['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'],
  roberta: ['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'],
  'xlm-roberta': ['query', 'key', 'value', 'attention.output.dense', 'intermediate.dense', 'output.dense'],
};

export function resolveSsf(partial: Partial<SsfConfig> | SsfOptions): SsfConfig {
  const c = resolveWith<SsfConfig>('SSF config', 'SSF', partial as Record<string, unknown>, DEFAULT_SSF as Omit<SsfConfig, 'extra' | 'peftType'>, SSF_FIELDS, { targets: 'targetModules', init: 'initSsfWeights' });
  if (c.initSsfWeights !== 'normal' && c.initSsfWeights !== 'identity') configError('SSF config', 'init_ssf_weights', '"normal" or "identity"', c.initSsfWeights);
  return c;
}

export function ssfFromJson(raw: Record<string, unknown>, warn: (m: string) => void): SsfConfig {
  return resolveSsf(peftJsonToOptions('SSF', 'SSF', raw, SSF_FIELDS, warn) as SsfOptions);
}

export function ssfToJson(c: SsfConfig): Record<string, unknown> {
  return optionsToPeftJson(c, SSF_FIELDS);
}
