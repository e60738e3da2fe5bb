// PaCA configuration (Woo et al. 2025, "PaCA: Partial Connection Adaptation for Efficient Fine-Tuning").
// PEFT has no PaCA: adapterkit writes PEFT-style folders with peft_type "PACA" and the fields below.
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

export interface PacaConfig extends AdapterConfigBase {
  peftType: 'PACA';
  /** Input columns trained per target weight (chosen at random, seeded per module path). */
  r: number;
}

export type PacaOptions = Partial<Omit<PacaConfig, 'extra' | 'peftType'>> & { peftType: 'PACA'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    PACA: PacaOptions;
  }
}

export const DEFAULT_PACA: Pick<PacaConfig, 'r'> = { r: 8 };

export const PACA_FIELDS: readonly [string, keyof PacaConfig][] = [['r', 'r']];

const HINTS = { rank: 'r', columns: 'r', targets: 'targetModules' };

export function resolvePaca(partial: Partial<PacaConfig> | PacaOptions): PacaConfig {
  const c = resolveWith<PacaConfig>('PaCA config', 'PACA', partial as Record<string, unknown>, DEFAULT_PACA as Omit<PacaConfig, 'extra' | 'peftType'>, PACA_FIELDS, HINTS);
  if (!(typeof c.r === 'number' && Number.isInteger(c.r) && c.r > 0)) configError('PaCA config', 'r', 'a positive integer', c.r);
  return c;
}

export function pacaFromJson(raw: Record<string, unknown>, warn: (m: string) => void): PacaConfig {
  return resolvePaca(peftJsonToOptions('PaCA', 'PACA', raw, PACA_FIELDS, warn) as PacaOptions);
}

export function pacaToJson(c: PacaConfig): Record<string, unknown> {
  return optionsToPeftJson(c, PACA_FIELDS);
}
