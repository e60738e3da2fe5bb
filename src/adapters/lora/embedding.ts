// LoRA on an embedding (PEFT's lora.layer.Embedding): per adapter, A (R, V) and B (C, R) as the
// parameters `lora_embedding_A.<name>` / `lora_embedding_B.<name>` (PEFT's ParameterDict paths, saved
// as `<path>.lora_embedding_A` / `.lora_embedding_B`), and
//   y = E[ids] + (A^T[ids] @ B^T) * scaling
// i.e. each token gets a learned R-dimensional code mapped into the C channels: a task can move every
// token's embedding at R x (V + C) parameters instead of V x C. No dropout (PEFT applies none here).
// Shapes: V vocabulary, C channels, R rank, N rows, T tokens.
import { Module, Container } from '../../nn/module.js';
import type { Embedding } from '../../nn/layers.js';
import { embedding, keep, noGrad, tidy, zeros, randn, type Tensor } from '../../tensor/index.js';
import { patternValue } from '../targets.js';
import type { AdapterConfigBase, AdapterContext, TunerLayer } from '../types.js';
import type { LoraConfig } from './config.js';
import { seedFor } from './init.js';

interface EmbeddingAdapter {
  r: number;
  alpha: number;
  rslora: boolean;
}

export class LoraEmbedding extends Module implements TunerLayer {
  readonly isTunerLayer = true as const;
  readonly isAdapterPart = true as const;
  readonly peftType = 'LORA';
  readonly base_layer: Embedding;
  readonly lora_embedding_A = this.module('lora_embedding_A', new Container());
  readonly lora_embedding_B = this.module('lora_embedding_B', new Container());
  readonly adapters = new Map<string, EmbeddingAdapter>();
  private merged: string[] = [];
  private backup: Tensor | null = null;  // the base weight before the first merge (exact unmerge)

  constructor(base: Embedding, private readonly ctx: AdapterContext) {
    super();
    this.base_layer = this.module('base_layer', base);
  }

  get baseLayer(): Module { return this.base_layer; }
  /** An embedding is never a transposed (Conv1D) layer. */
  get fanInFanOut(): boolean { return false; }
  get mergedAdapters(): readonly string[] { return this.merged; }
  hasAdapter(name: string): boolean { return this.adapters.has(name); }
  A(name: string): Tensor { return this.lora_embedding_A.getParameter(name); }  // (R, V)
  B(name: string): Tensor { return this.lora_embedding_B.getParameter(name); }  // (C, R)
  scaling(name: string): number {
    const s = this.adapters.get(name)!;
    return s.rslora ? s.alpha / Math.sqrt(s.r) : s.alpha / s.r;
  }

  addAdapter(name: string, config: AdapterConfigBase, path: string, opts: { seed: number }): void {
    const c = config as LoraConfig;
    if (this.adapters.has(name)) throw new Error(`adapter "${name}" already exists on ${path}`);
    // What PEFT's Embedding LoRA has and this one does not: say so rather than train something else.
    if (c.useDora) throw new Error(`${path}: DoRA on an embedding is not supported; leave the embedding out of target_modules or set use_dora false`);
    if (c.loraBias) throw new Error(`${path}: lora_bias on an embedding is not supported (PEFT refuses it too)`);
    if (c.dylora) throw new Error(`${path}: DyLoRA on an embedding is not supported`);
    if (typeof c.initLoraWeights === 'string' && c.initLoraWeights !== 'gaussian') {
      throw new Error(`${path}: init_lora_weights "${c.initLoraWeights}" is not supported on an embedding (use true, "gaussian" or false)`);
    }
    const r = patternValue(c.rankPattern, path) ?? c.r;
    const alpha = patternValue(c.alphaPattern, path) ?? c.loraAlpha;
    const v = this.base_layer.numEmbeddings;
    const ch = this.base_layer.dim;
    const device = this.base_layer.weight.device;  // adapters live on their layer's device
    noGrad(() => {
      // PEFT (Embedding.update_layer + reset_lora_parameters): A and B start as randn; with
      // init_lora_weights true (or "gaussian") A is zeroed and B drawn from N(0, 1), so the layer starts
      // as the base.
      const init = c.initLoraWeights !== false;
      const A = init ? zeros([r, v], { device }) : randn([r, v], { seed: seedFor(opts.seed, `${path}.${name}.A`), device });
      const B = randn([ch, r], { seed: seedFor(opts.seed, `${path}.${name}.B`), device });
      this.lora_embedding_A.addParam(name, A, true);
      this.lora_embedding_B.addParam(name, B, true);
    });
    this.adapters.set(name, { r, alpha, rslora: c.useRslora });
    this.ctx.version++;
  }

  deleteAdapter(name: string): void {
    if (!this.adapters.has(name)) return;
    if (this.merged.includes(name)) throw new Error(`adapter "${name}" is merged; unmerge before deleting it`);
    this.lora_embedding_A.removeParam(name);
    this.lora_embedding_B.removeParam(name);
    this.adapters.delete(name);
    this.ctx.version++;
  }

  adapterParameters(name: string): Tensor[] {
    return this.adapters.has(name) ? [this.A(name), this.B(name)] : [];
  }

  /** scaling * (B A)^T: the change to the (V, C) embedding table, in float32. */
  deltaWeight(name: string): Tensor {
    return tidy(() => this.B(name).matmul(this.A(name)).transpose(0, 1).mul(this.scaling(name)).contiguous());
  }

  // A^T[ids] @ B^T * scaling for one adapter: (…, C) float32.
  private delta(name: string, ids: Tensor): Tensor {
    const codes = embedding(this.A(name).transpose(0, 1), ids);  // (…, R)
    return codes.matmul(this.B(name).transpose(0, 1)).mul(this.scaling(name));  // (…, C)
  }

  forward(ids: Tensor): Tensor {
    if (this.ctx.disabled) {
      if (this.merged.length) this.unmerge();
      return this.base_layer.forward(ids);
    }
    let result = this.base_layer.forward(ids);  // (N, T, C)
    if (this.ctx.rows) {
      // A mixed batch: each adapter's delta on the rows that use it (PEFT's _mixed_batch_forward).
      if (this.merged.length) throw new Error('a mixed batch cannot run while adapters are merged (as in PEFT): unmerge first');
      const { order, index } = this.ctx.rows;
      order.forEach((name, k) => {
        if (!this.adapters.has(name)) return;
        const rows = index.eq(k).to(result.dtype).view(-1, ...ids.shape.slice(1).map(() => 1), 1);  // (N, 1, 1)
        result = result.add(this.delta(name, ids).to(result.dtype).mul(rows));
      });
      return result;
    }
    if (this.merged.length) return result;  // as LoRA's Linear: a merged layer runs its base only
    for (const name of this.ctx.active) {
      if (!this.adapters.has(name)) continue;
      result = result.add(this.delta(name, ids).to(result.dtype));
    }
    return result;
  }

  merge(names: string[]): void {
    if (this.ctx.sharedBaseWeights) throw new Error('cannot merge adapters into replicated layers (layer_replication): run unmerged');
    noGrad(() => {
      for (const name of names) {
        if (!this.adapters.has(name) || this.merged.includes(name)) continue;
        const w = this.base_layer.weight;
        if (!this.backup) this.backup = keep(w.clone());
        this.base_layer.setParameter('weight', tidy(() => w.to('float32').add(this.deltaWeight(name)).to(w.dtype)), false);
        this.merged.push(name);
      }
    });
    this.ctx.version++;
  }

  unmerge(): void {
    if (!this.backup) return;
    this.base_layer.setParameter('weight', this.backup, false);
    this.backup = null;
    this.merged = [];
    this.ctx.version++;
  }

  unload(): Module {
    this.backup?.dispose();
    this.backup = null;
    for (const name of [...this.adapters.keys()]) {
      this.merged = this.merged.filter((m) => m !== name);
      this.deleteAdapter(name);
    }
    return this.base_layer;
  }

  adapterState(name: string): Map<string, Tensor> {
    return this.adapters.has(name) ? new Map([['lora_embedding_A', this.A(name)], ['lora_embedding_B', this.B(name)]]) : new Map();
  }

  loadAdapterState(name: string, state: Map<string, Tensor>, path: string): void {
    const s = this.adapters.get(name);
    if (!s) throw new Error(`no adapter "${name}" on ${path}`);
    const want = new Map<string, number[]>([['lora_embedding_A', [s.r, this.base_layer.numEmbeddings]], ['lora_embedding_B', [this.base_layer.dim, s.r]]]);
    for (const key of state.keys()) if (!want.has(key)) throw new Error(`adapter file has an unexpected key ${path}.${key} for an embedding LoRA`);
    for (const [k, shape] of want) {
      const t = state.get(k);
      if (!t) throw new Error(`adapter file has no ${path}.${k}`);
      if (t.shape.join() !== shape.join()) throw new Error(`${path}.${k}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${shape.join(', ')}] (was it made for another base model?)`);
    }
    noGrad(() => {
      const dev = this.A(name).device;
      this.lora_embedding_A.addParam(name, state.get('lora_embedding_A')!.to('float32', dev), true);
      this.lora_embedding_B.addParam(name, state.get('lora_embedding_B')!.to('float32', dev), true);
    });
    this.ctx.version++;
  }
}
