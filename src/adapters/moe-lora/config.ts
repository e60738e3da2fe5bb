// Mixture of LoRA experts configuration (MoLA, Gao et al. 2024, "Higher Layers Need More LoRA
// Experts"; MeteoRA, Xu et al. 2024): per target layer, E LoRA experts and a learned per-token top-k
// router. PEFT has no such method: adapterkit writes PEFT-style folders with peft_type "MOE_LORA" and
// the fields below (snake_case, named after LoRA's).
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, peftJsonToOptions, optionsToPeftJson, configError } from '../config-base.js';

/**
 * MoLA's expert allocations over the depth of the model, in four equal groups of layers (lowest first),
 * with num_experts the largest count: "uniform" (MoLA-□) E E E E, "triangle" (MoLA-△, more experts in
 * lower layers) E ¾E ½E ¼E, "inverted-triangle" (MoLA-▽, more in higher layers, the paper's best)
 * ¼E ½E ¾E E, "hourglass" (MoLA-⋈) E ¼E ¼E E; rounded, at least 1 (E = 8 gives the paper's 8642,
 * 2468, 8228).
 */
export const EXPERT_SHAPES = ['uniform', 'triangle', 'inverted-triangle', 'hourglass'] as const;
export type ExpertShape = (typeof EXPERT_SHAPES)[number];
const SHAPE_FRACTIONS: Record<ExpertShape, [number, number, number, number]> = {
  uniform: [1, 1, 1, 1],
  triangle: [1, 0.75, 0.5, 0.25],
  'inverted-triangle': [0.25, 0.5, 0.75, 1],
  hourglass: [1, 0.25, 0.25, 1],
};

export interface MoeLoraConfig extends AdapterConfigBase {
  peftType: 'MOE_LORA';
  /** Experts per adapted layer (when experts_per_layer is null; the largest count of a named shape). */
  numExperts: number;
  /** Experts each token uses (per layer at most that layer's expert count). */
  topK: number;
  /** Rank of each expert. */
  r: number;
  /** Each expert's update is scaled by lora_alpha / r. */
  loraAlpha: number;
  /** Dropout on the experts' input (the router sees the input undropped). */
  loraDropout: number;
  /**
   * MoLA: expert count per layer index (a list indexed by the layer number of the module path, e.g.
   * [2, 2, 4, 4, 8, 8]) or a named shape (EXPERT_SHAPES) over the model's layers; null: num_experts everywhere.
   */
  expertsPerLayer: number[] | ExpertShape | null;
  /** Weight of the Switch-Transformer load-balancing loss added to the training loss. */
  routerAuxLossCoef: number;
  /** Training only: the router input is multiplied by U(1 - j, 1 + j) noise (Switch Transformer). */
  routerJitter: number;
  /** true: kaiming-uniform A, zero B (the layer starts as the base); false: random B too (tests). */
  initLoraWeights: boolean;
}

export type MoeLoraOptions = Partial<Omit<MoeLoraConfig, 'extra' | 'peftType'>> & { peftType: 'MOE_LORA'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    MOE_LORA: MoeLoraOptions;
  }
}

export const DEFAULT_MOE_LORA: Pick<MoeLoraConfig, 'numExperts' | 'topK' | 'r' | 'loraAlpha' | 'loraDropout' | 'expertsPerLayer' | 'routerAuxLossCoef' | 'routerJitter' | 'initLoraWeights'> = {
  numExperts: 4,
  topK: 2,
  r: 8,
  loraAlpha: 8,
  loraDropout: 0,
  expertsPerLayer: null,
  routerAuxLossCoef: 0.01,
  routerJitter: 0,
  initLoraWeights: true,
};

export const MOE_LORA_FIELDS: readonly [string, keyof MoeLoraConfig][] = [
  ['num_experts', 'numExperts'], ['top_k', 'topK'], ['r', 'r'], ['lora_alpha', 'loraAlpha'], ['lora_dropout', 'loraDropout'],
  ['experts_per_layer', 'expertsPerLayer'], ['router_aux_loss_coef', 'routerAuxLossCoef'], ['router_jitter', 'routerJitter'],
  ['init_lora_weights', 'initLoraWeights'],
];

const HINTS = { rank: 'r', alpha: 'loraAlpha', dropout: 'loraDropout', experts: 'numExperts', k: 'topK', targets: 'targetModules', auxLossCoef: 'routerAuxLossCoef' };

const posInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v > 0;

export function resolveMoeLora(partial: Partial<MoeLoraConfig> | MoeLoraOptions): MoeLoraConfig {
  const c = resolveWith<MoeLoraConfig>('MoE-LoRA config', 'MOE_LORA', partial as Record<string, unknown>, DEFAULT_MOE_LORA as Omit<MoeLoraConfig, 'extra' | 'peftType'>, MOE_LORA_FIELDS, HINTS);
  const bad = (f: string, want: string, got: unknown) => configError('MoE-LoRA config', f, want, got);
  if (!posInt(c.numExperts)) bad('num_experts', 'a positive integer', c.numExperts);
  if (!posInt(c.topK)) bad('top_k', 'a positive integer', c.topK);
  if (c.topK > c.numExperts) bad('top_k', `at most num_experts (${c.numExperts})`, c.topK);
  if (!posInt(c.r)) bad('r', 'a positive integer', c.r);
  if (!(typeof c.loraAlpha === 'number' && Number.isFinite(c.loraAlpha) && c.loraAlpha > 0)) bad('lora_alpha', 'a positive number', c.loraAlpha);
  if (!(typeof c.loraDropout === 'number' && c.loraDropout >= 0 && c.loraDropout < 1)) bad('lora_dropout', 'in [0, 1)', c.loraDropout);
  const epl = c.expertsPerLayer;
  if (epl !== null && !(Array.isArray(epl) && epl.length > 0 && epl.every(posInt)) && !(EXPERT_SHAPES as readonly unknown[]).includes(epl)) {
    bad('experts_per_layer', `null, a list of positive integers (experts per layer index) or one of ${EXPERT_SHAPES.map((s) => `"${s}"`).join(', ')}`, epl);
  }
  if (!(typeof c.routerAuxLossCoef === 'number' && Number.isFinite(c.routerAuxLossCoef) && c.routerAuxLossCoef >= 0)) bad('router_aux_loss_coef', 'a number >= 0', c.routerAuxLossCoef);
  if (!(typeof c.routerJitter === 'number' && c.routerJitter >= 0 && c.routerJitter < 1)) bad('router_jitter', 'in [0, 1)', c.routerJitter);
  if (typeof c.initLoraWeights !== 'boolean') bad('init_lora_weights', 'true or false', c.initLoraWeights);
  return c;
}

/**
 * The expert count of the layer with index `layer` (of `numLayers`), or an error naming the path:
 * a list is indexed by the layer number; a named shape splits the layers into four equal groups.
 */
export function expertsForLayer(c: MoeLoraConfig, layer: number | null, numLayers: number, path: string): number {
  const epl = c.expertsPerLayer;
  if (epl === null) return c.numExperts;
  if (layer === null) throw new Error(`MoE-LoRA: experts_per_layer is set but ${path} has no layer index (set layers_pattern, or experts_per_layer null)`);
  if (Array.isArray(epl)) {
    if (layer >= epl.length) throw new Error(`MoE-LoRA: experts_per_layer ${JSON.stringify(epl)} has no entry for layer ${layer} (${path}); give one count per layer`);
    return epl[layer]!;
  }
  const group = Math.min(3, Math.floor((layer * 4) / Math.max(1, numLayers)));
  return Math.max(1, Math.round(c.numExperts * SHAPE_FRACTIONS[epl][group]));
}

export function moeLoraFromJson(raw: Record<string, unknown>, warn: (m: string) => void): MoeLoraConfig {
  return resolveMoeLora(peftJsonToOptions('MoE-LoRA', 'MOE_LORA', raw, MOE_LORA_FIELDS, warn) as MoeLoraOptions);
}

export function moeLoraToJson(c: MoeLoraConfig): Record<string, unknown> {
  return optionsToPeftJson(c, MOE_LORA_FIELDS);
}
