// MixDA-style domain gate (after Diao et al. 2023, "Mixture-of-Domain-Adapters"): adapterkit's own
// peft_type "MIXDA"; PEFT-style folders with the fields below (snake_case). Only the gate is saved:
// the domain adapters are LoRA adapters of the same PeftModel, named in domain_adapters.
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export interface MixdaConfig extends AdapterConfigBase {
  peftType: 'MIXDA';
  /** Names of LoRA adapters already on the PeftModel, in gate order (frozen; only the gate trains). */
  domainAdapters: string[];
  /** What the gate reads: "mean" = the mean over positions of the embedding output (B, T, C) -> (B, C). */
  gateInput: 'mean';
  /** true: a zero gate (every domain weighted 1/n at the start); false: nn.Linear's default uniform init. */
  initGateWeights: boolean;
}

export type MixdaOptions = Partial<Omit<MixdaConfig, 'extra' | 'peftType'>> & { peftType: 'MIXDA'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    MIXDA: MixdaOptions;
  }
}

export const DEFAULT_MIXDA: Pick<MixdaConfig, 'domainAdapters' | 'gateInput' | 'initGateWeights'> = {
  domainAdapters: [],
  gateInput: 'mean',
  initGateWeights: true,
};

export const MIXDA_FIELDS: readonly [string, keyof MixdaConfig][] = [
  ['domain_adapters', 'domainAdapters'], ['gate_input', 'gateInput'], ['init_gate_weights', 'initGateWeights'],
];

const HINTS = { domains: 'domainAdapters', adapters: 'domainAdapters', experts: 'domainAdapters' };

/** Fills defaults and checks the fields (that the domain adapters exist is checked when the gate is added). */
export function resolveMixda(partial: Partial<MixdaConfig> | MixdaOptions): MixdaConfig {
  const c = resolveWith<MixdaConfig>('MixDA config', 'MIXDA', partial as Record<string, unknown>, DEFAULT_MIXDA as Omit<MixdaConfig, 'extra' | 'peftType'>, MIXDA_FIELDS, HINTS);
  const bad = (f: string, want: string, got: unknown) => configError('MixDA config', f, want, got);
  const d = c.domainAdapters;
  if (!(Array.isArray(d) && d.every((n) => typeof n === 'string' && n.length > 0))) bad('domain_adapters', 'a list of adapter names', d);
  if (new Set(d).size !== d.length) bad('domain_adapters', 'a list of distinct adapter names', d);
  if (c.gateInput !== 'mean') bad('gate_input', '"mean" (the mean-pooled embedding output)', c.gateInput);
  if (typeof c.initGateWeights !== 'boolean') bad('init_gate_weights', 'true or false', c.initGateWeights);
  if (c.targetModules !== null) bad('target_modules', 'null (the gate acts on the layers of its domain adapters)', c.targetModules);
  c.domainAdapters = [...d];
  return c;
}

export function mixdaFromJson(raw: Record<string, unknown>, warn: (m: string) => void): MixdaConfig {
  return resolveMixda(peftJsonToOptions('MixDA', 'MIXDA', raw, MIXDA_FIELDS, warn) as MixdaOptions);
}

export function mixdaToJson(c: MixdaConfig): Record<string, unknown> {
  return optionsToPeftJson(c, MIXDA_FIELDS);
}
