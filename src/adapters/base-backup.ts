// The base layer's weight (and bias) as they were before the first merge, so unmerge restores them
// bit for bit instead of subtracting updates back out (which float rounding would not undo exactly).
// Shared by every method that merges into a wrapped layer.
import { keep, type Tensor } from '../tensor/index.js';
import type { Module } from '../nn/module.js';

type BaseLayer = Module & { readonly weight: Tensor; readonly bias?: Tensor | null };

/** A layer that stores its weight in another form (a quantized base) hands out its own exact copy. */
interface OwnBackup {
  restore(): void;
  dispose(): void;
}
function ownBackup(layer: BaseLayer): OwnBackup | null {
  const f = (layer as { backupWeight?: () => OwnBackup }).backupWeight;
  return typeof f === 'function' ? f.call(layer) : null;
}

export class BaseBackup {
  private w: Tensor | null = null;
  private b: Tensor | null = null;
  private own: OwnBackup | null = null;

  /** True once a copy is held (something is merged). */
  get taken(): boolean {
    return this.w !== null || this.own !== null;
  }
  /** The weight before the first merge. */
  get weight(): Tensor | null {
    return this.w;
  }
  /** The bias before the first merge that changed it, or null. */
  get bias(): Tensor | null {
    return this.b;
  }

  /** Copies the layer's weight (once), and its bias too when `withBias` and it has one (once). */
  take(layer: BaseLayer, withBias = false): void {
    if (!this.w && !this.own) {
      this.own = ownBackup(layer);
      if (!this.own) this.w = keep(layer.weight.clone());
    }
    if (withBias && !this.b && layer.bias) this.b = keep(layer.bias.clone());
  }

  /** Puts the copies back (each tensor keeps the trainability it has now); false when nothing was held. */
  restore(layer: BaseLayer): boolean {
    if (this.own) {
      this.own.restore();
      this.own = null;
    } else if (this.w) layer.setParameter('weight', this.w, layer.weight.requiresGrad);
    else return false;
    if (this.b) layer.setParameter('bias', this.b, layer.bias!.requiresGrad);
    this.w = null;
    this.b = null;
    return true;
  }

  dispose(): void {
    this.w?.dispose();
    this.b?.dispose();
    this.own?.dispose();
    this.own = null;
    this.w = null;
    this.b = null;
  }
}
