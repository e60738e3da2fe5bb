// Sparse fine-tuning methods on one sparse-diff layer (layer.ts): SHiRA (PEFT's format and random
// mask), LT-SFT (Ansell et al. 2022; mask from a short dense fine-tuning phase) and SPT's sparse part
// (He et al. 2023; mask = global top-k by gradient sensitivity). One registerAdapter call per method.
import { registerAdapter } from '../registry.js';
import { isLinearLayer, Conv1D } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import { keep, noGrad, tidy, tensor, type Tensor } from '../../tensor/index.js';
import type { PretrainedModel } from '../../models/types.js';
import type { AdapterMethod, AdapterCapabilities, AdapterContext, TunerLayer } from '../types.js';
import { DEFAULT_QV_TARGETS } from '../targets.js';
import { SparseDiffLayer, type SparseSpec, type SparseInit } from './layer.js';
import {
  resolveShira, shiraFromJson, shiraToJson, resolveLtSft, ltSftFromJson, ltSftToJson, resolveSpt, sptFromJson, sptToJson,
  forLoad, isFromFile, type ShiraConfig, type LtSftConfig, type SptConfig,
} from './config.js';
import { torchRandperm, topkPerLayer, topkGlobal, targetWeight, gradientPass, selectionData } from './mask.js';

export const SHIRA_SPEC: SparseSpec = { peftType: 'SHIRA', valuesKey: 'shira_weight', indicesKey: 'shira_indices', layout: 'coo', fixedCount: true };
export const LT_SFT_SPEC: SparseSpec = { peftType: 'LT_SFT', valuesKey: 'sft_values', indicesKey: 'sft_indices', layout: 'flat', fixedCount: false };
export const SPT_SPEC: SparseSpec = { peftType: 'SPT', valuesKey: 'sft_values', indicesKey: 'sft_indices', layout: 'flat', fixedCount: false };

const CAPS: AdapterCapabilities = { mergeable: true, mixedBatch: true, kvCache: true, composable: true };

/** A mask handed to addAdapter; the framework disposes it after the layers copied it. */
function init(flat: Tensor | null, extra: Partial<SparseInit> = {}): SparseInit & { dispose(): void } {
  return { flat, ...extra, dispose: () => flat?.dispose() };
}

function wrapping(spec: SparseSpec) {
  return {
    canWrap: (m: Module) => isLinearLayer(m),
    wrap: (base: Module, ctx: AdapterContext): TunerLayer => {
      if (!isLinearLayer(base)) throw new Error(`${spec.peftType} cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D)`);
      return new SparseDiffLayer(base, ctx, spec);
    },
    isTunerLayer: (m: Module): m is TunerLayer => m instanceof SparseDiffLayer && m.spec.peftType === spec.peftType,
    afterWrap: (config: { fanInFanOut: boolean }, layers: TunerLayer[]) => {
      if (layers.length) config.fanInFanOut = layers.some((l) => (l as SparseDiffLayer).fanInFanOut);
    },
  };
}

function dims(model: PretrainedModel, path: string): { inF: number; outF: number; conv: boolean } {
  const { owner, weight } = targetWeight(model, path);
  const l = owner as unknown as { inFeatures: number; outFeatures: number };
  void weight;
  return { inF: l.inFeatures, outF: l.outFeatures, conv: owner instanceof Conv1D };
}

/**
 * PEFT's random_mask for one (out, in) weight, as flat positions in the stored weight, in
 * torch.where's row-major (out, in) order (so the saved shira_indices equal PEFT's).
 */
export function shiraMask(outF: number, inF: number, r: number, seed: number | null, conv1d = false): Tensor {
  const num = r * (outF + inF);
  if (num > outF * inF) throw new Error(`SHiRA: r = ${r} gives ${num} entries, more than the ${outF * inF} of a ${outF}x${inF} weight (as PEFT, this is not allowed): lower r`);
  const chosen = Array.from(torchRandperm(outF * inF, seed).subarray(0, num)).sort((a, b) => a - b);
  const flat = BigInt64Array.from(chosen, (f) => BigInt(conv1d ? (f % inF) * outF + Math.floor(f / inF) : f));
  return tensor(flat, { dtype: 'int64', shape: [num] });
}

export const SHIRA: AdapterMethod<ShiraConfig> = {
  peftType: 'SHIRA',
  names: ['shira'],
  summary: 'SHiRA (Bhardwaj et al. 2024): trains r*(in+out) entries of each weight at fixed random positions (a sparse high-rank delta), merged by adding them',
  cliFlags: { r: 'r', seed: 'randomSeed' },
  capabilities: () => CAPS,
  fromJson: shiraFromJson,
  toJson: shiraToJson,
  resolve: resolveShira,
  forLoad,
  defaultTargets: (modelType) => (modelType === 'phi' ? ['q_proj', 'v_proj'] : DEFAULT_QV_TARGETS[modelType] ?? null),
  ...wrapping(SHIRA_SPEC),
  // PEFT calls mask_fn per target with the same random_seed, so targets of one shape share a mask.
  prepareAdapter: ({ config, model, paths }) => new Map(paths.map((p) => {
    const { inF, outF, conv } = dims(model, p);
    return [p, init(shiraMask(outF, inF, config.r, config.randomSeed, conv), { randomValues: !config.initWeights })];
  })),
};

// ---------------------------------------------------------------- LT-SFT

/**
 * LT-SFT's dense phase: `steps` plain SGD steps of the LM loss on the target weights (θ1 = θ0 − lr Σ g),
 * then |θ1 − θ0| per target (float32); the weights are reset to θ0 bit for bit.
 */
export function ltSftScores(model: PretrainedModel, paths: string[], data: Tensor[], steps: number, lr: number, taskLoss?: (batch: number) => Tensor): Map<string, Tensor> {
  const theta0 = new Map(paths.map((p) => [p, keep(targetWeight(model, p).weight.clone())]));
  try {
    gradientPass(model, paths, data, steps, 'LT-SFT', (grads) => noGrad(() => {
      for (const [p, g] of grads) { const w = targetWeight(model, p).weight; w.add_(g.mul(-lr).to(w.dtype)); }
    }), taskLoss);
    return new Map(paths.map((p) => [p, keep(noGrad(() => tidy(() => targetWeight(model, p).weight.to('float32').sub(theta0.get(p)!.to('float32')).abs())))]));
  } finally {
    noGrad(() => { for (const p of paths) targetWeight(model, p).weight.copy_(theta0.get(p)!); });
    theta0.forEach((t) => t.dispose());
  }
}

export const LT_SFT: AdapterMethod<LtSftConfig> = {
  peftType: 'LT_SFT',
  names: ['lt-sft', 'ltsft'],
  summary: 'LT-SFT (Ansell et al. 2022): a short dense fine-tune on sample data picks the top-k |Δθ| entries per weight; the weights are reset and only that sparse diff trains (composable by addition)',
  cliFlags: { density: 'density', 'num-params': 'numParams', 'full-ft-steps': 'fullFtSteps', 'full-ft-lr': 'fullFtLr' },
  capabilities: () => CAPS,
  fromJson: ltSftFromJson,
  toJson: ltSftToJson,
  resolve: resolveLtSft,
  forLoad,
  ...wrapping(LT_SFT_SPEC),
  prepareAdapter: ({ config, model, paths, data, taskLoss }) => {
    if (isFromFile(config)) return new Map(paths.map((p) => [p, init(null)]));  // the file holds the mask
    const { batches, owned } = selectionData(model, data, config.syntheticData, 0, 'LT-SFT', 'synthetic_data');
    try {
      const scores = ltSftScores(model, paths, batches, config.fullFtSteps ?? batches.length, config.fullFtLr, owned ? undefined : taskLoss);
      const masks = topkPerLayer(scores, (numel) => Math.min(numel, config.numParams ?? Math.max(1, Math.floor(config.density * numel))));
      scores.forEach((t) => t.dispose());
      return new Map([...masks].map(([p, m]) => [p, init(m)]));
    } finally {
      if (owned) batches.forEach((b) => b.dispose());
    }
  },
};

// ---------------------------------------------------------------- SPT

/** SPT's sensitivity per target entry: Σ over the sample batches of g² at θ0 (float32). */
export function sptSensitivity(model: PretrainedModel, paths: string[], data: Tensor[], taskLoss?: (batch: number) => Tensor): Map<string, Tensor> {
  const acc = new Map<string, Tensor>();
  gradientPass(model, paths, data, data.length, 'SPT', (grads) => noGrad(() => {
    for (const [p, g] of grads) {
      const prev = acc.get(p);
      acc.set(p, keep(prev ? prev.add(g.square()) : g.square()));
      prev?.dispose();
    }
  }), taskLoss);
  return acc;
}

export const SPT: AdapterMethod<SptConfig> = {
  peftType: 'SPT',
  names: ['spt'],
  summary: 'SPT, sparse part (He et al. 2023): the globally top budget*N entries by gradient sensitivity (Σ g² on sample data) over all target weights train as a sparse diff',
  cliFlags: { budget: 'budget' },
  capabilities: () => CAPS,
  fromJson: sptFromJson,
  toJson: sptToJson,
  resolve: resolveSpt,
  forLoad,
  ...wrapping(SPT_SPEC),
  prepareAdapter: ({ config, model, paths, data, taskLoss }) => {
    if (isFromFile(config)) return new Map(paths.map((p) => [p, init(null)]));
    const { batches, owned } = selectionData(model, data, config.syntheticData, 0, 'SPT', 'synthetic_data');
    try {
      const sens = sptSensitivity(model, paths, batches, owned ? undefined : taskLoss);
      const total = [...sens.values()].reduce((n, t) => n + t.numel, 0);
      const masks = topkGlobal(sens, Math.max(1, Math.floor(config.budget * total)));
      sens.forEach((t) => t.dispose());
      return new Map([...masks].map(([p, m]) => [p, init(m)]));
    } finally {
      if (owned) batches.forEach((b) => b.dispose());
    }
  },
};

registerAdapter(SHIRA);
registerAdapter(LT_SFT);
registerAdapter(SPT);

export { SparseDiffLayer, type SparseSpec, type SparseInit } from './layer.js';
export { SparseDiffSum, composeSparseDiffs, sparseDiffsOf, applySparseDiffs, sameDiff, type SparseDiff, type DiffTerm } from './diff.js';
export { torchRandperm, Mt19937, topkFlat, topkPerLayer, topkGlobal, gradientPass, lmLoss } from './mask.js';
export {
  type ShiraConfig, type ShiraOptions, type LtSftConfig, type LtSftOptions, type SptConfig, type SptOptions,
  resolveShira, resolveLtSft, resolveSpt, DEFAULT_SHIRA, DEFAULT_LT_SFT, DEFAULT_SPT,
} from './config.js';
