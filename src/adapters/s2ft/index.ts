// S2FT (structured sparse fine-tuning): one registerAdapter call (convention 3).
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import type { AdapterMethod, TunerLayer } from '../types.js';
import { resolveS2ft, s2ftFromJson, s2ftToJson, isAttentionOutput, DEFAULT_S2FT_TARGETS, type S2ftConfig } from './config.js';
import { S2ftLayer, type S2ftSite } from './layer.js';

export const S2FT: AdapterMethod<S2ftConfig> = {
  peftType: 'S2FT',
  names: ['s2ft'],
  cliFlags: { heads: 'numHeads', channels: 'numChannels' },
  summary: 'S2FT (Yang et al. 2024): dense slices of selected attention heads (output projection) and FFN channels (down projection) trained in place',
  capabilities: () => ({ mergeable: true, mixedBatch: true, kvCache: true, composable: true }),
  fromJson: s2ftFromJson,
  toJson: s2ftToJson,
  resolve: resolveS2ft,
  defaultTargets: (modelType) => DEFAULT_S2FT_TARGETS[modelType] ?? null,
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`S2FT cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D)`);
    return new S2ftLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof S2ftLayer,
  // Each target learns whether it is an attention output projection and the model's head count.
  prepareAdapter: ({ model, paths }) => {
    const cfg = model.config as Record<string, unknown>;
    const heads = Number(cfg.n_head ?? cfg.num_attention_heads);
    const out = new Map<string, unknown>();
    for (const p of paths) {
      const attn = isAttentionOutput(p);
      if (attn && !(Number.isInteger(heads) && heads > 0)) throw new Error(`S2FT: the model config gives no attention head count (n_head / num_attention_heads) for ${p}`);
      out.set(p, { heads: attn ? heads : null } satisfies S2ftSite);
    }
    return out;
  },
};

registerAdapter(S2FT);

export { S2ftLayer, type S2ftSite } from './layer.js';
export { type S2ftConfig, type S2ftOptions, resolveS2ft, isAttentionOutput, DEFAULT_S2FT, DEFAULT_S2FT_TARGETS, S2FT_FIELDS } from './config.js';
