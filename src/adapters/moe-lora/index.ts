// MoE-LoRA (MoLA / MeteoRA: a mixture of LoRA experts with a learned per-token top-k router): one
// registerAdapter call (convention 3). Its runtime collects the routers' load-balancing losses of the
// last training forward, which the trainer adds to the loss (PeftModel.auxLoss()).
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import { stack, type Tensor } from '../../tensor/index.js';
import { DEFAULT_QV_TARGETS, layerIndexOf } from '../targets.js';
import type { AdapterContext, AdapterMethod, MethodRuntime, TunerLayer } from '../types.js';
import { resolveMoeLora, moeLoraFromJson, moeLoraToJson, expertsForLayer, type MoeLoraConfig } from './config.js';
import { MoeLoraLayer, type MoeLoraSlot } from './layer.js';

/**
 * Per-PeftModel MoE-LoRA state: before each forward it clears ctx.slots.MOE_LORA (freeing the terms
 * of the previous forward); layers push coef · load-balancing loss there in training forwards; auxLoss()
 * gives their mean (per layer and adapter) once and clears them.
 */
export class MoeLoraRuntime implements MethodRuntime {
  constructor(private readonly ctx: AdapterContext) {}

  private slot(): MoeLoraSlot {
    let s = this.ctx.slots.MOE_LORA as MoeLoraSlot | undefined;
    if (!s) this.ctx.slots.MOE_LORA = s = { training: false, terms: [] };
    return s;
  }

  private clear(s: MoeLoraSlot): void {
    for (const t of s.terms) t.dispose();
    s.terms = [];
  }

  beforeForward(training: boolean): void {
    const s = this.slot();
    this.clear(s);
    s.training = training;
  }

  auxLoss(): Tensor | null {
    const s = this.slot();
    if (!s.terms.length) return null;
    const loss = stack(s.terms).mean();  // owned by the caller's scope; the graph keeps what backward needs
    this.clear(s);
    return loss;
  }
}

export const MOE_LORA: AdapterMethod<MoeLoraConfig> = {
  peftType: 'MOE_LORA',
  names: ['moe-lora', 'mola', 'meteora'],
  cliFlags: { r: 'r', alpha: 'loraAlpha', dropout: 'loraDropout' },  // num_experts, top_k, …: --adapter-options
  summary: 'MoE-LoRA (MoLA, Gao et al. 2024; MeteoRA, Xu et al. 2024): per layer, LoRA experts mixed per token by a learned top-k router (with a load-balancing loss)',
  capabilities: () => ({ mergeable: false, mixedBatch: true, kvCache: true, composable: false }),
  fromJson: moeLoraFromJson,
  toJson: moeLoraToJson,
  resolve: resolveMoeLora,
  defaultTargets: (modelType) => DEFAULT_QV_TARGETS[modelType] ?? null,
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`MoE-LoRA cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D)`);
    return new MoeLoraLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof MoeLoraLayer,
  // The expert count of each target (MoLA's experts_per_layer: a list by layer index or a shape over the model's depth).
  prepareAdapter: ({ config, model, paths }) => new Map(paths.map((p) => [p, expertsForLayer(config, layerIndexOf(p, config.layersPattern), model.numLayers, p)])),
  runtime: (peft) => new MoeLoraRuntime(peft.ctx),
};

registerAdapter(MOE_LORA);

export { MoeLoraLayer, route, loadBalancingLoss, mixExperts, type MoeLoraSlot, type Routing } from './layer.js';
export { type MoeLoraConfig, type MoeLoraOptions, type ExpertShape, resolveMoeLora, expertsForLayer, DEFAULT_MOE_LORA, MOE_LORA_FIELDS, EXPERT_SHAPES } from './config.js';
