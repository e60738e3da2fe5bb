// Data parallelism over a process group: which rows of a global batch a rank takes, rank 0's weights
// to every rank, and the gradient sum with a few fused all-reduces (one per ~25 MB bucket) instead
// of one per parameter: per-call latency, not bandwidth, dominates for adapter-sized gradients.
import { cat, noGrad, tensor, tidy, zeros, type Tensor } from '../tensor/index.js';
import type { ProcessGroup } from './process-group.js';

/** PyTorch DDP's default bucket size (bucket_cap_mb=25). */
export const BUCKET_BYTES = 25 * 1024 * 1024;

/**
 * The rows [start, end) of a global batch of `n` rows that `rank` computes: contiguous, in rank
 * order, sizes differing by at most one, so the ranks' slices concatenated are the global batch.
 */
export function shardRange(n: number, rank: number, worldSize: number): [number, number] {
  return [Math.floor((rank * n) / worldSize), Math.floor(((rank + 1) * n) / worldSize)];
}

/** Groups parameters (in order) into buckets of at most `bytes` of float32 (a larger one gets its own). */
export function buckets(params: readonly Tensor[], bytes = BUCKET_BYTES): Tensor[][] {
  const out: Tensor[][] = [[]];
  let size = 0;
  for (const p of params) {
    const b = p.numel * 4;
    if (size > 0 && size + b > bytes) {
      out.push([]);
      size = 0;
    }
    out[out.length - 1]!.push(p);
    size += b;
  }
  return out;
}

// Float32 carries every gradient and weight (bfloat16 and float16 exactly); float64 only when a weight is float64.
const wire = (params: readonly Tensor[]) => (params.some((p) => p.dtype === 'float64') ? 'float64' : 'float32');

// Gloo moves CPU memory: a buffer built on a GPU makes a round trip through the host.
function reduceOnHost(pg: ProcessGroup, flat: Tensor, f: (t: Tensor) => void): Tensor {
  if (flat.device === 'cpu') {
    f(flat);
    return flat;
  }
  const host = flat.to(null, 'cpu');
  f(host);
  return host.to(null, flat.device);
}

/** Copies rank `root`'s values of `params` to every rank (one broadcast per bucket). */
export function broadcastParameters(pg: ProcessGroup, params: readonly Tensor[], root = 0): void {
  for (const group of buckets(params)) {
    noGrad(() => tidy(() => {
      const dtype = wire(group);
      let flat = cat(group.map((p) => p.detach().reshape(-1).to(dtype)));  // (sum of numel)
      flat = reduceOnHost(pg, flat, (t) => pg.broadcast(t, root));
      flat.split(group.map((p) => p.numel)).forEach((piece, i) => group[i]!.copy_(piece.view(...group[i]!.shape)));
    }));
  }
}

/**
 * Sums the gradients of `params` over the ranks, in place (a parameter without a gradient counts as
 * zeros and gets the sum). `extras` (a loss, a flag) ride along in the last bucket, so a training step
 * needs no other collective; their sums are returned.
 */
export function allReduceGradients(pg: ProcessGroup, params: readonly Tensor[], extras: readonly number[] = [], bytes = BUCKET_BYTES): number[] {
  let sums: number[] = [];
  const groups = buckets(params, bytes);
  groups.forEach((group, k) => {
    const last = k === groups.length - 1;
    noGrad(() => tidy(() => {
      const dtype = wire(group);
      const parts = group.map((p) => p.grad?.reshape(-1).to(dtype) ?? zeros([p.numel], { dtype, device: p.device }));
      if (last) parts.push(tensor([...extras], { dtype: 'float64' }).to(dtype, group[0]?.device));
      let flat = cat(parts);  // (sum of numel [+ extras])
      flat = reduceOnHost(pg, flat, (t) => pg.allReduce(t, 'sum'));
      const pieces = flat.split([...group.map((p) => p.numel), ...(last ? [extras.length] : [])]);
      group.forEach((p, i) => {
        const g = pieces[i]!.view(...p.shape).to(p.dtype);
        const own = p.grad;
        if (own) own.copy_(g);
        else p.grad = g.clone();
      });
      if (last) sums = Array.from(pieces[group.length]!.to('float64').data() as Float64Array);
    }));
  });
  return sums;
}
