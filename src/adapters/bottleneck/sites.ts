// Where a model has residual sites (models/hooks.ts residualSite): GPT-2 blocks and LLaMA-style
// decoder layers hold both sites themselves (`h.3`, `layers.3`); a BERT layer holds them on its
// `attention.output` (attention site) and `output` (feed-forward site) modules. The site module is a
// child named by SITE_MODULE (`attention_adapters` / `output_adapters`).
import { GPT2Block } from '../../models/gpt2.js';
import { LlamaDecoderLayer } from '../../models/llama.js';
import { BertLayer } from '../../models/bert.js';
import { SITE_MODULE, type Site } from '../../models/hooks.js';
import type { PretrainedModel } from '../../models/types.js';

export interface SiteRef {
  /** The module that calls residualSite (the block, or BERT's *Output module). */
  owner: string;
  /** Where the site module goes: `<owner>.attention_adapters` / `<owner>.output_adapters`. */
  path: string;
  layer: number;
  site: Site;
  /** The site normalises after the residual (post-LN, BERT). */
  postLn: boolean;
}

/** Every residual site of the model, in layer order (attention site first). */
export function residualSites(model: PretrainedModel): SiteRef[] {
  const out: SiteRef[] = [];
  const at = (owner: string, site: Site, layer: number, postLn: boolean) => out.push({ owner, path: `${owner}.${SITE_MODULE[site]}`, layer, site, postLn });
  for (const [path, m] of model.namedModules()) {
    const idx = /(?:^|\.)(\d+)$/.exec(path);
    if (!idx) continue;
    const layer = Number(idx[1]);
    if (m instanceof GPT2Block || m instanceof LlamaDecoderLayer) {
      at(path, 'attention', layer, false);
      at(path, 'output', layer, false);
    } else if (m instanceof BertLayer) {
      at(`${path}.attention.output`, 'attention', layer, true);
      at(`${path}.output`, 'output', layer, true);
    }
  }
  return out;
}

/** The hidden size adapters see (AdapterHub: model_config.hidden_size). */
export function hiddenSize(model: PretrainedModel): number {
  const c = model.config as Record<string, unknown>;
  const h = c.hidden_size ?? c.n_embd ?? c.d_model;
  if (typeof h !== 'number') throw new Error(`bottleneck adapters: the ${model.modelType} config has no hidden_size / n_embd`);
  return h;
}
