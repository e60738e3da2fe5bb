// Input covariances of chosen linear layers over sample data, for CorDA (PEFT corda.py's
// calib_cov_distribution): per sample row X (T, I), scaled by 1/|max(X)|, C += Xᵀ X; C /= rows.
import { Module } from '../../nn/module.js';
import { noGrad, tidy, keep, zeros, type Tensor } from '../../tensor/index.js';
import type { PretrainedModel } from '../../models/types.js';

class Recorder extends Module {
  cov: Tensor;
  count = 0;
  constructor(readonly inner: Module & { forward(x: Tensor): Tensor; inFeatures?: number }, inF: number) {
    super();
    this.module('inner', inner);
    this.cov = keep(zeros([inF, inF]));
  }
  forward(x: Tensor): Tensor {
    tidy(() => {
      const rows = x.reshape(-1, x.shape[x.ndim - 2] ?? 1, x.shape[x.ndim - 1]!).to('float32');  // (N, T, I)
      for (let r = 0; r < rows.shape[0]!; r++) {
        const xr = rows.select(0, r);
        const m = Math.abs(xr.max().item()) || 1;
        const xs = xr.div(m);
        this.cov.add_(xs.transpose(0, 1).matmul(xs));
        this.count++;
      }
    });
    return this.inner.forward(x);
  }
}

export function collectCovariances(model: PretrainedModel, paths: string[], samples: Tensor[]): Map<string, Tensor> {
  if (!samples.length) throw new Error('CorDA needs sample data: pass samples (batches of input ids) when adding the adapter');
  const recorders = new Map<string, Recorder>();
  for (const p of paths) {
    const inner = model.getSubmodule(p) as Recorder['inner'];
    const base = (inner as unknown as { baseLayer?: { inFeatures: number } }).baseLayer ?? (inner as unknown as { inFeatures: number });
    const r = new Recorder(inner, base.inFeatures);
    model.setSubmodule(p, r);
    recorders.set(p, r);
  }
  try {
    noGrad(() => { for (const ids of samples) tidy(() => { model.forward({ inputIds: ids }); }); });
  } finally {
    for (const [p, r] of recorders) model.setSubmodule(p, r.inner);
  }
  const out = new Map<string, Tensor>();
  for (const [p, r] of recorders) {
    out.set(p, keep(r.cov.div(Math.max(1, r.count))));
    r.cov.dispose();
  }
  return out;
}
