// LoRA's transforms on save: PiSSA/CorDA adapters are written as a plain rank-2r LoRA relative to the
// ORIGINAL base (PEFT's path_initial_model_for_weight_conversion), and a DyLoRA adapter can be cut to
// its first k components as a plain rank-k LoRA.
import type { Tensor } from '../../tensor/index.js';
import type { SaveTransformArgs } from '../types.js';
import type { LoraConfig } from './config.js';
import { LoraLayer } from './layer.js';

declare module '../peft-format.js' {
  interface SaveOptions {
    /** PiSSA/CorDA: save as a rank-2r LoRA relative to the ORIGINAL base (default true), as PEFT's conversion. */
    convertToLora?: boolean;
    /** DyLoRA: save the first k components as a plain rank-k LoRA (alpha scaled to keep the update). */
    dyloraRank?: number;
  }
}

export function loraSaveTransform({ name, config, parts, json, options }: SaveTransformArgs<LoraConfig>): { states: Map<string, Map<string, Tensor>>; temps: Tensor[] } | null {
  const convert = options.convertToLora !== false;
  const k = options.dyloraRank as number | undefined;
  const cut = k !== undefined && config.dylora;
  const states = new Map<string, Map<string, Tensor>>();
  const temps: Tensor[] = [];
  let converted = false;
  for (const [path, part] of parts) {
    if (!(part instanceof LoraLayer)) continue;
    const conv = convert ? part.convertedState(name) : null;
    let state = conv ?? part.adapterState(name);
    if (conv) {
      converted = true;
      temps.push(...conv.values());
    }
    if (cut) {
      const a = state.get('lora_A.weight')!;
      if (!(k >= 1 && k <= a.shape[0]!)) throw new Error(`dyloraRank must be in [1, ${a.shape[0]}], got ${k}`);
      const c = new Map([['lora_A.weight', a.narrow(0, 0, k).contiguous()], ['lora_B.weight', state.get('lora_B.weight')!.narrow(1, 0, k).contiguous()]]);
      temps.push(...c.values());
      state = c;
    }
    states.set(path, state);
  }
  if (converted) {
    // As PEFT's save_pretrained(path_initial_model_for_weight_conversion=...): rank doubles, alpha
    // follows so that the scaling is unchanged, and the result is an ordinary LoRA.
    const f = json.use_rslora === true ? Math.SQRT2 : 2;
    json.r = (json.r as number) * 2;
    json.lora_alpha = (json.lora_alpha as number) * f;
    json.rank_pattern = Object.fromEntries(Object.entries(json.rank_pattern as Record<string, number>).map(([key, v]) => [key, v * 2]));
    json.alpha_pattern = Object.fromEntries(Object.entries(json.alpha_pattern as Record<string, number>).map(([key, v]) => [key, v * f]));
    json.init_lora_weights = true;
  }
  if (cut) {
    // A truncation keeps the full-rank scaling alpha/r, so a rank-k file carries alpha * k / r.
    const r = json.r as number;
    json.lora_alpha = ((json.lora_alpha as number) * k) / r;
    json.r = k;
    json.rank_pattern = {};
    json.alpha_pattern = {};
    delete json.adapterkit;
  }
  return converted || cut ? { states, temps } : (temps.forEach((t) => t.dispose()), null);
}
