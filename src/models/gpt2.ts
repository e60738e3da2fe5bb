// GPT-2 (model_type "gpt2"), following transformers/models/gpt2/modeling_gpt2.py.
// Shapes: B batch, T new tokens, S keys (past + new), C n_embd, H heads, D = C / H, V vocab, L labels.
// Conv1D layers keep HF's [in, out] weight layout.
import { Module, ModuleList } from '../nn/module.js';
import { Conv1D, Embedding, LayerNorm, Linear, Dropout } from '../nn/layers.js';
import { activation, type Activation } from '../nn/activations.js';
import { attentionAllowed, scaledDotProductAttention, positionIdsFromMask, positionRange } from '../nn/attention.js';
import { initWeights } from '../nn/init.js';
import { TorchError, cat, type Tensor, type DType } from '../tensor/index.js';
import { Fields, ConfigError, numLabelsOf } from './config.js';
import { lmHeadOutput, lastTokenOutput } from './heads.js';
import type { KVStore } from './cache.js';
import { planVirtual, withPrefix, residualSite, type ModelHooks, type PrefixHook } from './hooks.js';
import { runSegments, type Segments, type ModelSegments } from './segments.js';
import type { ModelInput, ModelOutput, PretrainedModel, RawConfig, Task, ModelBuildOptions } from './types.js';

export interface GPT2Config {
  vocabSize: number;
  nPositions: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nInner: number;
  activation: string;
  eps: number;
  residPdrop: number;
  embdPdrop: number;
  attnPdrop: number;
  scaleAttnWeights: boolean;
  scaleAttnByInverseLayerIdx: boolean;
  tieWordEmbeddings: boolean;
  padTokenId: number | null;
  initializerRange: number;
}

export function parseGPT2Config(raw: RawConfig): GPT2Config {
  const f = new Fields(raw, 'gpt2');
  if (f.bool('add_cross_attention', false)) throw new ConfigError('config.json (gpt2): add_cross_attention is not supported');
  const nEmbd = f.int('n_embd');
  const nHead = f.int('n_head');
  f.divisible('n_embd', nEmbd, 'n_head', nHead);
  return {
    vocabSize: f.int('vocab_size'),
    nPositions: f.int('n_positions', 1024),
    nEmbd,
    nLayer: f.int('n_layer'),
    nHead,
    nInner: f.optInt('n_inner') ?? 4 * nEmbd,
    activation: f.str('activation_function', 'gelu_new'),
    eps: f.num('layer_norm_epsilon', 1e-5, { min: 0 }),
    residPdrop: f.num('resid_pdrop', 0.1, { min: 0, max: 1 }),
    embdPdrop: f.num('embd_pdrop', 0.1, { min: 0, max: 1 }),
    attnPdrop: f.num('attn_pdrop', 0.1, { min: 0, max: 1 }),
    scaleAttnWeights: f.bool('scale_attn_weights', true),
    scaleAttnByInverseLayerIdx: f.bool('scale_attn_by_inverse_layer_idx', false),
    tieWordEmbeddings: f.bool('tie_word_embeddings', true),
    padTokenId: f.optInt('pad_token_id'),
    initializerRange: f.num('initializer_range', 0.02, { min: 0 }),
  };
}

export class GPT2Attention extends Module {
  c_attn: Conv1D;
  c_proj: Conv1D;
  readonly attn_dropout: Dropout;
  readonly resid_dropout: Dropout;
  private readonly headDim: number;
  private readonly scale: number;

  constructor(readonly cfg: GPT2Config, readonly layerIdx: number, dtype: DType) {
    super();
    this.c_attn = this.module('c_attn', new Conv1D(cfg.nEmbd, 3 * cfg.nEmbd, { dtype }));
    this.c_proj = this.module('c_proj', new Conv1D(cfg.nEmbd, cfg.nEmbd, { dtype }));
    this.attn_dropout = this.module('attn_dropout', new Dropout(cfg.attnPdrop));
    this.resid_dropout = this.module('resid_dropout', new Dropout(cfg.residPdrop));
    this.headDim = cfg.nEmbd / cfg.nHead;
    let s = cfg.scaleAttnWeights ? 1 / Math.sqrt(this.headDim) : 1;
    if (cfg.scaleAttnByInverseLayerIdx) s /= layerIdx + 1;
    this.scale = s;
  }

  forward(x: Tensor, allowed: Tensor, cache: KVStore | null, prefix: PrefixHook | null = null): Tensor {
    const [b, t, c] = x.shape as [number, number, number];
    const h = this.cfg.nHead;
    const d = this.headDim;
    const [q0, k0, v0] = this.c_attn.forward(x).split(c, 2);  // 3 × (B, T, C)
    const heads = (y: Tensor) => y.view(b, t, h, d).transpose(1, 2);  // (B, H, T, D)
    let k = heads(k0!);
    let v = heads(v0!);
    if (cache) ({ k, v } = cache.update(this.layerIdx, k, v));  // (B, H, S, D)
    ({ k, v } = withPrefix(prefix, this.layerIdx, k, v));  // prefix tuning: (B, H, P + S, D)
    let y: Tensor;
    if (this.training && this.cfg.attnPdrop > 0) {
      // Dropout sits on the attention probabilities, so spell the product out in training.
      let scores = heads(q0!).matmul(k.transpose(-2, -1)).mul(this.scale);  // (B, H, T, S)
      scores = scores.maskedFill(allowed.logicalNot(), -3.4028234663852886e38);
      y = this.attn_dropout.forward(scores.softmax(-1)).matmul(v);
    } else {
      y = scaledDotProductAttention(heads(q0!), k, v, allowed, this.scale);  // (B, H, T, D)
    }
    y = y.transpose(1, 2).reshape(b, t, c);  // (B, T, C)
    return this.resid_dropout.forward(this.c_proj.forward(y));
  }
}

export class GPT2MLP extends Module {
  c_fc: Conv1D;
  c_proj: Conv1D;
  readonly dropout: Dropout;
  private readonly act: Activation;
  constructor(cfg: GPT2Config, dtype: DType) {
    super();
    this.c_fc = this.module('c_fc', new Conv1D(cfg.nEmbd, cfg.nInner, { dtype }));
    this.c_proj = this.module('c_proj', new Conv1D(cfg.nInner, cfg.nEmbd, { dtype }));
    this.dropout = this.module('dropout', new Dropout(cfg.residPdrop));
    this.act = activation(cfg.activation);
  }
  forward(x: Tensor): Tensor {
    return this.dropout.forward(this.c_proj.forward(this.act(this.c_fc.forward(x))));  // (B, T, C)
  }
}

export class GPT2Block extends Module {
  ln_1: LayerNorm;
  attn: GPT2Attention;
  ln_2: LayerNorm;
  mlp: GPT2MLP;
  constructor(cfg: GPT2Config, layerIdx: number, dtype: DType) {
    super();
    this.ln_1 = this.module('ln_1', new LayerNorm(cfg.nEmbd, cfg.eps, { dtype }));
    this.attn = this.module('attn', new GPT2Attention(cfg, layerIdx, dtype));
    this.ln_2 = this.module('ln_2', new LayerNorm(cfg.nEmbd, cfg.eps, { dtype }));
    this.mlp = this.module('mlp', new GPT2MLP(cfg, dtype));
  }
  forward(x: Tensor, allowed: Tensor, cache: KVStore | null, prefix: PrefixHook | null = null): Tensor {
    const a = residualSite(this, 'attention', this.attn.forward(this.ln_1.forward(x), allowed, cache, prefix), x, null);  // (B, T, C)
    return residualSite(this, 'output', this.mlp.forward(this.ln_2.forward(a)), a, null);
  }
}

export class GPT2Model extends Module {
  wte: Embedding;
  wpe: Embedding;
  readonly drop: Dropout;
  h: ModuleList<GPT2Block>;
  ln_f: LayerNorm;
  constructor(readonly cfg: GPT2Config, dtype: DType) {
    super();
    this.wte = this.module('wte', new Embedding(cfg.vocabSize, cfg.nEmbd, { dtype }));
    this.wpe = this.module('wpe', new Embedding(cfg.nPositions, cfg.nEmbd, { dtype }));
    this.drop = this.module('drop', new Dropout(cfg.embdPdrop));
    this.h = this.module('h', new ModuleList(Array.from({ length: cfg.nLayer }, (_, i) => new GPT2Block(cfg, i, dtype))));
    this.ln_f = this.module('ln_f', new LayerNorm(cfg.nEmbd, cfg.eps, { dtype }));
  }

  segments(input: ModelInput, hooks?: ModelHooks): Segments {
    const ids = input.inputIds;  // (B, T)
    const [b, t] = ids.shape as [number, number];
    const cache = input.cache ?? null;
    // Virtual tokens (prompt/prefix tuning) come before the caller's positions.
    const v = planVirtual(hooks, b, t, input.attentionMask ?? null, cache ? cache.length : 0, ids.device);
    const { past, queries: q, mask } = v;
    if (past + q > this.cfg.nPositions) {
      throw new TorchError('gpt2', [`${past + q} positions`], `sequence of ${past + q} positions is longer than n_positions (${this.cfg.nPositions})`);
    }
    const pos = input.positionIds ?? (mask ? positionIdsFromMask(mask, past) : positionRange(q, past, ids.device));  // (B|1, Q)
    const allowed = attentionAllowed({ attentionMask: mask, batch: b, queries: q, keys: past + q, causal: true, past, device: ids.device });
    const embOut = hooks?.embeddingOutput?.() ?? null;
    return {
      embed: () => {
        let e = this.wte.forward(ids);  // (B, T, C)
        if (v.prompt) e = cat([v.prompt.to(e.dtype), e], 1);  // (B, P + T, C)
        const d = this.drop.forward(e.add(this.wpe.forward(pos)));
        return embOut ? embOut(d) : d;  // invertible adapters act after the embedding dropout (AdapterHub)
      },
      blocks: [...this.h].map((block) => (x: Tensor) => block.forward(x, allowed, cache, v.prefix)),
      final: (x) => this.ln_f.forward(v.strip(x)),  // (B, T, C)
    };
  }

  forward(input: ModelInput, hooks?: ModelHooks): Tensor {
    return runSegments(this.segments(input, hooks));
  }
}

/** GPT2LMHeadModel, GPT2ForSequenceClassification, GPT2ForTokenClassification and GPT2Model. */
export class GPT2 extends Module implements PretrainedModel {
  readonly modelType = 'gpt2';
  readonly basePrefix = 'transformer';
  readonly isDecoder = true;
  readonly cfg: GPT2Config;
  transformer: GPT2Model;
  lm_head: Linear | null = null;
  score: Linear | null = null;
  classifier: Linear | null = null;
  readonly dropout: Dropout | null = null;
  readonly hooks: ModelHooks = {};

  constructor(readonly config: RawConfig, readonly task: Task, readonly dtype: DType, numLabels?: number) {
    super();
    const cfg = (this.cfg = parseGPT2Config(config));
    this.transformer = this.module('transformer', new GPT2Model(cfg, dtype));
    const labels = numLabels ?? numLabelsOf(config);
    if (task === 'causal-lm') this.lm_head = this.module('lm_head', new Linear(cfg.nEmbd, cfg.vocabSize, { bias: false, dtype }));
    else if (task === 'sequence-classification') this.score = this.module('score', new Linear(cfg.nEmbd, labels, { bias: false, dtype }));
    else if (task === 'token-classification') {
      this.dropout = this.module('dropout', new Dropout(typeof config.classifier_dropout === 'number' ? config.classifier_dropout : 0.1));
      this.classifier = this.module('classifier', new Linear(cfg.nEmbd, labels, { dtype }));
    } else if (task !== 'base') throw new ConfigError(`gpt2 has no ${task} head`);
  }

  get numLayers(): number {
    return this.cfg.nLayer;
  }

  forward(input: ModelInput): ModelOutput {
    return this.head(this.transformer.forward(input, this.hooks), input);
  }

  segments(input: ModelInput): ModelSegments {
    return { ...this.transformer.segments(input, this.hooks), head: (hidden) => this.head(hidden, input) };
  }

  private head(hidden: Tensor, input: ModelInput): ModelOutput {
    if (this.lm_head) return lmHeadOutput(this.lm_head, hidden, input);
    if (this.score) return lastTokenOutput(this.score, hidden, input, this.cfg.padTokenId);
    if (this.classifier) return { logits: this.classifier.forward(this.dropout!.forward(hidden)), hiddenStates: hidden };
    return { logits: hidden, hiddenStates: hidden };
  }

  lmHeadWeight(): Tensor | null {
    return this.lm_head instanceof Linear && this.lm_head.bias === null ? this.lm_head.weight : null;
  }
  tiedParameters(): Map<string, string> {
    return this.lm_head && this.cfg.tieWordEmbeddings ? new Map([['lm_head.weight', 'transformer.wte.weight']]) : new Map();
  }
  isHeadParameter(name: string): boolean {
    return /^(score|classifier|lm_head)\./.test(name);
  }
  isIgnoredKey(key: string): boolean {
    if (/(^|\.)attn\.(bias|masked_bias)$/.test(key)) return true;
    // Heads of other tasks in the checkpoint (HF drops them with a warning).
    return (!this.lm_head && /^lm_head\./.test(key)) || (!this.score && /^score\./.test(key)) || (!this.classifier && /^classifier\./.test(key));
  }
  initWeights(seed: number, only?: (path: string) => boolean): void {
    const cfg = this.cfg;
    initWeights(this, { std: cfg.initializerRange, seed, only, stdFor: (p) => (p.endsWith('c_proj.weight') ? cfg.initializerRange / Math.sqrt(2 * cfg.nLayer) : undefined) });
  }
}

export function buildGPT2(config: RawConfig, o: ModelBuildOptions): GPT2 {
  return new GPT2(config, o.task, o.dtype, o.numLabels);
}
