// Sparse diffs as values (Ansell et al. 2022, "Composable Sparse Fine-Tuning"): a diff is indices +
// values over one weight; diffs compose by addition (θ = θ0 + Σ w_i φ_i). Floating-point addition is
// not invertible ((x + b) − b ≠ x in general), so a composition keeps its terms: subtracting a diff
// that is one of the terms removes that term, and applying a composition adds the terms to the
// weight by index_add in their order. Hence A + B − B applies exactly as A alone, bit for bit.
import { keep, noGrad, tidy, zeros, type Tensor } from '../../tensor/index.js';
import type { PeftModel } from '../peft-model.js';
import { SparseDiffLayer } from './layer.js';

export interface SparseDiff {
  /** The weight's shape as stored. */
  shape: number[];
  /** Flat int64 positions in the stored weight (n). */
  indices: Tensor;
  /** Values (n), scaling applied. */
  values: Tensor;
}

export interface DiffTerm { diff: SparseDiff; weight: number }

const same = (a: Tensor, b: Tensor) => a === b || (a.numel === b.numel && a.dtype === b.dtype && Buffer.from(a.bytes()).equals(Buffer.from(b.bytes())));
export function sameDiff(a: SparseDiff, b: SparseDiff): boolean {
  return a === b || (a.shape.join() === b.shape.join() && same(a.indices, b.indices) && same(a.values, b.values));
}

/** A sum of weighted sparse diffs over one weight, kept as its terms (so removal is exact). */
export class SparseDiffSum {
  constructor(readonly shape: number[], readonly terms: readonly DiffTerm[] = []) {}

  plus(diff: SparseDiff, weight = 1): SparseDiffSum {
    this.check(diff);
    return new SparseDiffSum(this.shape, [...this.terms, { diff, weight }]);
  }

  /** Removes the last term equal to `diff` with this weight (exact); a diff not in the sum is added with −weight. */
  minus(diff: SparseDiff, weight = 1): SparseDiffSum {
    this.check(diff);
    for (let i = this.terms.length - 1; i >= 0; i--) {
      const t = this.terms[i]!;
      if (t.weight === weight && sameDiff(t.diff, diff)) return new SparseDiffSum(this.shape, [...this.terms.slice(0, i), ...this.terms.slice(i + 1)]);
    }
    return new SparseDiffSum(this.shape, [...this.terms, { diff, weight: -weight }]);
  }

  /** weight + Σ terms, each added by index_add in order (a new tensor in the weight's dtype). */
  applyTo(weight: Tensor): Tensor {
    if (weight.shape.join() !== this.shape.join()) throw new Error(`sparse diff over [${this.shape.join(', ')}] cannot apply to a weight of shape [${weight.shape.join(', ')}]`);
    return noGrad(() => tidy(() => {
      let flat = weight.reshape(-1).clone();
      for (const { diff, weight: k } of this.terms) {
        const v = diff.values.to(weight.dtype, weight.device);
        flat = flat.indexAdd(0, diff.indices.to('int64', weight.device), k === 1 ? v : v.mul(k));
      }
      return flat.view(...this.shape);
    }));
  }

  /** The dense ΔW (zeros plus every term), float32. */
  dense(): Tensor {
    const z = zeros(this.shape, { dtype: 'float32', device: this.terms[0]?.diff.values.device });
    try { return this.applyTo(z); } finally { z.dispose(); }
  }

  private check(d: SparseDiff): void {
    if (d.shape.join() !== this.shape.join()) throw new Error(`sparse diff over [${d.shape.join(', ')}] cannot join a sum over [${this.shape.join(', ')}]`);
  }
}

/** Every sparse diff of one adapter, per layer path (copies the caller owns: dispose indices and values). */
export function sparseDiffsOf(peft: PeftModel, name: string): Map<string, SparseDiff> {
  if (!peft.configs.has(name)) throw new Error(`no adapter "${name}" (have: ${peft.adapterNames().join(', ') || 'none'})`);
  const out = new Map<string, SparseDiff>();
  for (const [path, part] of peft.parts()) {
    if (!(part instanceof SparseDiffLayer) || !part.hasAdapter(name)) continue;
    const s = part.scaling(name);
    out.set(path, {
      shape: [...part.base_layer.weight.shape],
      indices: keep(part.flatIndices(name).clone()),
      values: keep(noGrad(() => tidy(() => part.valuesOf(name).mul(s).to('float32')))),
    });
  }
  if (!out.size) throw new Error(`adapter "${name}" has no sparse-diff layers (it is a ${peft.configs.get(name)!.peftType} adapter)`);
  return out;
}

/**
 * The composition Σ weights[i] · diff(names[i]) per layer path (LT-SFT's composition of task and
 * language diffs). Apply it with applySparseDiffs or SparseDiffSum.applyTo; remove a part with minus().
 */
export function composeSparseDiffs(peft: PeftModel, names: string[], weights: number[] = names.map(() => 1)): Map<string, SparseDiffSum> {
  if (weights.length !== names.length) throw new Error(`composeSparseDiffs: ${names.length} adapters but ${weights.length} weights`);
  const out = new Map<string, SparseDiffSum>();
  names.forEach((n, i) => {
    for (const [path, d] of sparseDiffsOf(peft, n)) out.set(path, (out.get(path) ?? new SparseDiffSum(d.shape)).plus(d, weights[i]!));
  });
  return out;
}

/** Writes θ0 + composition into the base weights of the sparse layers (bypassing adapters; for export). Returns the previous weights. */
export function applySparseDiffs(peft: PeftModel, sums: Map<string, SparseDiffSum>): Map<string, Tensor> {
  const old = new Map<string, Tensor>();
  for (const [path, sum] of sums) {
    const part = peft.model.getSubmodule(path);
    if (!(part instanceof SparseDiffLayer)) throw new Error(`${path} is not a sparse-diff layer`);
    const w = part.base_layer.weight;
    old.set(path, keep(w.clone()));
    part.base_layer.setParameter('weight', keep(sum.applyTo(w)), w.requiresGrad);
  }
  peft.ctx.version++;
  return old;
}
