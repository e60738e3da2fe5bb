// DyLoRA (Valipour et al. 2023) as LoRA's runtime: each training forward samples a rank b in [1, r]
// (a seeded hash of the step, so a resumed run draws the same ranks) and the layers train the nested
// truncation; outside training a chosen rank (default: the full one) runs without retraining.
import type { AdapterContext, MethodRuntime } from '../types.js';
import type { PeftModel } from '../peft-model.js';
import type { LoraConfig } from './config.js';
import type { LoraSlot } from './layer.js';

function hashSeed(seed: number, step: number): number {
  let x = (seed ^ Math.imul(step + 1, 0x9e3779b1)) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b) >>> 0;
  return (x ^ (x >>> 13)) >>> 0;
}

export class LoraRuntime implements MethodRuntime {
  /** Seeds the per-step rank draws. */
  dyloraSeed = 0;
  /** Training forwards so far (the draw counter; saved in checkpoints for an exact resume). */
  dyloraStep = 0;
  constructor(private readonly ctx: AdapterContext, private readonly configs: () => Iterable<LoraConfig>) {}

  beforeForward(training: boolean): void {
    const slot: LoraSlot = {};
    if (training) {
      const ranks = [...this.configs()].filter((c) => c.dylora).map((c) => c.r);
      if (ranks.length) slot.dyloraRank = 1 + (hashSeed(this.dyloraSeed, this.dyloraStep++) % Math.max(...ranks));
    }
    this.ctx.slots.LORA = slot;
  }
  saveState(): Record<string, unknown> {
    return { dyloraStep: this.dyloraStep, dyloraSeed: this.dyloraSeed };
  }
  loadState(s: Record<string, unknown>): void {
    if (typeof s.dyloraStep === 'number') this.dyloraStep = s.dyloraStep;
    if (typeof s.dyloraSeed === 'number') this.dyloraSeed = s.dyloraSeed;
  }
}

/** The LoRA runtime of a PeftModel (null before its first LoRA adapter). */
export function loraRuntime(peft: PeftModel): LoraRuntime | null {
  return peft.runtime<LoraRuntime>('LORA');
}

/** DyLoRA: the rank to run at outside training (any b <= r, no retraining); null: the full rank. */
export function setDyloraRank(peft: PeftModel, rank: number | null): void {
  for (const [, l] of peft.tunerLayers()) if (l.peftType === 'LORA') (l as unknown as { dyloraEvalRank: number | null }).dyloraEvalRank = rank;
  peft.ctx.version++;
}
