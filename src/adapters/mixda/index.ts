// MixDA-style domain gate: one registerAdapter call (convention 3). adapterkit's own peft_type
// "MIXDA": a learned per-example softmax gate over LoRA adapters already on the PeftModel; only the
// gate trains and is saved (its config names the domain adapters, which must be present to load it).
import { registerAdapter } from '../registry.js';
import type { AdapterMethod } from '../types.js';
import type { LoraConfig } from '../lora/config.js';
import { LoraLayer } from '../lora/layer.js';
import { wordEmbeddingWeight } from '../prompt/index.js';
import { resolveMixda, mixdaFromJson, mixdaToJson, type MixdaConfig } from './config.js';
import { MixdaGate, GATE_PATH } from './gate.js';

export const MIXDA: AdapterMethod<MixdaConfig> = {
  peftType: 'MIXDA',
  names: ['mixda', 'domain-gate'],
  summary: 'MixDA-style domain gate (after Diao et al. 2023): a per-example softmax gate over existing LoRA domain adapters (trains the gate only)',
  // kvCache false: the gate pools the embeddings of the tokens a forward sees, so a cached step (one new token) would re-gate.
  capabilities: () => ({ mergeable: false, mixedBatch: false, kvCache: false, composable: false }),
  fromJson: mixdaFromJson,
  toJson: mixdaToJson,
  resolve: resolveMixda,
  inject: ({ peft, name, config, seed }) => {
    const domains = config.domainAdapters;
    const load = 'add (or load: loadPeftAdapter(peft, dir, { adapterName })) the LoRA domain adapters first, then the gate on the same PeftModel';
    if (!domains.length) throw new Error(`MixDA adapter "${name}" needs domain_adapters: the names of LoRA adapters on this PeftModel (${load})`);
    for (const d of domains) {
      const c = peft.configs.get(d);
      if (!c) throw new Error(`MixDA adapter "${name}": domain adapter "${d}" is not on this PeftModel (have: ${peft.adapterNames().join(', ') || 'none'}); ${load}`);
      if (c.peftType !== 'LORA') throw new Error(`MixDA adapter "${name}": domain adapter "${d}" is a ${c.peftType} adapter; domain adapters must be LoRA adapters`);
      const lc = c as LoraConfig;
      if (lc.useDora || lc.dylora) throw new Error(`MixDA adapter "${name}": domain adapter "${d}" uses ${lc.useDora ? 'DoRA' : 'DyLoRA'}; the gate mixes plain LoRA deltas only`);
      const layers = peft.tunerLayers().filter(([, l]) => l.peftType === 'LORA' && l.hasAdapter(d));
      const other = layers.find(([, l]) => !(l instanceof LoraLayer));
      if (other) throw new Error(`MixDA adapter "${name}": domain adapter "${d}" adapts ${other[0]}, which is not a Linear LoRA layer (embedding LoRA is not supported by the gate)`);
      if (!layers.length) throw new Error(`MixDA adapter "${name}": domain adapter "${d}" adapts no layer`);
    }
    const model = peft.model;
    const channels = wordEmbeddingWeight(model).shape[1]!;
    let part = model.child(GATE_PATH);
    if (part === null) {
      part = new MixdaGate(peft.ctx, model);
      model.addSubmodule(GATE_PATH, part);
    } else if (!(part instanceof MixdaGate)) throw new Error(`the model already has a module named ${GATE_PATH}`);
    (part as MixdaGate).addAdapter(name, domains, channels, config.initGateWeights, model.device, seed);
  },
};

registerAdapter(MIXDA);

export { MixdaGate, GATE_PATH, type MixdaSlot } from './gate.js';
export { type MixdaConfig, type MixdaOptions, resolveMixda, DEFAULT_MIXDA, MIXDA_FIELDS } from './config.js';
