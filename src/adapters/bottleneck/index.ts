// Bottleneck adapters (AdapterHub: Houlsby 2019, Pfeiffer 2020, parallel He 2021, MAD-X invertible
// adapters, Compacter/Compacter++): one registerAdapter call (convention 3). Not a wrapped layer:
// inject() puts a site module at each residual connection of each layer (models/hooks.ts), an
// invertible adapter on the embedding output, and Compacter's shared rule under the base model.
import { registerAdapter } from '../registry.js';
import type { AdapterMethod, InjectArgs } from '../types.js';
import { resolveBottleneck, downSize, BN_PRESETS, type BottleneckConfig } from './config.js';
import { ADAPTERHUB_FORMAT, bottleneckToJson, bottleneckJsonToOptions, detectAdapterHub } from './format.js';
import { BottleneckSite, BnAdapter } from './layer.js';
import { InvertibleAdapters } from './invertible.js';
import { SharedParameters } from './shared.js';
import { residualSites, hiddenSize } from './sites.js';
import { fusionRegularizationLoss } from './fusion-api.js';

function inject({ peft, name, config: c, seed: seed0 }: InjectArgs<BottleneckConfig>): void {
  const model = peft.model;
  const seed = c.initWeightsSeed ? c.initWeightsSeed : seed0;  // AdapterHub's fix_seed applies only a truthy seed
  const device = model.device;
  const hidden = hiddenSize(model);
  const sites = residualSites(model);
  if (!sites.length) throw new Error(`bottleneck adapters: this ${model.modelType} model has no residual sites (supported: GPT-2, LLaMA-style decoders, BERT/RoBERTa)`);
  const base = model.basePrefix;
  let shared: SharedParameters | null = null;
  if (c.phmLayer && c.sharedPhmRule) {
    const path = `${base}.shared_parameters`;
    shared = model.getSubmodule(base).child('shared_parameters') as SharedParameters | null;
    if (!shared) {
      shared = new SharedParameters();
      model.addSubmodule(path, shared);
    }
    shared.addAdapter(name, c, device, seed, `${path}.${name}`);
  }
  const rule = shared ? ((s: SharedParameters) => () => s.rule(name))(shared) : null;
  let added = 0;
  for (const s of sites) {
    if (c.leaveOut.includes(s.layer)) continue;
    if (s.site === 'attention' ? !c.mhAdapter : !c.outputAdapter) continue;
    if (c.residualBeforeLn === 'post_add' && !c.isParallel && c.originalLnBefore && !s.postLn) {
      throw new Error('bottleneck adapter: residual_before_ln "post_add" needs a post-LN model (BERT/RoBERTa); on a pre-LN decoder AdapterHub fails with UnboundLocalError');
    }
    let site = model.getSubmodule(s.owner).child(s.path.slice(s.owner.length + 1));
    if (site && !(site instanceof BottleneckSite)) throw new Error(`${s.path} is taken by a ${site.constructor.name}`);
    if (!site) {
      site = new BottleneckSite(peft.ctx, s.layer);
      model.addSubmodule(s.path, site);
    }
    const key = `${s.path}.adapters.${name}`;
    (site as BottleneckSite).addAdapter(name, new BnAdapter(c, hidden, downSize(c, hidden, s.layer), device, seed, key, rule));
    added++;
  }
  if (c.invAdapter === 'nice') {
    const path = `${base}.invertible_adapters`;
    let inv = model.getSubmodule(base).child('invertible_adapters') as InvertibleAdapters | null;
    if (!inv) {
      inv = new InvertibleAdapters(peft.ctx, model);
      model.addSubmodule(path, inv);
    }
    const emb = (model.config as Record<string, unknown>).embedding_size;
    inv.addAdapter(name, typeof emb === 'number' ? emb : hidden, c.nonLinearity, c.invAdapterReductionFactor!, device, seed, `${path}.${name}`);
    added++;
  }
  if (!added) throw new Error(`bottleneck adapter "${name}": leave_out ${JSON.stringify(c.leaveOut)} leaves no layer of this ${model.numLayers}-layer model`);
}

export const BOTTLENECK: AdapterMethod<BottleneckConfig> = {
  peftType: 'BOTTLENECK',
  names: Object.keys(BN_PRESETS),
  presets: BN_PRESETS as Record<string, Partial<BottleneckConfig>>,
  cliFlags: { reduction: 'reductionFactor', dropout: 'dropout' },
  summary: 'bottleneck adapters at each residual connection (AdapterHub: Pfeiffer/Houlsby/parallel, invertible, Compacter); trains down/up projections',
  capabilities: () => ({ mergeable: false, mixedBatch: true, kvCache: true, composable: true }),
  // Nested Parallel is not applied (it would replicate the batch inside the model): see layer.ts.
  compositions: ['Fuse', 'Split', 'Average', 'BatchSplit'],
  // AdapterHub's AdapterTrainer adds the fusion value-matrix regularisation while training a fusion.
  runtime: (peft) => ({
    auxLoss: () => (peft.model.training ? fusionRegularizationLoss(peft) : null),
    // Fusion layers train only inside trainAdapterFusion (which unfreezes them after activating).
    onActivate: () => { for (const [, part] of peft.parts()) if (part instanceof BottleneckSite) for (const [, l] of part.adapter_fusion_layer.children()) l.requiresGrad_(false); },
  }),
  format: ADAPTERHUB_FORMAT,
  detect: detectAdapterHub,
  fromJson: (raw, warn) => resolveBottleneck(bottleneckJsonToOptions(raw, warn) as Partial<BottleneckConfig>),
  toJson: bottleneckToJson,
  resolve: resolveBottleneck,
  inject,
};

registerAdapter(BOTTLENECK);

export { resolveBottleneck, downSize, BN_PRESETS, type BottleneckConfig, type BottleneckOptions } from './config.js';
export { ADAPTERHUB_FORMAT, adapterHubJsonText, bottleneckToJson, detectAdapterHub } from './format.js';
export { BottleneckSite, BnAdapter } from './layer.js';
export { InvertibleAdapters, NICECouplingBlock } from './invertible.js';
export { SharedParameters } from './shared.js';
export { PHMLayer, batchedKron } from './phm.js';
export { residualSites } from './sites.js';
export { BertFusion, FUSION_PRESETS, resolveFusionConfig, type FusionConfig } from './fusion.js';
export {
  addAdapterFusion, trainAdapterFusion, saveAdapterFusion, loadAdapterFusion, deleteAdapterFusion, adapterFusions,
  fusionRegularizationLoss, ADAPTERFUSION_CONFIG_NAME, SAFE_ADAPTERFUSION_WEIGHTS_NAME, type AddFusionOptions,
} from './fusion-api.js';
