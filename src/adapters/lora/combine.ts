// Weighted combination of LoRA adapters into a new adapter (PEFT's LoraModel.add_weighted_adapter).
// linear / ties / dare_* / magnitude_prune act on A and B separately with weights sqrt(w s) (same
// ranks required); cat stacks ranks exactly; the *_svd variants combine the full ΔW = s B A and
// truncate it back to a rank with an SVD (U S as B, Vh as A). Here ΔW_i = s_i B_i A_i enters with
// weight w_i; upstream PEFT multiplies its weights by s_i again on top of get_delta_weight (which
// already holds s_i), merging Σ w_i s_i² B_i A_i — we keep the weighted sum of the updates unless
// `svdScaling: 'peft'` asks for PEFT's. As PEFT: one adapter always combines "linear"; ranks are
// the configs' (r, or the largest rank_pattern value), so "cat" has rank Σ r_i; svdClamp clips U S
// and Vh at that quantile of their entries. The new adapter trains no biases and carries no
// lora_bias, token rows or layer replication (only A and B are combined).
import { tidy, keep, noGrad, cat, svd, type Tensor } from '../../tensor/index.js';
import type { PeftModel } from '../peft-model.js';
import { LoraLayer } from './layer.js';
import type { LoraConfig } from './config.js';
import { taskArithmetic, ties, dareLinear, dareTies, magnitudePruneMerge, type SignMethod } from '../merge-utils.js';

export type Combination =
  | 'linear' | 'cat' | 'svd' | 'ties' | 'ties_svd' | 'dare_linear' | 'dare_ties' | 'dare_linear_svd' | 'dare_ties_svd'
  | 'magnitude_prune' | 'magnitude_prune_svd';

export interface CombineOptions {
  combination?: Combination;
  /** Rank of the *_svd results (default: the largest input rank). */
  svdRank?: number;
  /** Fraction kept by ties / dare / magnitude_prune. */
  density?: number;
  majoritySignMethod?: SignMethod;
  seed?: number;
  /** *_svd: clip U S and Vh to ± this quantile of their entries (PEFT's svd_clamp). */
  svdClamp?: number;
  /** PEFT's svd_full_matrices: accepted; the truncated factors are the same either way. */
  svdFullMatrices?: boolean;
  /**
   * *_svd weights: 'update' (default) combines w_i ΔW_i; 'peft' combines w_i s_i ΔW_i as PEFT does
   * (the scaling counted twice), and keeps use_rslora from the first adapter as PEFT's config copy does.
   */
  svdScaling?: 'update' | 'peft';
}

/** torch.quantile(x, q) with linear interpolation. */
function quantile(values: Float32Array | Float64Array, q: number): number {
  const v = Float64Array.from(values).sort();
  const pos = q * (v.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, v.length - 1);
  return v[lo]! + (v[hi]! - v[lo]!) * (pos - lo);
}

function mergeFn(kind: string, o: CombineOptions): (ts: Tensor[], w: number[]) => Tensor {
  const density = o.density ?? 1;
  const seed = o.seed ?? 0;
  const sign = o.majoritySignMethod ?? 'total';
  switch (kind) {
    case 'linear': case 'svd': return taskArithmetic;
    case 'ties': return (ts, w) => ties(ts, w, density, sign);
    case 'dare_linear': return (ts, w) => dareLinear(ts, w, density, seed);
    case 'dare_ties': return (ts, w) => dareTies(ts, w, density, seed, sign);
    case 'magnitude_prune': return (ts, w) => magnitudePruneMerge(ts, w, density);
    default: throw new Error(`unknown combination "${kind}"`);
  }
}

/** Creates adapter `newName` from `adapters` weighted by `weights`; returns its rank. */
export function addWeightedAdapter(peft: PeftModel, adapters: string[], weights: number[], newName: string, o: CombineOptions = {}): number {
  // PEFT (_check_add_weighted_adapter): a single adapter can only be combined linearly.
  const combination = adapters.length === 1 ? 'linear' : o.combination ?? 'svd';
  if (adapters.length === 0 || adapters.length !== weights.length) throw new Error('give one weight per adapter');
  // PEFT returns silently when the name exists (keeping the old adapter); that hides a mistake, so here it is an error.
  if (peft.configs.has(newName)) throw new Error(`adapter "${newName}" already exists; delete it first or pick another name`);
  if (o.svdClamp !== undefined && !(o.svdClamp > 0 && o.svdClamp <= 1)) throw new Error(`svdClamp must be in (0, 1], got ${o.svdClamp}`);
  const configs = adapters.map((a) => {
    const c = peft.configs.get(a) as LoraConfig | undefined;
    if (!c) throw new Error(`no adapter "${a}"`);
    if (c.peftType !== 'LORA') throw new Error(`adapter "${a}" is ${c.peftType}; only LoRA adapters combine`);
    if (c.useDora) throw new Error(`adapter "${a}" uses DoRA, which weighted combination does not support (as in PEFT)`);
    return c;
  });
  if (['ties', 'ties_svd', 'dare_linear', 'dare_ties', 'dare_linear_svd', 'dare_ties_svd', 'magnitude_prune', 'magnitude_prune_svd'].includes(combination)) {
    if (o.density === undefined || !(o.density > 0 && o.density <= 1)) throw new Error(`${combination} needs a density in (0, 1]`);
  }
  // An embedding LoRA would be left out of the combination: refuse rather than drop part of an adapter.
  const emb = peft.tunerLayers().find(([, l]) => !(l instanceof LoraLayer) && adapters.some((a) => l.hasAdapter(a)));
  if (emb) throw new Error(`${emb[0]} holds a LoRA of another layer type (an embedding): weighted combination supports linear-layer LoRA only`);
  const layers = peft.tunerLayers().filter((e): e is [string, LoraLayer] => e[1] instanceof LoraLayer && adapters.some((a) => e[1].hasAdapter(a)));
  // PEFT takes each adapter's rank from its config: r, or the largest rank_pattern value.
  const configRanks = configs.map((c) => Math.max(c.r, ...Object.values(c.rankPattern)));
  const ranks = new Set(configRanks);
  const svdMode = combination === 'svd' || combination.endsWith('_svd');
  let newRank: number;
  if (combination === 'cat') newRank = configRanks.reduce((s, r) => s + r, 0);
  else if (svdMode) newRank = o.svdRank ?? Math.max(...ranks);
  else {
    if (ranks.size !== 1 || new Set(layers.flatMap(([, l]) => adapters.filter((a) => l.hasAdapter(a)).map((a) => l.adapterRank(a)))).size !== 1) {
      throw new Error(`${combination} needs adapters of one rank (got ${[...ranks].join(', ')}); use cat or svd`);
    }
    newRank = [...ranks][0]!;
  }
  const peftScaling = o.svdScaling === 'peft';
  const union = [...new Set(configs.flatMap((c) => (Array.isArray(c.targetModules) ? c.targetModules : [])))];
  const targets = configs.every((c) => Array.isArray(c.targetModules)) ? union : layers.map(([p]) => p);
  // alpha = r: the combined adapter has scaling 1, the weights and scalings live in A and B.
  peft.addAdapter(newName, { ...configs[0], r: newRank, loraAlpha: newRank, useRslora: peftScaling ? configs[0]!.useRslora : false, rankPattern: {}, alphaPattern: {}, targetModules: targets, initLoraWeights: true, dylora: false, modulesToSave: null, trainableTokenIndices: null, layerReplication: null, bias: 'none', loraBias: false, extra: {} } as never);
  noGrad(() => {
    for (const [path, layer] of peft.tunerLayers()) {
      if (!(layer instanceof LoraLayer) || !layer.hasAdapter(newName)) continue;
      const present = adapters.map((a, i) => [a, weights[i]!] as const).filter(([a]) => layer.hasAdapter(a));
      const state = tidy(() => {
        if (present.length === 0) return null;
        const names = present.map(([a]) => a);
        if (combination === 'cat') {
          // Layers with fewer adapters than the widest get zero-padded ranks.
          let A = cat(present.map(([a, w]) => layer.A(a).mul(w * layer.scaling(a))), 0);
          let B = cat(names.map((a) => layer.B(a)), 1);
          const pad = newRank - A.shape[0]!;
          if (pad > 0) {
            A = cat([A, A.narrow(0, 0, 1).mul(0).expand(pad, A.shape[1]!)], 0);
            B = cat([B, B.narrow(1, 0, 1).mul(0).expand(B.shape[0]!, pad)], 1);
          }
          return { A: keep(A), B: keep(B) };
        }
        if (svdMode) {
          const kind = combination === 'svd' ? 'svd' : combination.slice(0, -4);
          const ws = present.map(([a, w]) => (peftScaling ? w * layer.scaling(a) : w));
          let delta = mergeFn(kind, o)(names.map((a) => layer.deltaWeight(a)), ws);
          if (layer.fanInFanOut) delta = delta.transpose(0, 1);  // back to (O, I)
          const { U, S, Vh } = svd(delta);
          const k = Math.min(newRank, S.shape[0]!);
          let B = U.narrow(1, 0, k).mul(S.narrow(0, 0, k));  // (O, k)
          let A = Vh.narrow(0, 0, k);  // (k, I)
          if (o.svdClamp !== undefined) {
            const hi = quantile(Float64Array.from([...B.contiguous().data(), ...A.contiguous().data()] as number[]), o.svdClamp);
            B = B.clamp(-hi, hi);
            A = A.clamp(-hi, hi);
          }
          if (k < newRank) {
            A = cat([A, A.narrow(0, 0, 1).mul(0).expand(newRank - k, A.shape[1]!)], 0);
            B = cat([B, B.narrow(1, 0, 1).mul(0).expand(B.shape[0]!, newRank - k)], 1);
          }
          return { A: keep(A.contiguous()), B: keep(B.contiguous()) };
        }
        // Per-factor combination with weights sqrt(|w s|), A's carrying the sign (PEFT supports negative weights so).
        const ws = present.map(([a, w]) => w * layer.scaling(a));
        const fn = mergeFn(combination, o);
        const A = fn(names.map((a) => layer.A(a)), ws.map((x) => (x < 0 ? -1 : 1) * Math.sqrt(Math.abs(x))));
        const B = fn(names.map((a) => layer.B(a)), ws.map((x) => Math.sqrt(Math.abs(x))));
        return { A: keep(A), B: keep(B) };
      });
      if (!state) continue;
      layer.loadAdapterState(newName, new Map([['lora_A.weight', state.A], ['lora_B.weight', state.B]]), path);
      state.A.dispose();
      state.B.dispose();
    }
  });
  return newRank;
}
