// The prompt-learning AdapterPart: the model's `prompt_encoder` (PEFT's PeftModel.prompt_encoder, a
// ModuleDict of one encoder per adapter name). It installs the model hook of its kind (prompt: virtual
// token embeddings; prefix: per-layer keys/values) and answers it with the one active adapter.
// As PEFT, one prompt-learning method per model and one adapter applied at a time; the tensors saved
// are PEFT's `prompt_embeddings` (the encoder's output), and a loaded adapter keeps only them.
// Shapes: B batch, P virtual tokens, C hidden, Hkv key/value heads, D head dim.
import { Module } from '../../nn/module.js';
import { computeDtype } from '../../nn/layers.js';
import { noGrad, tidy, type Tensor, type DType } from '../../tensor/index.js';
import type { PretrainedModel } from '../../models/types.js';
import type { PrefixHook, PromptHook } from '../../models/hooks.js';
import type { AdapterContext, AdapterPart } from '../types.js';
import type { AnyPromptConfig, PromptKind } from './config.js';
import { PrefixEncoder, type PromptEncoderBase } from './encoders.js';

/** Where the part sits in the model, and PEFT's key of its saved tensor. */
export const PART_PATH = 'prompt_encoder';
export const STATE_KEY = 'prompt_embeddings';

export class PromptEncoderPart extends Module implements AdapterPart {
  readonly isAdapterPart = true as const;
  readonly mergedAdapters: readonly string[] = [];
  private readonly encoders = new Map<string, { config: AnyPromptConfig; encoder: PromptEncoderBase }>();
  private installed: (() => unknown) | null = null;
  /** The activations' dtype (prompt embeddings and prefixes are cast to it, as PEFT's .to(base_model.dtype)). */
  private readonly actDtype: DType;

  constructor(readonly peftType: PromptKind, private readonly ctx: AdapterContext, model: PretrainedModel) {
    super();
    this.actDtype = computeDtype(model.dtype);
  }

  hasAdapter(name: string): boolean { return this.encoders.has(name); }
  adapterNames(): string[] { return [...this.encoders.keys()]; }
  encoder(name: string): PromptEncoderBase {
    const e = this.encoders.get(name);
    if (!e) throw new Error(`prompt_encoder has no adapter "${name}" (have: ${this.adapterNames().join(', ') || 'none'})`);
    return e.encoder;
  }

  addAdapter(name: string, config: AnyPromptConfig, encoder: PromptEncoderBase): void {
    if (this.encoders.has(name)) throw new Error(`adapter "${name}" already exists on ${PART_PATH}`);
    this.encoders.set(name, { config, encoder });
    this.module(name, encoder);
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    const e = this.encoders.get(name);
    if (!e) return;
    this.encoders.delete(name);
    this.removeModule(name);
    e.encoder.dispose();
    this.ctx.version++;
  }

  /** Installs the hook of this kind on the model; another prompt-learning method's hook is an error. */
  install(model: PretrainedModel): void {
    const slot = this.peftType === 'PREFIX_TUNING' ? 'prefix' : 'prompt';
    if (model.hooks[slot]) throw new Error(`${this.peftType}: the model's ${slot} hook is already taken by another adapter method`);
    if (slot === 'prefix') {
      const f = () => this.prefixHook();
      model.hooks.prefix = f;
      this.installed = f;
    } else {
      const f = () => this.promptHook();
      model.hooks.prompt = f;
      this.installed = f;
    }
  }

  detach(model: PretrainedModel): void {
    if (model.hooks.prompt === this.installed) delete model.hooks.prompt;
    if (model.hooks.prefix === this.installed) delete model.hooks.prefix;
    this.installed = null;
  }

  /** The one active adapter of this part, or null (disabled, none active). PEFT applies one. */
  private activeOne(): { name: string; config: AnyPromptConfig; encoder: PromptEncoderBase } | null {
    if (this.ctx.disabled) return null;
    const rows = this.ctx.rows;
    if (rows && rows.order.some((n) => this.encoders.has(n))) {
      throw new Error(`${this.peftType} adapters cannot be mixed per row of a batch (adapterNames), as in PEFT; run one adapter per batch`);
    }
    const names = this.ctx.active.filter((n) => this.encoders.has(n));
    if (names.length === 0) return null;
    if (names.length > 1) throw new Error(`prompt-learning adapters ${names.map((n) => `"${n}"`).join(' and ')} are active at once; PEFT applies one: activate one of them`);
    const e = this.encoders.get(names[0]!)!;
    return { name: names[0]!, ...e };
  }

  private promptHook(): PromptHook | null {
    const a = this.activeOne();
    if (!a) return null;
    const enc = a.encoder;
    const dt = this.actDtype;
    return {
      length: a.config.numVirtualTokens,
      embeds: (batch) => tidy(() => {
        const p = enc.output();  // (P, C) float32
        return (p.dtype === dt ? p : p.to(dt)).unsqueeze(0).expand(batch, -1, -1);  // (B, P, C)
      }),
    };
  }

  private prefixHook(): PrefixHook | null {
    const a = this.activeOne();
    if (!a) return null;
    const enc = a.encoder as PrefixEncoder;
    const p = a.config.numVirtualTokens;
    const h = enc.heads;
    const dt = this.actDtype;
    return {
      length: p,
      kv: (layer, batch) => tidy(() => {
        if (!(layer >= 0 && layer < enc.layers)) throw new Error(`prefix tuning: layer ${layer} is outside the adapter's ${enc.layers} layers`);
        let kv = enc.layerOutput(layer);  // (P, 2 * Hkv * D)
        if (kv.dtype !== dt) kv = kv.to(dt);
        const d = kv.shape[1]! / (2 * h);
        const t = kv.view(p, 2, h, d).permute(1, 2, 0, 3);  // (2, Hkv, P, D)
        const at = (i: number) => t.select(0, i).unsqueeze(0).expand(batch, -1, -1, -1);  // (B, Hkv, P, D)
        return { k: at(0), v: at(1) };
      }),
    };
  }

  /** PEFT's get_prompt_embedding_to_save: the encoder's output (P, width), a fresh float32 tensor the caller owns. */
  adapterState(name: string): Map<string, Tensor> {
    const enc = this.encoder(name);
    return new Map([[STATE_KEY, noGrad(() => tidy(() => enc.output().detach().clone()))]]);
  }

  /**
   * PEFT's _load_adapter_state_dict: the saved embeddings fill the encoder's embedding. The adapter must
   * have been added in inference mode (its encoder is only that embedding), as PEFT loads them.
   */
  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    const enc = this.encoder(name);
    const extra = [...state.keys()].filter((k) => k !== STATE_KEY);
    if (extra.length) throw new Error(`${path}: unexpected tensor(s) ${extra.map((k) => `"${k}"`).join(', ')} for ${this.peftType} adapter "${name}" (PEFT saves only "${STATE_KEY}")`);
    const t = state.get(STATE_KEY);
    if (!t) throw new Error(`${path}: the adapter file has no "${STATE_KEY}" for ${this.peftType} adapter "${name}"`);
    enc.load(t, `${path}.${STATE_KEY}`);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    return this.encoder(name).parameters();
  }

  merge(_names: string[]): void {
    throw new Error('prompt learning adapters are not mergeable (their virtual tokens are not a change of weights)');
  }
  unmerge(): void {}
}

export function isPromptEncoderPart(m: Module | null): m is PromptEncoderPart {
  return m instanceof PromptEncoderPart;
}
