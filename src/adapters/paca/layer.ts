// The PaCA tuner layer (Woo et al. 2025): r random input columns of the base weight, seeded per
// module path, are trained in place (the partial connections); see ColumnSliceLayer for the math.
// File tensors: `paca_indices` (int64, (r)) and `paca_weight` (float32, (O, r)).
import type { LinearLayer } from '../../nn/layers.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions } from '../types.js';
import { ColumnSliceLayer, seededColumns, seedFor } from './column-layer.js';
import type { PacaConfig } from './config.js';

export class PacaLayer extends ColumnSliceLayer {
  readonly peftType = 'PACA';
  protected readonly indicesKey = 'paca_indices';
  protected readonly weightKey = 'paca_weight';

  constructor(base: LinearLayer, ctx: AdapterContext) {
    super(base, ctx, 'paca_weight');
  }

  protected chooseColumns(config: AdapterConfigBase, path: string, opts: AddLayerOptions): number[] {
    const r = (config as PacaConfig).r;
    if (r > this.inFeatures) throw new Error(`PaCA: r = ${r} is more than the ${this.inFeatures} input columns of ${path}`);
    return seededColumns(this.inFeatures, r, seedFor(opts.seed, `${path}.paca`));
  }
}
