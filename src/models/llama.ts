// LLaMA-style decoders: model_type "llama" (Llama 2/3, TinyLlama, SmolLM), "mistral" (sliding
// window) and "qwen2" (q/k/v biases), following transformers/models/{llama,mistral,qwen2}/modeling_*.py.
// Shapes: B batch, T new tokens, S keys (past + new), C hidden, H query heads, Hkv key/value heads,
// D head dim, I intermediate, V vocab, L labels.
import { Module, ModuleList } from '../nn/module.js';
import { Embedding, Linear, RMSNorm, computeDtype } from '../nn/layers.js';
import { replicationPlan, sharedLayerCopy } from './replicate.js';
import { activation, type Activation } from '../nn/activations.js';
import {
  attentionAllowed, scaledDotProductAttention, positionIdsFromMask, positionRange, ropeInvFreq, ropeCosSin,
  applyRope, invFreqTensor, type RopeScaling,
} from '../nn/attention.js';
import { initWeights } from '../nn/init.js';
import { keep, cat, type Tensor, type DType } from '../tensor/index.js';
import { Fields, ConfigError, numLabelsOf } from './config.js';
import { lmHeadOutput, lastTokenOutput } from './heads.js';
import type { KVStore } from './cache.js';
import { planVirtual, withPrefix, residualSite, type ModelHooks, type PrefixHook } from './hooks.js';
import { runSegments, type Segments, type ModelSegments } from './segments.js';
import type { ModelInput, ModelOutput, PretrainedModel, RawConfig, Task, ModelBuildOptions } from './types.js';

export type LlamaFamily = 'llama' | 'mistral' | 'qwen2';

export interface LlamaConfig {
  family: LlamaFamily;
  vocabSize: number;
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  act: string;
  eps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling | null;
  qkvBias: boolean;
  oBias: boolean;
  mlpBias: boolean;
  tieWordEmbeddings: boolean;
  padTokenId: number | null;
  /** Per layer: the sliding window, or null for full attention. */
  slidingWindow: (number | null)[];
  initializerRange: number;
  maxPositions: number;
}

export function parseLlamaConfig(raw: RawConfig, family: LlamaFamily): LlamaConfig {
  const f = new Fields(raw, family);
  const hidden = f.int('hidden_size');
  const heads = f.int('num_attention_heads');
  const kvHeads = f.optInt('num_key_value_heads') ?? heads;
  f.divisible('num_attention_heads', heads, 'num_key_value_heads', kvHeads);
  const headDim = f.optInt('head_dim') ?? (f.divisible('hidden_size', hidden, 'num_attention_heads', heads), hidden / heads);
  if (headDim % 2 !== 0) throw new ConfigError(`config.json (${family}): head_dim (${headDim}) must be even for rotary embeddings`);
  const layers = f.int('num_hidden_layers');
  const rs = raw.rope_scaling;
  if (rs !== undefined && rs !== null && (typeof rs !== 'object' || Array.isArray(rs))) throw new ConfigError(`config.json (${family}): rope_scaling must be an object or null`);
  let windows: (number | null)[] = new Array(layers).fill(null);
  if (family === 'mistral') {
    const w = f.optInt('sliding_window');
    windows = windows.map(() => w);
  } else if (family === 'qwen2' && f.bool('use_sliding_window', false)) {
    const w = f.int('sliding_window');
    const maxWindowLayers = f.int('max_window_layers', layers);
    windows = windows.map((_, i) => (i >= maxWindowLayers ? w : null));
  }
  const attentionBias = f.bool('attention_bias', false);
  const cfg: LlamaConfig = {
    family,
    vocabSize: f.int('vocab_size'),
    hidden,
    intermediate: f.int('intermediate_size'),
    layers,
    heads,
    kvHeads,
    headDim,
    act: f.str('hidden_act', 'silu'),
    eps: f.num('rms_norm_eps', 1e-6, { min: 0 }),
    ropeTheta: f.num('rope_theta', 10000, { above: 0 }),  // RoPE divides by powers of theta
    ropeScaling: (rs ?? null) as RopeScaling | null,
    qkvBias: family === 'qwen2' ? true : attentionBias,
    oBias: family === 'qwen2' ? false : attentionBias,
    mlpBias: family === 'llama' ? f.bool('mlp_bias', false) : false,
    tieWordEmbeddings: f.bool('tie_word_embeddings', false),
    padTokenId: f.optInt('pad_token_id'),
    slidingWindow: windows,
    initializerRange: f.num('initializer_range', 0.02, { min: 0 }),
    maxPositions: f.int('max_position_embeddings', 2048),
  };
  ropeInvFreq(headDim, cfg.ropeTheta, cfg.ropeScaling);  // validates rope_scaling now, not at first forward
  activation(cfg.act);
  return cfg;
}

interface Rope {
  cos: Tensor;  // (B, T, D)
  sin: Tensor;
}

export class LlamaAttention extends Module {
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;
  constructor(readonly cfg: LlamaConfig, readonly layerIdx: number, dtype: DType) {
    super();
    const { hidden: c, heads: h, kvHeads: hkv, headDim: d } = cfg;
    this.q_proj = this.module('q_proj', new Linear(c, h * d, { bias: cfg.qkvBias, dtype }));
    this.k_proj = this.module('k_proj', new Linear(c, hkv * d, { bias: cfg.qkvBias, dtype }));
    this.v_proj = this.module('v_proj', new Linear(c, hkv * d, { bias: cfg.qkvBias, dtype }));
    this.o_proj = this.module('o_proj', new Linear(h * d, c, { bias: cfg.oBias, dtype }));
  }
  forward(x: Tensor, rope: Rope, allowed: Tensor, cache: KVStore | null, prefix: PrefixHook | null = null): Tensor {
    const [b, t] = x.shape as [number, number, number];
    const { heads: h, kvHeads: hkv, headDim: d } = this.cfg;
    const q = applyRope(this.q_proj.forward(x).view(b, t, h, d).transpose(1, 2), rope.cos, rope.sin);  // (B, H, T, D)
    let k = applyRope(this.k_proj.forward(x).view(b, t, hkv, d).transpose(1, 2), rope.cos, rope.sin);  // (B, Hkv, T, D)
    let v = this.v_proj.forward(x).view(b, t, hkv, d).transpose(1, 2);  // (B, Hkv, T, D)
    if (cache) ({ k, v } = cache.update(this.layerIdx, k, v));  // (B, Hkv, S, D)
    ({ k, v } = withPrefix(prefix, this.layerIdx, k, v));  // prefix tuning: (B, Hkv, P + S, D), no RoPE on the prefix (as PEFT)
    const y = scaledDotProductAttention(q, k, v, allowed, 1 / Math.sqrt(d));  // (B, H, T, D)
    return this.o_proj.forward(y.transpose(1, 2).reshape(b, t, h * d));  // (B, T, C)
  }
}

export class LlamaMLP extends Module {
  gate_proj: Linear;
  up_proj: Linear;
  down_proj: Linear;
  private readonly act: Activation;
  constructor(cfg: LlamaConfig, dtype: DType) {
    super();
    this.gate_proj = this.module('gate_proj', new Linear(cfg.hidden, cfg.intermediate, { bias: cfg.mlpBias, dtype }));
    this.up_proj = this.module('up_proj', new Linear(cfg.hidden, cfg.intermediate, { bias: cfg.mlpBias, dtype }));
    this.down_proj = this.module('down_proj', new Linear(cfg.intermediate, cfg.hidden, { bias: cfg.mlpBias, dtype }));
    this.act = activation(cfg.act);
  }
  forward(x: Tensor): Tensor {
    return this.down_proj.forward(this.act(this.gate_proj.forward(x)).mul(this.up_proj.forward(x)));  // (B, T, C)
  }
}

export class LlamaDecoderLayer extends Module {
  self_attn: LlamaAttention;
  mlp: LlamaMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
  constructor(cfg: LlamaConfig, layerIdx: number, dtype: DType) {
    super();
    this.self_attn = this.module('self_attn', new LlamaAttention(cfg, layerIdx, dtype));
    this.mlp = this.module('mlp', new LlamaMLP(cfg, dtype));
    this.input_layernorm = this.module('input_layernorm', new RMSNorm(cfg.hidden, cfg.eps, { dtype }));
    this.post_attention_layernorm = this.module('post_attention_layernorm', new RMSNorm(cfg.hidden, cfg.eps, { dtype }));
  }
  forward(x: Tensor, rope: Rope, allowed: Tensor, cache: KVStore | null, prefix: PrefixHook | null = null): Tensor {
    const a = residualSite(this, 'attention', this.self_attn.forward(this.input_layernorm.forward(x), rope, allowed, cache, prefix), x, null);  // (B, T, C)
    return residualSite(this, 'output', this.mlp.forward(this.post_attention_layernorm.forward(a)), a, null);
  }
}

export class LlamaModel extends Module {
  embed_tokens: Embedding;
  layers: ModuleList<LlamaDecoderLayer>;
  norm: RMSNorm;
  private readonly invFreq: Tensor;  // (D/2)
  private readonly computeDt: DType;
  constructor(readonly cfg: LlamaConfig, dtype: DType) {
    super();
    this.computeDt = computeDtype(dtype);
    this.embed_tokens = this.module('embed_tokens', new Embedding(cfg.vocabSize, cfg.hidden, { dtype }));
    this.layers = this.module('layers', new ModuleList(Array.from({ length: cfg.layers }, (_, i) => new LlamaDecoderLayer(cfg, i, dtype))));
    this.norm = this.module('norm', new RMSNorm(cfg.hidden, cfg.eps, { dtype }));
    this.invFreq = this.buffer('inv_freq', keep(invFreqTensor(ropeInvFreq(cfg.headDim, cfg.ropeTheta, cfg.ropeScaling))));
  }

  segments(input: ModelInput, hooks?: ModelHooks): Segments {
    const ids = input.inputIds;  // (B, T)
    const [b, t] = ids.shape as [number, number];
    const cache = input.cache ?? null;
    // Virtual tokens (prompt/prefix tuning) come before the caller's positions.
    const vt = planVirtual(hooks, b, t, input.attentionMask ?? null, cache ? cache.length : 0, ids.device);
    const { past, queries: q, mask } = vt;
    const pos = input.positionIds ?? (mask ? positionIdsFromMask(mask, past) : positionRange(q, past, ids.device));  // (B|1, Q)
    const rope = ropeCosSin(pos, this.invFreq, this.computeDt);  // in the activations' dtype
    // One mask per distinct window (Qwen2 mixes full and sliding layers).
    const masks = new Map<number | null, Tensor>();
    const maskFor = (w: number | null): Tensor => {
      let m = masks.get(w);
      if (!m) {
        m = attentionAllowed({ attentionMask: mask, batch: b, queries: q, keys: past + q, causal: true, past, slidingWindow: w, device: ids.device });
        masks.set(w, m);
      }
      return m;
    };
    const embOut = hooks?.embeddingOutput?.() ?? null;
    return {
      embed: () => {
        let e = this.embed_tokens.forward(ids);  // (B, T, C)
        if (vt.prompt) e = cat([vt.prompt.to(e.dtype), e], 1);  // (B, P + T, C)
        return embOut ? embOut(e) : e;
      },
      blocks: [...this.layers].map((layer, i) => {
        const allowed = maskFor(this.cfg.slidingWindow[i] ?? null);
        return (x: Tensor) => layer.forward(x, rope, allowed, cache, vt.prefix);
      }),
      final: (x) => this.norm.forward(vt.strip(x)),  // (B, T, C)
    };
  }

  forward(input: ModelInput, hooks?: ModelHooks): Tensor {
    return runSegments(this.segments(input, hooks));
  }
}

/** *ForCausalLM, *ForSequenceClassification, *ForTokenClassification and the base *Model. */
export class Llama extends Module implements PretrainedModel {
  readonly basePrefix = 'model';
  readonly isDecoder = true;
  readonly cfg: LlamaConfig;
  model: LlamaModel;
  lm_head: Linear | null = null;
  score: Linear | null = null;
  readonly hooks: ModelHooks = {};

  constructor(readonly modelType: LlamaFamily, readonly config: RawConfig, readonly task: Task, readonly dtype: DType, numLabels?: number) {
    super();
    const cfg = (this.cfg = parseLlamaConfig(config, modelType));
    this.model = this.module('model', new LlamaModel(cfg, dtype));
    const labels = numLabels ?? numLabelsOf(config);
    if (task === 'causal-lm') this.lm_head = this.module('lm_head', new Linear(cfg.hidden, cfg.vocabSize, { bias: false, dtype }));
    else if (task === 'sequence-classification' || task === 'token-classification') {
      this.score = this.module('score', new Linear(cfg.hidden, labels, { bias: task === 'token-classification', dtype }));
    } else if (task !== 'base') throw new ConfigError(`${modelType} has no ${task} head`);
  }

  get numLayers(): number {
    return this.cfg.layers;
  }

  replicateLayers(map: readonly (readonly number[])[]): void {
    const old = [...this.model.layers];
    const plan = replicationPlan(map, old.length);
    const windows = plan.map((i) => this.cfg.slidingWindow[i] ?? null);
    this.model.setSubmodule('layers', new ModuleList(plan.map((i, j) => sharedLayerCopy(old[i]!, j))));
    this.cfg.layers = plan.length;
    this.cfg.slidingWindow = windows;
    this.config.num_hidden_layers = plan.length;
  }

  forward(input: ModelInput): ModelOutput {
    return this.head(this.model.forward(input, this.hooks), input);
  }

  segments(input: ModelInput): ModelSegments {
    return { ...this.model.segments(input, this.hooks), head: (hidden) => this.head(hidden, input) };
  }

  private head(hidden: Tensor, input: ModelInput): ModelOutput {
    if (this.lm_head) return lmHeadOutput(this.lm_head, hidden, input);
    if (this.score && this.task === 'sequence-classification') return lastTokenOutput(this.score, hidden, input, this.cfg.padTokenId);
    if (this.score) return { logits: this.score.forward(hidden), hiddenStates: hidden };  // (B, T, L)
    return { logits: hidden, hiddenStates: hidden };
  }

  lmHeadWeight(): Tensor | null {
    return this.lm_head instanceof Linear && this.lm_head.bias === null ? this.lm_head.weight : null;
  }
  tiedParameters(): Map<string, string> {
    return this.lm_head && this.cfg.tieWordEmbeddings ? new Map([['lm_head.weight', 'model.embed_tokens.weight']]) : new Map();
  }
  isHeadParameter(name: string): boolean {
    return /^(score|lm_head)\./.test(name);
  }
  isIgnoredKey(key: string): boolean {
    if (/rotary_emb\.inv_freq$/.test(key)) return true;
    // Heads of other tasks in the checkpoint (HF drops them with a warning).
    return (!this.lm_head && /^lm_head\./.test(key)) || (!this.score && /^score\./.test(key));
  }
  initWeights(seed: number, only?: (path: string) => boolean): void {
    initWeights(this, { std: this.cfg.initializerRange, seed, only });
  }
}

export function buildLlama(family: LlamaFamily) {
  return (config: RawConfig, o: ModelBuildOptions): Llama => new Llama(family, config, o.task, o.dtype, o.numLabels);
}
