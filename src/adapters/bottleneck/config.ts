// Bottleneck adapter configuration: AdapterHub's BnConfig (adapters 1.2.0,
// src/adapters/configuration/adapter_config.py) with its field names as JSON and camelCase here,
// its presets (seq_bn/pfeiffer, double_seq_bn/houlsby, par_bn, *_inv, compacter, compacter++), plus
// the shared adapterkit fields (modules_to_save, task_type).
import type { AdapterConfigBase } from '../types.js';
import { resolveWith, configError } from '../config-base.js';

export type BnInit = 'bert' | 'mam_adapter' | 'houlsby';
export type BnScaling = number | 'learned' | 'channel';

export interface BottleneckConfig extends AdapterConfigBase {
  peftType: 'BOTTLENECK';
  /** An adapter after the attention sublayer (AdapterHub's "mh_adapter" location). */
  mhAdapter: boolean;
  /** An adapter after the feed-forward sublayer. */
  outputAdapter: boolean;
  /** Bottleneck width = hidden // reductionFactor (at least 1); or per layer {"<idx>": n, "default": n}. */
  reductionFactor: number | Record<string, number>;
  nonLinearity: string;
  originalLnBefore: boolean;
  originalLnAfter: boolean;
  lnBefore: boolean;
  lnAfter: boolean;
  initWeights: BnInit;
  /** When set (non-zero), initialisation uses this seed instead of the one given to addAdapter. */
  initWeightsSeed: number | null;
  isParallel: boolean;
  scaling: BnScaling;
  useGating: boolean;
  residualBeforeLn: boolean | 'post_add';
  adapterResidualBeforeLn: boolean;
  invAdapter: 'nice' | 'glow' | null;
  invAdapterReductionFactor: number | null;
  crossAdapter: boolean;
  /** Layer indices that get no adapter. */
  leaveOut: number[];
  dropout: number;
  phmLayer: boolean;
  phmDim: number;
  factorizedPhmW: boolean;
  sharedWPhm: boolean;
  sharedPhmRule: boolean;
  factorizedPhmRule: boolean;
  phmCInit: 'normal' | 'uniform';
  phmInitRange: number;
  learnPhm: boolean;
  hypercomplexNonlinearity: string;
  phmRank: number;
  phmBias: boolean;
  stochasticDepth: number;
}

export type BottleneckOptions = Partial<Omit<BottleneckConfig, 'extra' | 'peftType'>> & { peftType?: 'BOTTLENECK'; extra?: Record<string, unknown> };

declare module '../types.js' {
  interface AdapterOptionsByType {
    BOTTLENECK: BottleneckOptions;
  }
}

/** AdapterHub JSON name <-> camelCase key, in BnConfig's field (asdict) order. */
export const BN_FIELDS: readonly [string, keyof BottleneckConfig][] = [
  ['mh_adapter', 'mhAdapter'], ['output_adapter', 'outputAdapter'], ['reduction_factor', 'reductionFactor'],
  ['non_linearity', 'nonLinearity'], ['original_ln_before', 'originalLnBefore'], ['original_ln_after', 'originalLnAfter'],
  ['ln_before', 'lnBefore'], ['ln_after', 'lnAfter'], ['init_weights', 'initWeights'], ['init_weights_seed', 'initWeightsSeed'],
  ['is_parallel', 'isParallel'], ['scaling', 'scaling'], ['use_gating', 'useGating'], ['residual_before_ln', 'residualBeforeLn'],
  ['adapter_residual_before_ln', 'adapterResidualBeforeLn'], ['inv_adapter', 'invAdapter'],
  ['inv_adapter_reduction_factor', 'invAdapterReductionFactor'], ['cross_adapter', 'crossAdapter'], ['leave_out', 'leaveOut'],
  ['dropout', 'dropout'], ['phm_layer', 'phmLayer'], ['phm_dim', 'phmDim'], ['factorized_phm_W', 'factorizedPhmW'],
  ['shared_W_phm', 'sharedWPhm'], ['shared_phm_rule', 'sharedPhmRule'], ['factorized_phm_rule', 'factorizedPhmRule'],
  ['phm_c_init', 'phmCInit'], ['phm_init_range', 'phmInitRange'], ['learn_phm', 'learnPhm'],
  ['hypercomplex_nonlinearity', 'hypercomplexNonlinearity'], ['phm_rank', 'phmRank'], ['phm_bias', 'phmBias'],
  ['stochastic_depth', 'stochasticDepth'],
];

/** Fields Python writes as floats (a JSON "4" would be an int there, and AdapterHub rejects an int scaling). */
export const FLOAT_FIELDS = ['scaling', 'dropout', 'phm_init_range', 'stochastic_depth'];

type BnFields = Omit<BottleneckConfig, 'extra' | 'peftType' | keyof Omit<AdapterConfigBase, 'peftType' | 'extra'>>;

/** BnConfig's defaults with SeqBnConfig's required fields: the plain "bottleneck" method is Pfeiffer. */
const BN_DEFAULTS: BnFields = {
  mhAdapter: false, outputAdapter: true, reductionFactor: 16, nonLinearity: 'relu',
  originalLnBefore: true, originalLnAfter: true, lnBefore: false, lnAfter: false, initWeights: 'bert', initWeightsSeed: null,
  isParallel: false, scaling: 1.0, useGating: false, residualBeforeLn: true, adapterResidualBeforeLn: false,
  invAdapter: null, invAdapterReductionFactor: null, crossAdapter: false, leaveOut: [], dropout: 0.0,
  phmLayer: false, phmDim: 4, factorizedPhmW: true, sharedWPhm: false, sharedPhmRule: true, factorizedPhmRule: false,
  phmCInit: 'normal', phmInitRange: 0.0001, learnPhm: true, hypercomplexNonlinearity: 'glorot-uniform', phmRank: 1,
  phmBias: true, stochasticDepth: 0.0,
};

// AdapterHub's preset classes: only what each overrides (everything else keeps BnConfig's default).
const SEQ_BN: Partial<BnFields> = {
  originalLnBefore: true, originalLnAfter: true, residualBeforeLn: true, adapterResidualBeforeLn: false, lnBefore: false,
  lnAfter: false, mhAdapter: false, outputAdapter: true, nonLinearity: 'relu', reductionFactor: 16,
};
const DOUBLE_SEQ_BN: Partial<BnFields> = {
  originalLnBefore: false, originalLnAfter: true, residualBeforeLn: true, adapterResidualBeforeLn: false, lnBefore: false,
  lnAfter: false, mhAdapter: true, outputAdapter: true, nonLinearity: 'swish', reductionFactor: 16,
};
const PAR_BN: Partial<BnFields> = {
  originalLnBefore: false, originalLnAfter: true, lnBefore: false, lnAfter: false, mhAdapter: false, outputAdapter: true,
  nonLinearity: 'relu', reductionFactor: 2, initWeights: 'mam_adapter', isParallel: true, scaling: 4.0,
};
const INV: Partial<BnFields> = { invAdapter: 'nice', invAdapterReductionFactor: 2 };
const PHM: Partial<BnFields> = { phmLayer: true, reductionFactor: 32, nonLinearity: 'gelu' };

/** `--method` names and the fields each sets (AdapterHub's ADAPTER_CONFIG_MAP ids). */
export const BN_PRESETS: Record<string, Partial<BnFields>> = {
  bottleneck: SEQ_BN, seq_bn: SEQ_BN, pfeiffer: SEQ_BN,
  double_seq_bn: DOUBLE_SEQ_BN, houlsby: DOUBLE_SEQ_BN,
  par_bn: PAR_BN, parallel: PAR_BN,
  scaled_par_bn: { ...PAR_BN, scaling: 'learned' }, scaled_parallel: { ...PAR_BN, scaling: 'learned' },
  seq_bn_inv: { ...SEQ_BN, ...INV }, 'pfeiffer+inv': { ...SEQ_BN, ...INV },
  double_seq_bn_inv: { ...DOUBLE_SEQ_BN, ...INV }, 'houlsby+inv': { ...DOUBLE_SEQ_BN, ...INV },
  compacter: { ...DOUBLE_SEQ_BN, ...PHM }, 'compacter++': { ...SEQ_BN, ...PHM },
};

/** AdapterHub's non_linearity names (lower-cased, as the Adapter does) that adapterkit computes. */
export const BN_ACTIVATIONS = ['relu', 'swish', 'silu', 'gelu', 'gelu_new', 'gelu_fast', 'gelu_pytorch_tanh', 'quick_gelu', 'tanh', 'sigmoid', 'leakyrelu', 'linear', 'identity'];

const what = 'bottleneck adapter config';
const bad = (field: string, want: string, got: unknown): never => configError(what, field, want, got);
const isBool = (v: unknown) => typeof v === 'boolean';
const isPos = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;
const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

/** Fills defaults (Pfeiffer) and throws naming the first bad or unsupported value. */
export function resolveBottleneck(partial: BottleneckOptions | Partial<BottleneckConfig>): BottleneckConfig {
  const c = resolveWith<BottleneckConfig>(what, 'BOTTLENECK', { ...partial } as Record<string, unknown>, BN_DEFAULTS as Omit<BottleneckConfig, 'extra' | 'peftType'>, BN_FIELDS as readonly [string, string][], { reduction: 'reductionFactor', activation: 'nonLinearity', act: 'nonLinearity' });
  for (const f of ['mhAdapter', 'outputAdapter', 'originalLnBefore', 'originalLnAfter', 'lnBefore', 'lnAfter', 'isParallel', 'useGating', 'adapterResidualBeforeLn', 'crossAdapter', 'phmLayer', 'factorizedPhmW', 'sharedWPhm', 'sharedPhmRule', 'factorizedPhmRule', 'learnPhm', 'phmBias'] as const) {
    if (!isBool(c[f])) bad(snake(f), 'true or false', c[f]);
  }
  const rf = c.reductionFactor;
  if (!(isPos(rf) || (typeof rf === 'object' && rf !== null && !Array.isArray(rf) && Object.keys(rf).length > 0 && Object.values(rf).every(isPos)))) {
    bad('reduction_factor', 'a positive number or {"<layer>": n, "default": n}', rf);
  }
  if (typeof c.nonLinearity !== 'string' || !BN_ACTIVATIONS.includes(c.nonLinearity.toLowerCase())) bad('non_linearity', `one of ${BN_ACTIVATIONS.join(', ')}`, c.nonLinearity);
  if (!['bert', 'mam_adapter', 'houlsby'].includes(c.initWeights)) bad('init_weights', '"bert", "mam_adapter" or "houlsby"', c.initWeights);
  if (c.initWeightsSeed !== null && !Number.isInteger(c.initWeightsSeed)) bad('init_weights_seed', 'an integer or null', c.initWeightsSeed);
  if (!(typeof c.scaling === 'number' ? Number.isFinite(c.scaling) : c.scaling === 'learned' || c.scaling === 'channel')) bad('scaling', 'a number, "learned" or "channel"', c.scaling);
  if (!(c.residualBeforeLn === true || c.residualBeforeLn === false || c.residualBeforeLn === 'post_add')) bad('residual_before_ln', 'true, false or "post_add"', c.residualBeforeLn);
  if (c.invAdapter === 'glow') bad('inv_adapter', 'null or "nice" (AdapterHub\'s GLOW coupling block is broken upstream: it slices the sequence axis, concatenates on dim 1 and returns a list, so no file trained with it can be reproduced)', c.invAdapter);
  if (c.invAdapter !== null && c.invAdapter !== 'nice') bad('inv_adapter', 'null or "nice"', c.invAdapter);
  if (c.invAdapter !== null && !isPos(c.invAdapterReductionFactor)) bad('inv_adapter_reduction_factor', 'a positive number when inv_adapter is set', c.invAdapterReductionFactor);
  if (c.crossAdapter) bad('cross_adapter', 'false (cross-attention adapters of encoder-decoder models are not implemented)', c.crossAdapter);
  if (!Array.isArray(c.leaveOut) || !c.leaveOut.every((i) => Number.isInteger(i) && i >= 0)) bad('leave_out', 'a list of layer indices', c.leaveOut);
  if (typeof c.dropout !== 'number' || !(c.dropout >= 0 && c.dropout < 1)) bad('dropout', 'in [0, 1)', c.dropout);
  if (typeof c.stochasticDepth !== 'number' || !(c.stochasticDepth >= 0 && c.stochasticDepth < 1)) bad('stochastic_depth', 'in [0, 1)', c.stochasticDepth);
  if (!c.mhAdapter && !c.outputAdapter && c.invAdapter === null) bad('mh_adapter / output_adapter', 'true for at least one site (or set inv_adapter)', { mh_adapter: c.mhAdapter, output_adapter: c.outputAdapter });
  if (c.phmLayer) {
    if (!isPosInt(c.phmDim)) bad('phm_dim', 'a positive integer', c.phmDim);
    if (!isPosInt(c.phmRank)) bad('phm_rank', 'a positive integer', c.phmRank);
    if (!['normal', 'uniform'].includes(c.phmCInit)) bad('phm_c_init', '"normal" or "uniform"', c.phmCInit);
    if (!isPos(c.phmInitRange)) bad('phm_init_range', 'a positive number', c.phmInitRange);
    if (c.sharedWPhm) bad('shared_W_phm', 'false (a W shared across layers is not implemented; AdapterHub\'s non-factorized branch of it fails with a NameError)', c.sharedWPhm);
    if (c.initWeights !== 'bert') bad('init_weights', `"bert" with phm_layer (AdapterHub's "${c.initWeights}" init reads layer.weight, which a PHMLayer does not have, and fails)`, c.initWeights);
    if (typeof c.hypercomplexNonlinearity !== 'string') bad('hypercomplex_nonlinearity', 'a string', c.hypercomplexNonlinearity);
  }
  return c;
}

function snake(k: string): string {
  return BN_FIELDS.find(([, f]) => f === k)?.[0] ?? k;
}

/** The bottleneck width at a layer: int(hidden // rf) with rf from the number or the per-layer map, at least 1. */
export function downSize(c: BottleneckConfig, hidden: number, layer: number): number {
  let rf: number;
  if (typeof c.reductionFactor === 'number') rf = c.reductionFactor;
  else {
    const v = c.reductionFactor[String(layer)] ?? c.reductionFactor.default;
    if (v === undefined) bad('reduction_factor', `a map with "${layer}" or "default" (layer ${layer} has neither)`, c.reductionFactor);
    rf = v;
  }
  return Math.max(1, Math.floor(hidden / rf));
}
