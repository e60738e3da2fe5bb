// Task-vector merging (PEFT utils/merge_utils.py): task arithmetic, magnitude pruning, TIES
// (trim, elect sign, disjoint mean; Yadav et al. 2023) and DARE (random drop and rescale; Yu et
// al. 2023). Inputs are same-shape tensors with one weight each.
import { stack, tensor, rand, type Tensor } from '../tensor/index.js';

export type SignMethod = 'total' | 'frequency';

/** Keeps the round(density * n) largest-magnitude entries (PEFT: k = int(density * numel)). */
export function magnitudePrune(t: Tensor, density: number): Tensor {
  if (density >= 1) return t;
  const flat = t.reshape(-1);
  const k = Math.floor(density * flat.numel);
  if (k <= 0) return t.mul(0);
  const idx = flat.abs().topk(k).indices;
  const mask = flat.mul(0).scatter(0, idx, 1);
  return flat.mul(mask).view(...t.shape);
}

/**
 * DARE: keeps each entry with probability `density`, rescaling survivors by 1/density so the
 * expectation is unchanged (the paper's rescale; PEFT's merge_utils.random_pruning with rescale=True).
 */
export function randomPrune(t: Tensor, density: number, seed: number): Tensor {
  if (density >= 1) return t;
  const keepMask = rand(t.shape, { seed }).lt(density).to(t.dtype);
  return t.mul(keepMask).div(density);
}

function weighted(ts: Tensor[], weights: number[]): Tensor {
  const w = tensor(weights, { dtype: ts[0]!.dtype }).view(weights.length, ...ts[0]!.shape.map(() => 1));
  return stack(ts).mul(w);  // (K, …)
}

export function taskArithmetic(ts: Tensor[], weights: number[]): Tensor {
  return weighted(ts, weights).sum(0);
}

/** TIES sign election: sign of the summed values ("total") or of the summed signs ("frequency"); ties go to +. */
function majoritySignMask(stacked: Tensor, method: SignMethod): Tensor {
  const sign = stacked.sign();
  const mass = method === 'total' ? stacked.sum(0) : sign.sum(0);
  const majority = mass.ge(0).to(stacked.dtype).mul(2).sub(1);  // +1 / -1
  return sign.eq(majority);
}

/** Mean over the tensors that agree with the elected sign (at least one counted). */
function disjointMerge(weightedStack: Tensor, mask: Tensor): Tensor {
  const m = mask.to(weightedStack.dtype);
  return weightedStack.mul(m).sum(0).div(m.sum(0).clamp(1));
}

export function ties(ts: Tensor[], weights: number[], density: number, method: SignMethod = 'total'): Tensor {
  const pruned = ts.map((t) => magnitudePrune(t, density));
  const stacked = stack(pruned);
  return disjointMerge(weighted(pruned, weights), majoritySignMask(stacked, method));
}

export function magnitudePruneMerge(ts: Tensor[], weights: number[], density: number): Tensor {
  return taskArithmetic(ts.map((t) => magnitudePrune(t, density)), weights);
}

export function dareLinear(ts: Tensor[], weights: number[], density: number, seed: number): Tensor {
  return taskArithmetic(ts.map((t, i) => randomPrune(t, density, seed + i)), weights);
}

export function dareTies(ts: Tensor[], weights: number[], density: number, seed: number, method: SignMethod = 'total'): Tensor {
  const pruned = ts.map((t, i) => randomPrune(t, density, seed + i));
  return disjointMerge(weighted(pruned, weights), majoritySignMask(stack(pruned), method));
}
