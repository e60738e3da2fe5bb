// The S2FT tuner layer (Yang et al. 2024): a structured dense slice of the base weight is trained in
// place. On an attention output projection (o_proj, GPT-2's attn.c_proj, BERT's attention.output.dense)
// the slice is the input columns of the selected heads (head h owns columns h·d … h·d + d − 1, d the
// head size); on a feed-forward down projection it is the columns of the selected intermediate
// channels. Choosing input columns of these projections is what the paper's co-permutation of
// Q/K/V/O and up/down makes dense; the coupled Q/K/V rows and up/gate rows stay frozen here (the
// paper's default trains the output side only). See ColumnSliceLayer for the math.
// File tensors: `s2ft_indices` (int64, (R)) and `s2ft_weight` (float32, (O, R)).
import type { LinearLayer } from '../../nn/layers.js';
import type { AdapterConfigBase, AdapterContext, AddLayerOptions } from '../types.js';
import { ColumnSliceLayer, seededColumns, seedFor } from '../paca/column-layer.js';
import type { S2ftConfig } from './config.js';

/** What prepareAdapter tells each layer: the model's attention head count, or null for an FFN layer. */
export interface S2ftSite { heads: number | null }

export class S2ftLayer extends ColumnSliceLayer {
  readonly peftType = 'S2FT';
  protected readonly indicesKey = 's2ft_indices';
  protected readonly weightKey = 's2ft_weight';
  /** Per adapter: the selected heads (attention) or null (FFN channels). */
  readonly selectedHeads = new Map<string, number[] | null>();

  constructor(base: LinearLayer, ctx: AdapterContext) {
    super(base, ctx, 's2ft_weight');
  }

  protected chooseColumns(config: AdapterConfigBase, path: string, opts: AddLayerOptions): number[] {
    const c = config as S2ftConfig;
    const site = (opts.data as S2ftSite | undefined) ?? { heads: null };
    const I = this.inFeatures;
    if (site.heads !== null) {
      const H = site.heads;
      if (I % H !== 0) throw new Error(`S2FT: ${path} has ${I} input columns, not a multiple of the model's ${H} attention heads`);
      const d = I / H;
      let heads: number[];
      if (c.headIndices !== null) {
        const badHead = c.headIndices.find((h) => h >= H);
        if (badHead !== undefined) throw new Error(`S2FT config: head_indices has ${badHead}, but ${path} has ${H} heads (0..${H - 1})`);
        heads = [...c.headIndices].sort((a, b) => a - b);
      } else {
        if (c.numHeads > H) throw new Error(`S2FT config: num_heads = ${c.numHeads} is more than the ${H} heads of ${path}`);
        heads = seededColumns(H, c.numHeads, seedFor(opts.seed, `${path}.s2ft.heads`));
      }
      this.pendingHeads = heads;
      return heads.flatMap((h) => Array.from({ length: d }, (_, j) => h * d + j));
    }
    this.pendingHeads = null;
    if (c.channelIndices !== null) {
      const badCh = c.channelIndices.find((i) => i >= I);
      if (badCh !== undefined) throw new Error(`S2FT config: channel_indices has ${badCh}, but ${path} has ${I} channels (0..${I - 1})`);
      return [...c.channelIndices].sort((a, b) => a - b);
    }
    if (c.numChannels > I) throw new Error(`S2FT config: num_channels = ${c.numChannels} is more than the ${I} channels of ${path}`);
    return seededColumns(I, c.numChannels, seedFor(opts.seed, `${path}.s2ft.channels`));
  }

  private pendingHeads: number[] | null = null;

  override addAdapter(name: string, config: AdapterConfigBase, path: string, opts: AddLayerOptions): void {
    super.addAdapter(name, config, path, opts);
    this.selectedHeads.set(name, this.pendingHeads);
  }

  override deleteAdapter(name: string): void {
    super.deleteAdapter(name);
    if (!this.hasAdapter(name)) this.selectedHeads.delete(name);
  }
}
