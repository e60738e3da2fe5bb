// Mask selection shared by the sparse fine-tuning methods (SHiRA, LT-SFT, SPT).
//  - PEFT's SHiRA random mask: torch.randperm(out*in, generator)[:r*(out+in)], reproduced bit for bit
//    with libtorch's CPU generator (mt19937 seeded like torch.Generator().manual_seed(seed); an
//    unseeded torch.Generator() starts from torch's default seed 67280421310721) and randperm_cpu's
//    Fisher-Yates (z = random() % (n - i)).
//  - top-k helpers over per-layer score tables (per layer for LT-SFT, global for SPT).
//  - the gradient pass over sample batches (language-modelling loss) for LT-SFT's dense phase and
//    SPT's sensitivities.
import { noGrad, tidy, keep, cat, tensor, randint, crossEntropy, type Tensor } from '../../tensor/index.js';
import type { Module } from '../../nn/module.js';
import type { PretrainedModel } from '../../models/types.js';

/** torch's default_rng_seed_val: the seed of a fresh torch.Generator(). */
export const TORCH_DEFAULT_SEED = 67280421310721n;

/** libtorch's at::mt19937 (the CPU generator's engine): uint32 outputs. */
export class Mt19937 {
  private readonly mt = new Uint32Array(624);
  private idx = 624;
  constructor(seed: bigint | number) {
    const s = BigInt.asUintN(64, BigInt(seed));
    this.mt[0] = Number(s & 0xffffffffn);  // at::mt19937::init_with_uint32 keeps the low 32 bits
    for (let j = 1; j < 624; j++) {
      const p = this.mt[j - 1]!;
      this.mt[j] = (Math.imul(1812433253, (p ^ (p >>> 30)) >>> 0) + j) >>> 0;
    }
  }
  next(): number {
    if (this.idx >= 624) this.twist();
    let y = this.mt[this.idx++]!;
    y ^= y >>> 11;
    y = (y ^ ((y << 7) & 0x9d2c5680)) >>> 0;
    y = (y ^ ((y << 15) & 0xefc60000)) >>> 0;
    y ^= y >>> 18;
    return y >>> 0;
  }
  private twist(): void {
    const mt = this.mt;
    for (let i = 0; i < 624; i++) {
      const y = ((mt[i]! & 0x80000000) | (mt[(i + 1) % 624]! & 0x7fffffff)) >>> 0;
      mt[i] = (mt[(i + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0)) >>> 0;
    }
    this.idx = 0;
  }
}

/** torch.randperm(n, generator=torch.Generator().manual_seed(seed)) on the CPU (n < 2^32 / 20). */
export function torchRandperm(n: number, seed: bigint | number | null): Int32Array | Float64Array {
  if (n >= 0xffffffff / 20) throw new Error(`randperm: n = ${n} is too large for the exact torch replica (limit ${Math.floor(0xffffffff / 20)})`);
  const g = new Mt19937(seed ?? TORCH_DEFAULT_SEED);
  const r = n < 2 ** 31 ? new Int32Array(n) : new Float64Array(n);
  for (let i = 0; i < n; i++) r[i] = i;
  for (let i = 0; i < n - 1; i++) {
    const z = g.next() % (n - i);
    const t = r[i]!;
    r[i] = r[z + i]!;
    r[z + i] = t;
  }
  return r;
}

/**
 * PEFT's shira/mask_functions.py random_mask as COO indices: the first r*(out+in) entries of a
 * seeded randperm over the (out, in) weight, in torch.where's row-major order. Returns (2, n) int32
 * [rows; cols] (PEFT's shira_indices).
 */
export function shiraRandomIndices(outF: number, inF: number, r: number, seed: number | null): Tensor {
  const num = r * (outF + inF);
  const perm = torchRandperm(outF * inF, seed);
  const chosen = Array.from(perm.subarray(0, num)).sort((a, b) => a - b);
  const rows = new Int32Array(num);
  const cols = new Int32Array(num);
  chosen.forEach((f, i) => { rows[i] = Math.floor(f / inF); cols[i] = f % inF; });
  const both = new Int32Array(2 * num);
  both.set(rows, 0);
  both.set(cols, num);
  return tensor(both, { dtype: 'int32', shape: [2, num] });
}

/** Sorted flat int64 indices of the k largest entries of `scores` (any shape; ties: libtorch's topk order). */
export function topkFlat(scores: Tensor, k: number): Tensor {
  return tidy(() => {
    const flat = scores.reshape(-1).to('float32');
    const kk = Math.max(0, Math.min(k, flat.numel));
    if (kk === 0) return tensor(new BigInt64Array(0), { dtype: 'int64', shape: [0] });
    return flat.topk(kk).indices.to('int64').sort(0).values;
  });
}

/** Per layer: the k(numel) largest entries of each table (LT-SFT's top-k of |θ1 − θ0|). */
export function topkPerLayer(scores: Map<string, Tensor>, k: (numel: number) => number): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [p, s] of scores) out.set(p, keep(topkFlat(s, k(s.numel))));
  return out;
}

/**
 * The k globally largest entries over all tables (SPT's global top-k by sensitivity), split back
 * into sorted flat indices per table. Every table gets an entry in the result (possibly empty).
 */
export function topkGlobal(scores: Map<string, Tensor>, k: number): Map<string, Tensor> {
  const paths = [...scores.keys()];
  const sizes = paths.map((p) => scores.get(p)!.numel);
  const offsets: number[] = [];
  sizes.reduce((o, n) => { offsets.push(o); return o + n; }, 0);
  const total = sizes.reduce((a, b) => a + b, 0);
  const chosen = noGrad(() => tidy(() => topkFlat(cat(paths.map((p) => scores.get(p)!.reshape(-1).to('float32'))), Math.min(k, total)).data())) as BigInt64Array;
  const per = paths.map(() => [] as bigint[]);
  let layer = 0;
  for (const g of chosen) {  // sorted ascending, so the layer only moves forward
    const gi = Number(g);
    while (layer + 1 < paths.length && gi >= offsets[layer + 1]!) layer++;
    per[layer]!.push(BigInt(gi - offsets[layer]!));
  }
  return new Map(paths.map((p, i) => [p, keep(tensor(BigInt64Array.from(per[i]!), { dtype: 'int64', shape: [per[i]!.length] }))]));
}

/** The weight a target path trains: the wrapped layer's base weight, or the module's own. */
export function targetWeight(model: PretrainedModel, path: string): { owner: Module; weight: Tensor } {
  const m = model.getSubmodule(path) as Module & { baseLayer?: Module };
  const owner = (m.baseLayer ?? m) as Module;
  return { owner, weight: owner.getParameter('weight') };
}

/** Next-token cross-entropy of a causal LM on one batch of ids (B, T). */
export function lmLoss(model: PretrainedModel, ids: Tensor, what: string): Tensor {
  if (ids.ndim !== 2 || ids.shape[1]! < 2) throw new Error(`${what}: each sample batch in data must be input ids of shape (B, T) with T >= 2, got [${ids.shape.join(', ')}]`);
  const lg = model.forward({ inputIds: ids }).logits;
  if (lg.ndim !== 3) throw new Error(`${what}: selection by a language-modelling loss needs a model with an LM head (logits (B, T, V)); this ${model.modelType} model gives [${lg.shape.join(', ')}]`);
  const t = ids.shape[1]!;
  return crossEntropy(lg.narrow(1, 0, t - 1).reshape(-1, lg.shape[2]!), ids.narrow(1, 1, t - 1).reshape(-1));
}

/**
 * Runs `steps` passes of the LM loss over `data` (cycled) with gradients on the target weights only;
 * `onGrads` sees each step's gradients (float32, per path) inside a tidy scope. Gradients and
 * requires-grad flags are restored afterwards; parameters that had no gradient before get none.
 */
export function gradientPass(model: PretrainedModel, paths: string[], data: Tensor[], steps: number, what: string, onGrads: (grads: Map<string, Tensor>) => void, taskLoss?: (batch: number) => Tensor): void {
  const weights = paths.map((p) => targetWeight(model, p).weight);
  const flags = weights.map((w) => w.requiresGrad);
  const clean = model.parameters().filter((p) => p.requiresGrad && !hasGrad(p));
  const wasTraining = model.training;
  model.eval();  // no dropout: the selection is deterministic
  try {
    weights.forEach((w) => { w.zeroGrad(); w.requiresGrad_(true); });
    for (let s = 0; s < steps; s++) {
      tidy(() => {
        (taskLoss ? taskLoss(s % data.length) : lmLoss(model, data[s % data.length]!, what)).backward();  // the task's loss when the caller gives one
        const grads = new Map<string, Tensor>();
        paths.forEach((p, i) => {
          const w = targetWeight(model, p).weight;
          const g = w.grad;
          grads.set(p, g ? g.to('float32') : w.mul(0).to('float32'));
        });
        onGrads(grads);
        paths.forEach((p) => targetWeight(model, p).weight.zeroGrad());
      });
    }
  } finally {
    paths.forEach((p, i) => { const w = targetWeight(model, p).weight; w.zeroGrad(); w.requiresGrad_(flags[i]!); });
    clean.forEach((p) => p.zeroGrad());
    if (wasTraining) model.train();
  }
}

function hasGrad(t: Tensor): boolean {
  const g = t.grad;
  g?.dispose();
  return g !== null;
}

/**
 * The sample batches for a data-driven selection: `data` as given; when it is empty, either an error
 * naming `data`, or (syntheticData: true, for smoke tests) two seeded batches of random token ids.
 */
export function selectionData(model: PretrainedModel, data: Tensor[], synthetic: boolean, seed: number, what: string, field: string): { batches: Tensor[]; owned: boolean } {
  if (data.length) return { batches: data, owned: false };
  if (!synthetic) {
    throw new Error(`${what} selects its entries from sample data: pass data (batches of input ids, e.g. PeftModel.create(model, config, { data })), or set ${field}: true to select on random token ids (smoke tests only)`);
  }
  const vocab = Number((model.config as Record<string, unknown>).vocab_size ?? 0);
  if (!(vocab > 0)) throw new Error(`${what}: ${field} needs the model config's vocab_size`);
  return { batches: [0, 1].map((i) => keep(randint(0, vocab, [2, 8], { seed: seed * 7919 + i + 1 }))), owned: true };
}
