// BERT-family encoders: model_type "bert", "roberta" and "xlm-roberta", following
// transformers/models/{bert,roberta}/modeling_*.py. RoBERTa and XLM-R differ from BERT in their
// position ids (counted from padding_idx + 1 over non-pad tokens) and their heads.
// Shapes: B batch, T tokens, C hidden, H heads, D head dim, I intermediate, V vocab, L labels.
import { Module, ModuleList, Container } from '../nn/module.js';
import { replicationPlan, sharedLayerCopy } from './replicate.js';
import { Embedding, Linear, LayerNorm, Dropout } from '../nn/layers.js';
import { activation, type Activation } from '../nn/activations.js';
import { attentionAllowed, scaledDotProductAttention, positionRange } from '../nn/attention.js';
import { initWeights } from '../nn/init.js';
import { zeros, ones, cat, empty, noGrad, type Tensor, type DType } from '../tensor/index.js';
import { planVirtual, withPrefix, residualSite, type ModelHooks, type PrefixHook, type Site } from './hooks.js';
import { Fields, ConfigError, numLabelsOf } from './config.js';
import type { ModelInput, ModelOutput, PretrainedModel, RawConfig, Task, ModelBuildOptions } from './types.js';
import { runSegments, type Segments, type ModelSegments } from './segments.js';

export type BertFamily = 'bert' | 'roberta' | 'xlm-roberta';

export interface BertConfig {
  family: BertFamily;
  vocabSize: number;
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  act: string;
  hiddenDropout: number;
  attnDropout: number;
  classifierDropout: number;
  maxPositions: number;
  typeVocabSize: number;
  eps: number;
  padTokenId: number;
  initializerRange: number;
}

export function parseBertConfig(raw: RawConfig, family: BertFamily): BertConfig {
  const f = new Fields(raw, family);
  const pet = f.str('position_embedding_type', 'absolute');
  if (pet !== 'absolute') throw new ConfigError(`config.json (${family}): unsupported position_embedding_type "${pet}" (supported: absolute)`);
  if (f.bool('is_decoder', false)) throw new ConfigError(`config.json (${family}): is_decoder true is not supported`);
  const hidden = f.int('hidden_size');
  const heads = f.int('num_attention_heads');
  f.divisible('hidden_size', hidden, 'num_attention_heads', heads);
  const hiddenDropout = f.num('hidden_dropout_prob', 0.1, { min: 0, max: 1 });
  const cfg: BertConfig = {
    family,
    vocabSize: f.int('vocab_size'),
    hidden,
    layers: f.int('num_hidden_layers'),
    heads,
    intermediate: f.int('intermediate_size'),
    act: f.str('hidden_act', 'gelu'),
    hiddenDropout,
    attnDropout: f.num('attention_probs_dropout_prob', 0.1, { min: 0, max: 1 }),
    classifierDropout: f.has('classifier_dropout') ? f.num('classifier_dropout', undefined, { min: 0, max: 1 }) : hiddenDropout,
    maxPositions: f.int('max_position_embeddings', 512),
    typeVocabSize: f.int('type_vocab_size', 2),
    eps: f.num('layer_norm_eps', 1e-12, { min: 0 }),
    padTokenId: f.int('pad_token_id', family === 'bert' ? 0 : 1),
    initializerRange: f.num('initializer_range', 0.02, { min: 0 }),
  };
  activation(cfg.act);
  return cfg;
}

export class BertEmbeddings extends Module {
  word_embeddings: Embedding;
  position_embeddings: Embedding;
  token_type_embeddings: Embedding;
  LayerNorm: LayerNorm;
  readonly dropout: Dropout;
  constructor(readonly cfg: BertConfig, dtype: DType) {
    super();
    this.word_embeddings = this.module('word_embeddings', new Embedding(cfg.vocabSize, cfg.hidden, { dtype }));
    this.position_embeddings = this.module('position_embeddings', new Embedding(cfg.maxPositions, cfg.hidden, { dtype }));
    this.token_type_embeddings = this.module('token_type_embeddings', new Embedding(cfg.typeVocabSize, cfg.hidden, { dtype }));
    this.LayerNorm = this.module('LayerNorm', new LayerNorm(cfg.hidden, cfg.eps, { dtype }));
    this.dropout = this.module('dropout', new Dropout(cfg.hiddenDropout));
  }
  /**
   * `prompt` (B, P, C): virtual-token embeddings before the words (prompt tuning; their token type is
   * 0 and they take the first positions, as HF with inputs_embeds). `past`: prefix-tuning positions
   * before the first token (HF's past_key_values_length).
   */
  forward(ids: Tensor, tokenTypeIds: Tensor | null, positionIds: Tensor | null, prompt: Tensor | null = null, past = 0): Tensor {
    const [b, t] = ids.shape as [number, number];
    const n = prompt ? prompt.shape[1]! : 0;
    let pos = positionIds;
    if (!pos) {
      if (this.cfg.family === 'bert') pos = positionRange(n + t, past, ids.device);  // (1, P + T)
      else {
        // RoBERTa: padding_idx + cumulative count of non-pad tokens; pads sit at padding_idx.
        const real = ids.ne(this.cfg.padTokenId).to('int64');
        const realAll = n ? cat([ones([b, n], { dtype: 'int64', device: ids.device }), real], 1) : real;
        pos = realAll.cumsum(1).add(past).mul(realAll).add(this.cfg.padTokenId);  // (B, P + T)
      }
    }
    let types = tokenTypeIds ?? zeros(ids.shape, { dtype: 'int64', device: ids.device });
    let words = this.word_embeddings.forward(ids);  // (B, T, C)
    if (prompt) {
      words = cat([prompt.to(words.dtype), words], 1);  // (B, P + T, C)
      types = cat([zeros([b, n], { dtype: 'int64', device: ids.device }), types], 1);
    }
    const x = words.add(this.token_type_embeddings.forward(types)).add(this.position_embeddings.forward(pos));
    return this.dropout.forward(this.LayerNorm.forward(x));  // (B, P + T, C)
  }
}

class BertSelfAttention extends Module {
  query: Linear;
  key: Linear;
  value: Linear;
  readonly dropout: Dropout;
  constructor(readonly cfg: BertConfig, readonly layerIdx: number, dtype: DType) {
    super();
    this.query = this.module('query', new Linear(cfg.hidden, cfg.hidden, { dtype }));
    this.key = this.module('key', new Linear(cfg.hidden, cfg.hidden, { dtype }));
    this.value = this.module('value', new Linear(cfg.hidden, cfg.hidden, { dtype }));
    this.dropout = this.module('dropout', new Dropout(cfg.attnDropout));
  }
  forward(x: Tensor, allowed: Tensor, prefix: PrefixHook | null): Tensor {
    const [b, t, c] = x.shape as [number, number, number];
    const h = this.cfg.heads;
    const d = c / h;
    const heads = (y: Tensor) => y.view(b, t, h, d).transpose(1, 2);  // (B, H, T, D)
    const q = heads(this.query.forward(x));
    const { k, v } = withPrefix(prefix, this.layerIdx, heads(this.key.forward(x)), heads(this.value.forward(x)));  // (B, H, P + T, D)
    let y: Tensor;
    if (this.training && this.cfg.attnDropout > 0) {
      const scores = q.matmul(k.transpose(-2, -1)).mul(1 / Math.sqrt(d)).maskedFill(allowed.logicalNot(), -3.4028234663852886e38);
      y = this.dropout.forward(scores.softmax(-1)).matmul(v);
    } else {
      y = scaledDotProductAttention(q, k, v, allowed, 1 / Math.sqrt(d));  // (B, H, T, D)
    }
    return y.transpose(1, 2).reshape(b, t, c);  // (B, T, C)
  }
}

/** dense -> dropout -> LayerNorm(x + residual): BertSelfOutput and BertOutput. */
class BertResidualOutput extends Module {
  dense: Linear;
  LayerNorm: LayerNorm;
  readonly dropout: Dropout;
  constructor(cfg: BertConfig, inDim: number, dtype: DType, private readonly site: Site) {
    super();
    this.dense = this.module('dense', new Linear(inDim, cfg.hidden, { dtype }));
    this.LayerNorm = this.module('LayerNorm', new LayerNorm(cfg.hidden, cfg.eps, { dtype }));
    this.dropout = this.module('dropout', new Dropout(cfg.hiddenDropout));
  }
  forward(x: Tensor, residual: Tensor): Tensor {
    return residualSite(this, this.site, this.dropout.forward(this.dense.forward(x)), residual, this.LayerNorm);
  }
}

class BertAttention extends Module {
  self: BertSelfAttention;
  output: BertResidualOutput;
  constructor(cfg: BertConfig, layerIdx: number, dtype: DType) {
    super();
    this.self = this.module('self', new BertSelfAttention(cfg, layerIdx, dtype));
    this.output = this.module('output', new BertResidualOutput(cfg, cfg.hidden, dtype, 'attention'));
  }
  forward(x: Tensor, allowed: Tensor, prefix: PrefixHook | null): Tensor {
    return this.output.forward(this.self.forward(x, allowed, prefix), x);
  }
}

class BertIntermediate extends Module {
  dense: Linear;
  private readonly act: Activation;
  constructor(cfg: BertConfig, dtype: DType) {
    super();
    this.dense = this.module('dense', new Linear(cfg.hidden, cfg.intermediate, { dtype }));
    this.act = activation(cfg.act);
  }
  forward(x: Tensor): Tensor {
    return this.act(this.dense.forward(x));  // (B, T, I)
  }
}

export class BertLayer extends Module {
  attention: BertAttention;
  intermediate: BertIntermediate;
  output: BertResidualOutput;
  constructor(cfg: BertConfig, layerIdx: number, dtype: DType) {
    super();
    this.attention = this.module('attention', new BertAttention(cfg, layerIdx, dtype));
    this.intermediate = this.module('intermediate', new BertIntermediate(cfg, dtype));
    this.output = this.module('output', new BertResidualOutput(cfg, cfg.intermediate, dtype, 'output'));
  }
  forward(x: Tensor, allowed: Tensor, prefix: PrefixHook | null = null): Tensor {
    const a = this.attention.forward(x, allowed, prefix);  // (B, T, C)
    return this.output.forward(this.intermediate.forward(a), a);
  }
}

class BertEncoder extends Module {
  layer: ModuleList<BertLayer>;
  constructor(cfg: BertConfig, dtype: DType) {
    super();
    this.layer = this.module('layer', new ModuleList(Array.from({ length: cfg.layers }, (_, i) => new BertLayer(cfg, i, dtype))));
  }
}

class BertPooler extends Module {
  dense: Linear;
  constructor(cfg: BertConfig, dtype: DType) {
    super();
    this.dense = this.module('dense', new Linear(cfg.hidden, cfg.hidden, { dtype }));
  }
  forward(hidden: Tensor): Tensor {
    return this.dense.forward(hidden.select(1, 0)).tanh();  // (B, C) from the first token
  }
}

export class BertModel extends Module {
  embeddings: BertEmbeddings;
  encoder: BertEncoder;
  pooler: BertPooler | null = null;
  constructor(readonly cfg: BertConfig, dtype: DType, withPooler: boolean) {
    super();
    this.embeddings = this.module('embeddings', new BertEmbeddings(cfg, dtype));
    this.encoder = this.module('encoder', new BertEncoder(cfg, dtype));
    if (withPooler) this.pooler = this.module('pooler', new BertPooler(cfg, dtype));
  }
  segments(input: ModelInput, hooks?: ModelHooks): Segments {
    const ids = input.inputIds;  // (B, T)
    const [b, t] = ids.shape as [number, number];
    // Virtual tokens (prompt/prefix tuning) come before the caller's positions.
    const v = planVirtual(hooks, b, t, input.attentionMask ?? null, 0, ids.device);
    const { past, queries: q, mask } = v;
    if (past + q > this.cfg.maxPositions) throw new ConfigError(`${this.cfg.family}: ${past + q} positions exceed max_position_embeddings (${this.cfg.maxPositions})`);
    const allowed = attentionAllowed({ attentionMask: mask, batch: b, queries: q, keys: past + q, causal: false, device: ids.device });
    const embOut = hooks?.embeddingOutput?.() ?? null;
    return {
      embed: () => {
        const e = this.embeddings.forward(ids, input.tokenTypeIds ?? null, input.positionIds ?? null, v.prompt, past);  // (B, P + T, C)
        return embOut ? embOut(e) : e;
      },
      blocks: [...this.encoder.layer].map((layer) => (x: Tensor) => layer.forward(x, allowed, v.prefix)),
      final: (x) => v.strip(x),
    };
  }

  forward(input: ModelInput, hooks?: ModelHooks): Tensor {
    return runSegments(this.segments(input, hooks));  // (B, T, C)
  }
}

class BertPredictionHeadTransform extends Module {
  dense: Linear;
  LayerNorm: LayerNorm;
  constructor(cfg: BertConfig, dtype: DType) {
    super();
    this.dense = this.module('dense', new Linear(cfg.hidden, cfg.hidden, { dtype }));
    this.LayerNorm = this.module('LayerNorm', new LayerNorm(cfg.hidden, cfg.eps, { dtype }));
  }
}

/** BERT's MLM head: transform (dense, act, LayerNorm), then the tied decoder plus a bias. */
class BertLMPredictionHead extends Module {
  transform: BertPredictionHeadTransform;
  decoder: Linear;
  private readonly act: Activation;
  constructor(cfg: BertConfig, dtype: DType) {
    super();
    this.transform = this.module('transform', new BertPredictionHeadTransform(cfg, dtype));
    this.decoder = this.module('decoder', new Linear(cfg.hidden, cfg.vocabSize, { bias: false, dtype }));
    this.param('bias', empty([cfg.vocabSize], { dtype }));
    this.act = activation(cfg.act);
  }
  forward(h: Tensor): Tensor {
    const x = this.transform.LayerNorm.forward(this.act(this.transform.dense.forward(h)));
    const y = this.decoder.forward(x);  // (B, T, V)
    return y.add(this.own('bias')!.to(y.dtype));
  }
}

/** RoBERTa's MLM head (lm_head): dense, gelu, layer_norm, tied decoder plus a bias. */
class RobertaLMHead extends Module {
  dense: Linear;
  layer_norm: LayerNorm;
  decoder: Linear;
  constructor(cfg: BertConfig, dtype: DType) {
    super();
    this.dense = this.module('dense', new Linear(cfg.hidden, cfg.hidden, { dtype }));
    this.layer_norm = this.module('layer_norm', new LayerNorm(cfg.hidden, cfg.eps, { dtype }));
    this.decoder = this.module('decoder', new Linear(cfg.hidden, cfg.vocabSize, { bias: false, dtype }));
    this.param('bias', empty([cfg.vocabSize], { dtype }));
  }
  forward(h: Tensor): Tensor {
    const y = this.decoder.forward(this.layer_norm.forward(this.dense.forward(h).gelu()));  // (B, T, V)
    return y.add(this.own('bias')!.to(y.dtype));
  }
}

/** RoBERTa's sequence head: dense + tanh on the first token, then out_proj. */
class RobertaClassificationHead extends Module {
  dense: Linear;
  out_proj: Linear;
  readonly dropout: Dropout;
  constructor(cfg: BertConfig, labels: number, dtype: DType) {
    super();
    this.dense = this.module('dense', new Linear(cfg.hidden, cfg.hidden, { dtype }));
    this.out_proj = this.module('out_proj', new Linear(cfg.hidden, labels, { dtype }));
    this.dropout = this.module('dropout', new Dropout(cfg.classifierDropout));
  }
  forward(h: Tensor): Tensor {
    const x = this.dense.forward(this.dropout.forward(h.select(1, 0))).tanh();  // (B, C)
    return this.out_proj.forward(this.dropout.forward(x));  // (B, L)
  }
}

export class Bert extends Module implements PretrainedModel {
  readonly isDecoder = false;
  readonly basePrefix: string;
  readonly cfg: BertConfig;
  readonly base: BertModel;
  private readonly mlmHead: BertLMPredictionHead | RobertaLMHead | null = null;
  private readonly seqHead: RobertaClassificationHead | null = null;
  private readonly classifier: Linear | null = null;
  private readonly dropout: Dropout | null = null;
  readonly hooks: ModelHooks = {};

  constructor(readonly modelType: BertFamily, readonly config: RawConfig, readonly task: Task, readonly dtype: DType, numLabels?: number) {
    super();
    const cfg = (this.cfg = parseBertConfig(config, modelType));
    const isBert = modelType === 'bert';
    this.basePrefix = isBert ? 'bert' : 'roberta';
    const labels = numLabels ?? numLabelsOf(config);
    this.base = this.module(this.basePrefix, new BertModel(cfg, dtype, isBert && task === 'sequence-classification'));
    if (task === 'masked-lm') {
      if (isBert) {
        this.mlmHead = this.module('cls', new Container()).add('predictions', new BertLMPredictionHead(cfg, dtype));
      } else this.mlmHead = this.module('lm_head', new RobertaLMHead(cfg, dtype));
    } else if (task === 'sequence-classification' && !isBert) {
      this.seqHead = this.module('classifier', new RobertaClassificationHead(cfg, labels, dtype));
    } else if (task === 'sequence-classification' || task === 'token-classification') {
      this.dropout = this.module('dropout', new Dropout(cfg.classifierDropout));
      this.classifier = this.module('classifier', new Linear(cfg.hidden, labels, { dtype }));
    } else if (task !== 'base') throw new ConfigError(`${modelType} has no ${task} head`);
  }

  get numLayers(): number {
    return this.cfg.layers;
  }

  replicateLayers(map: readonly (readonly number[])[]): void {
    const old = [...this.base.encoder.layer];
    const plan = replicationPlan(map, old.length);
    this.base.encoder.setSubmodule('layer', new ModuleList(plan.map((i, j) => sharedLayerCopy(old[i]!, j))));
    this.cfg.layers = plan.length;
    this.config.num_hidden_layers = plan.length;
  }

  forward(input: ModelInput): ModelOutput {
    return this.head(this.base.forward(input, this.hooks));
  }

  segments(input: ModelInput): ModelSegments {
    return { ...this.base.segments(input, this.hooks), head: (hidden) => this.head(hidden) };
  }

  private head(hidden: Tensor): ModelOutput {
    let logits = hidden;
    if (this.mlmHead) logits = this.mlmHead.forward(hidden);  // (B, T, V)
    else if (this.seqHead) logits = this.seqHead.forward(hidden);  // (B, L)
    else if (this.classifier && this.task === 'sequence-classification') {
      logits = this.classifier.forward(this.dropout!.forward(this.base.pooler!.forward(hidden)));  // (B, L)
    } else if (this.classifier) logits = this.classifier.forward(this.dropout!.forward(hidden));  // (B, T, L)
    return { logits, hiddenStates: hidden };
  }

  lmHeadWeight(): Tensor | null {
    return null;
  }
  tiedParameters(): Map<string, string> {
    if (this.task !== 'masked-lm') return new Map();
    const word = `${this.basePrefix}.embeddings.word_embeddings.weight`;
    return new Map([[this.modelType === 'bert' ? 'cls.predictions.decoder.weight' : 'lm_head.decoder.weight', word]]);
  }
  isHeadParameter(name: string): boolean {
    return /^(cls|lm_head|classifier)\./.test(name) || name.startsWith(`${this.basePrefix}.pooler.`);
  }
  isIgnoredKey(key: string): boolean {
    if (/embeddings\.position_ids$/.test(key)) return true;
    // Heads of other tasks in the checkpoint (HF drops them with a warning).
    if (/^cls\.seq_relationship\./.test(key)) return true;
    if (this.task !== 'masked-lm' && /^(cls|lm_head)\./.test(key)) return true;
    if (!this.base.pooler && /(^|\.)pooler\./.test(key)) return true;
    if (!this.classifier && !this.seqHead && /^classifier\./.test(key)) return true;
    if (this.task === 'sequence-classification' && this.modelType !== 'bert' && /^classifier\.(weight|bias)$/.test(key)) return true;
    // The MLM decoder bias duplicates cls.predictions.bias / lm_head.bias in HF.
    return /^(cls\.predictions|lm_head)\.decoder\.bias$/.test(key);
  }
  initWeights(seed: number, only?: (path: string) => boolean): void {
    initWeights(this, { std: this.cfg.initializerRange, seed, only });
    noGrad(() => {
      for (const [name, t] of this.namedParameters()) if (/^(cls\.predictions|lm_head)\.bias$/.test(name) && (!only || only(name))) t.zero_();
    });
  }
}

export function buildBert(family: BertFamily) {
  return (config: RawConfig, o: ModelBuildOptions): Bert => new Bert(family, config, o.task, o.dtype, o.numLabels);
}
