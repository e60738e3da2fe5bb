// The per-adapter encoders of prompt learning, with PEFT's module names (so parameter paths read
// `prompt_encoder.<adapter>.embedding.weight`, `….mlp_head.0.weight`, `….transform.2.bias`):
//  - PromptEmbedding (prompt tuning, tuners/prompt_tuning/model.py): the prompt is embedding.weight;
//  - PTuningEncoder (P-tuning, tuners/p_tuning/model.py): embedding -> MLP (Linear, ReLU, Linear,
//    ReLU, Linear) -> the prompt;
//  - PrefixEncoder (prefix tuning, tuners/prefix_tuning/model.py): per-layer keys and values, from
//    an embedding of P x (L * 2 * Hkv * D), or an embedding (P, C) -> Linear(C, E) -> Tanh ->
//    Linear(E, L * 2 * Hkv * D) with prefix_projection.
// In inference mode (an adapter loaded from a file) every encoder is only its embedding, holding
// the saved, already computed `prompt_embeddings`, as PEFT's inference_mode.
// Parameters train in float32. Shapes: P virtual tokens, C token_dim, E/H encoder width,
// L layers, Hkv key/value heads, D head dim, B batch.
import { Module, Container } from '../../nn/module.js';
import { Embedding, Linear } from '../../nn/layers.js';
import { linear, noGrad, tensor, type Tensor, type Device } from '../../tensor/index.js';
import type { PTuningConfig, PrefixTuningConfig, PromptLearningConfig } from './config.js';

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}
/** A seed per (adapter seed, parameter name), so initialisations do not depend on construction order. */
export function seedFor(seed: number, key: string): number {
  return (seed * 1_000_003 + hash(key)) % 2 ** 31;
}

/** torch.nn.Embedding's default init: N(0, 1). */
function newEmbedding(n: number, dim: number, seed: number, key: string): Embedding {
  const e = new Embedding(n, dim, { dtype: 'float32' });
  noGrad(() => e.weight.normal_(0, 1, seedFor(seed, key)));
  return e;
}

/** torch.nn.Linear's default init: kaiming_uniform(a=√5) weight and bias, both U(-1/√in, 1/√in). */
function newLinear(inF: number, outF: number, seed: number, key: string): Linear {
  const l = new Linear(inF, outF, { dtype: 'float32' });
  const b = 1 / Math.sqrt(inF);
  noGrad(() => {
    l.weight.uniform_(-b, b, seedFor(seed, key + '.weight'));
    l.bias!.uniform_(-b, b, seedFor(seed, key + '.bias'));
  });
  return l;
}

/** What the part needs from every encoder. */
export abstract class PromptEncoderBase extends Module {
  readonly embedding: Embedding;
  protected constructor(readonly inference: boolean, rows: number, dim: number, seed: number, key: string) {
    super();
    this.embedding = this.module('embedding', newEmbedding(rows, dim, seed, `${key}.embedding`));
  }
  /** Rows P of `prompt_embeddings`. */
  get rows(): number { return this.embedding.numEmbeddings; }
  /** Width of `prompt_embeddings` (C, or L * 2 * Hkv * D for prefix tuning). */
  abstract get width(): number;
  /** PEFT's get_prompt_embedding_to_save: the encoder's output (P, width), in float32. */
  abstract output(): Tensor;
  /** Fills the embedding with saved (computed) embeddings (P, width); only in inference mode. */
  load(t: Tensor, key: string): void {
    if (!this.inference) throw new Error(`${key}: only an encoder in inference mode (a loaded adapter) takes saved prompt_embeddings`);
    const w = this.embedding.weight;
    if (t.shape.join() !== w.shape.join()) throw new Error(`${key}: the adapter has shape [${t.shape.join(', ')}] but this model needs [${w.shape.join(', ')}] (was it made for another base model or num_virtual_tokens?)`);
    noGrad(() => this.embedding.setParameter('weight', t.to('float32', w.device).clone(), w.requiresGrad));
  }
}

export class PromptEmbedding extends PromptEncoderBase {
  constructor(c: PromptLearningConfig, seed: number, key: string, init: Tensor | null) {
    super(c.inferenceMode, c.numVirtualTokens * c.numTransformerSubmodules!, c.tokenDim!, seed, key);
    // TEXT / SAMPLE_VOCAB: rows of the model's word embeddings (computed by the caller), as float32.
    if (init) noGrad(() => this.embedding.setParameter('weight', init.to('float32').clone(), true));
  }
  get width(): number { return this.embedding.dim; }
  output(): Tensor {
    return this.embedding.weight;  // (P, C)
  }
}

export class PTuningEncoder extends PromptEncoderBase {
  readonly mlp_head: Container | null = null;
  constructor(c: PTuningConfig, seed: number, key: string) {
    super(c.inferenceMode, c.numVirtualTokens * c.numTransformerSubmodules!, c.tokenDim!, seed, key);
    if (c.inferenceMode) return;
    if (c.encoderReparameterizationType === 'LSTM') {
      throw new Error('P-tuning: encoder_reparameterization_type "LSTM" is not supported by adapterkit (no LSTM op in its tensor library); use "MLP" (PEFT\'s default and recommended)');
    }
    // PEFT ignores encoder_num_layers (with a warning) and encoder_dropout for the MLP: always 3 Linear layers.
    const h = c.encoderHiddenSize!;
    const d = c.tokenDim!;
    const m = (this.mlp_head = this.module('mlp_head', new Container()));
    m.add('0', newLinear(d, h, seed, `${key}.mlp_head.0`));
    m.add('2', newLinear(h, h, seed, `${key}.mlp_head.2`));
    m.add('4', newLinear(h, d, seed, `${key}.mlp_head.4`));
  }
  get width(): number { return this.embedding.dim; }
  output(): Tensor {
    const e = this.embedding.weight;  // (P, C)
    if (!this.mlp_head) return e;
    const l = (i: string) => this.mlp_head!.getSubmodule(i) as Linear;
    return l('4').forward(l('2').forward(l('0').forward(e).relu()).relu());  // (P, C)
  }
}

export class PrefixEncoder extends PromptEncoderBase {
  readonly transform: Container | null = null;
  /** Hkv * D: the width of one layer's keys (or values). */
  private readonly kvDim: number;
  readonly heads: number;
  readonly layers: number;

  constructor(c: PrefixTuningConfig, seed: number, key: string) {
    const tok = c.tokenDim!;
    const out = c.numLayers! * 2 * tok;
    const project = c.prefixProjection && !c.inferenceMode;
    super(c.inferenceMode, c.numVirtualTokens * c.numTransformerSubmodules!, project ? tok : out, seed, key);
    this.kvDim = tok;
    this.heads = c.numAttentionHeads!;
    this.layers = c.numLayers!;
    if (project) {
      const t = (this.transform = this.module('transform', new Container()));
      t.add('0', newLinear(tok, c.encoderHiddenSize!, seed, `${key}.transform.0`));
      const last = t.add('2', newLinear(c.encoderHiddenSize!, out, seed, `${key}.transform.2`));
      if (c.initWeights === 'zero') noGrad(() => { last.weight.zero_(); last.bias!.zero_(); });
    } else if (c.initWeights === 'zero') noGrad(() => this.embedding.weight.zero_());
  }
  get width(): number { return this.layers * 2 * this.kvDim; }
  output(): Tensor {
    const e = this.embedding.weight;  // (P, C) or (P, L * 2 * Hkv * D)
    if (!this.transform) return e;
    const l = (i: string) => this.transform!.getSubmodule(i) as Linear;
    return l('2').forward(l('0').forward(e).tanh());  // (P, L * 2 * Hkv * D)
  }

  /**
   * Layer `layer`'s keys and values (P, 2 * Hkv * D): columns [2l, 2l + 2) * Hkv * D of the output,
   * PEFT's view(B, P, L * 2, Hkv, D).permute(2, 0, 3, 1, 4).split(2). With the projection only the
   * rows of the last Linear that make this layer are applied (the full output costs L times more).
   */
  layerOutput(layer: number): Tensor {
    const w = 2 * this.kvDim;
    if (!this.transform) return this.embedding.weight.narrow(1, layer * w, w);  // (P, 2 * Hkv * D)
    const first = this.transform.getSubmodule('0') as Linear;
    const last = this.transform.getSubmodule('2') as Linear;
    const h = first.forward(this.embedding.weight).tanh();  // (P, E)
    return linear(h, last.weight.narrow(0, layer * w, w), last.bias!.narrow(0, layer * w, w));  // (P, 2 * Hkv * D)
  }
}

/** Rows `ids` of a word embedding weight (V, C), as float32 (PEFT: word_embeddings(ids).detach().clone()). */
export function embeddingRows(weight: Tensor, ids: readonly number[], device: Device): Tensor {
  const idx = tensor([...ids], { dtype: 'int64', device });
  const rows = noGrad(() => weight.indexSelect(0, idx).to('float32'));  // (P, C)
  idx.dispose();
  return rows;
}
