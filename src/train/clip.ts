// Gradient clipping by global L2 norm (torch.nn.utils.clip_grad_norm_): if the norm of all
// gradients together exceeds maxNorm, every gradient is scaled by maxNorm / (norm + 1e-6).
import { noGrad, tidy, type Tensor } from '../tensor/index.js';

/** Returns the total norm before clipping. */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): number {
  return noGrad(() => tidy(() => {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    if (!grads.length) return 0;
    let sq = 0;
    for (const g of grads) sq += g.to('float32').square().sum().item();
    const total = Math.sqrt(sq);
    if (maxNorm > 0 && total > maxNorm) {
      const coef = maxNorm / (total + 1e-6);
      for (const g of grads) g.mul_(coef);
    }
    return total;
  }));
}
