// Poly / MHR (PEFT's POLY): one registerAdapter call (convention 3), PEFT's file format exactly
// (poly_lora_A, poly_lora_B, poly_router.module_logits). PEFT passes `task_ids` to forward; adapterkit
// passes them through the contract's per-forward slot: withTaskIds(peft, taskIds, fn).
import { registerAdapter } from '../registry.js';
import { isLinearLayer } from '../../nn/layers.js';
import type { Module } from '../../nn/module.js';
import { tensor, type Tensor } from '../../tensor/index.js';
import { DEFAULT_QV_TARGETS } from '../targets.js';
import type { AdapterContext, AdapterMethod, MethodRuntime, TunerLayer } from '../types.js';
import type { PeftModel } from '../peft-model.js';
import { resolvePoly, polyFromJson, polyToJson, type PolyConfig } from './config.js';
import { PolyLayer, type PolySlot } from './layer.js';

function slotOf(ctx: AdapterContext): PolySlot {
  const s = ctx.slots.POLY as PolySlot | undefined;
  if (s) return s;
  const made: PolySlot = { taskIds: null, step: 0 };
  ctx.slots.POLY = made;
  return made;
}

/** Counts training forwards, so that each draws fresh relaxed-Bernoulli noise (and a resumed run the same noise). */
export class PolyRuntime implements MethodRuntime {
  step = 0;
  constructor(private readonly peft: PeftModel) {}
  beforeForward(training: boolean): void {
    if (training) slotOf(this.peft.ctx).step = ++this.step;
  }
  saveState(): Record<string, unknown> { return { step: this.step }; }
  loadState(state: Record<string, unknown>): void {
    this.step = typeof state.step === 'number' ? state.step : 0;
    slotOf(this.peft.ctx).step = this.step;
  }
}

/**
 * Runs `fn` (forwards, generation, a training step; sync or async) with one task id per row of the
 * batch, PEFT's `task_ids`: (N) integers in [0, n_tasks). The ids stay fixed while `fn` runs, so a
 * generation keeps each row's task for every new token. Restores the previous ids afterwards.
 */
export function withTaskIds<T>(peft: PeftModel, taskIds: Tensor | readonly number[], fn: () => T): T {
  const owned = Array.isArray(taskIds) ? tensor([...(taskIds as readonly number[])], { dtype: 'int64', device: peft.model.device }) : null;
  const ids = owned ?? (taskIds as Tensor);
  if (ids.shape.length !== 1) {
    owned?.dispose();
    throw new Error(`withTaskIds: task ids must be one id per row, shape (N), got [${ids.shape.join(', ')}]`);
  }
  const slot = slotOf(peft.ctx);
  const prev = slot.taskIds ?? null;
  slot.taskIds = ids;
  const restore = () => {
    slot.taskIds = prev;
    owned?.dispose();
  };
  let out: T;
  try {
    out = fn();
  } catch (e) {
    restore();
    throw e;
  }
  if (out instanceof Promise) return out.finally(restore) as T;
  restore();
  return out;
}

export const POLY: AdapterMethod<PolyConfig> = {
  peftType: 'POLY',
  names: ['poly', 'mhr'],
  // MHR (Caccia et al. 2022): the same router with the LoRAs split into heads.
  presets: { mhr: { nSplits: 4 } },
  cliFlags: { r: 'r', tasks: 'nTasks', skills: 'nSkills', splits: 'nSplits' },
  summary: 'Poly / MHR (Ponti et al. 2022; Caccia et al. 2022): per-task routing over an inventory of LoRA skills (trains skills and router; needs task ids: withTaskIds)',
  capabilities: () => ({ mergeable: false, mixedBatch: false, kvCache: true, composable: false }),
  fromJson: polyFromJson,
  toJson: polyToJson,
  resolve: resolvePoly,
  // PEFT: TRANSFORMERS_MODELS_TO_POLY_TARGET_MODULES_MAPPING is LoRA's.
  defaultTargets: (modelType) => DEFAULT_QV_TARGETS[modelType] ?? null,
  // PEFT wraps nn.Linear only; GPT-2's Conv1D is taken too (the update never reads the base weight's layout).
  canWrap: (m: Module) => isLinearLayer(m),
  wrap: (base, ctx) => {
    if (!isLinearLayer(base)) throw new Error(`Poly cannot wrap a ${base.constructor.name} (it needs a Linear or Conv1D)`);
    return new PolyLayer(base, ctx);
  },
  isTunerLayer: (m: Module): m is TunerLayer => m instanceof PolyLayer,
  runtime: (peft) => new PolyRuntime(peft),
};

registerAdapter(POLY);

export { PolyLayer, polyMixingWeights, POLY_EPS, type PolySlot } from './layer.js';
export { type PolyConfig, type PolyOptions, resolvePoly, DEFAULT_POLY, POLY_FIELDS } from './config.js';
