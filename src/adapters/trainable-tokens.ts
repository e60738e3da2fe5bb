// trainable_token_indices (PEFT's TrainableTokensWrapper / TrainableTokensLayer): chosen rows of an
// embedding are trained, per adapter, as `trainable_tokens_delta` (n, C), which REPLACES those rows
// of the frozen weight (W.index_copy(0, indices, delta)). When the LM head is tied to the embedding,
// the head gets a tied wrapper that uses the same rows, so the output side sees them too. Saved as
// `<embedding path>.token_adapter.trainable_tokens_delta`; the tied head saves nothing.
// Shapes: V vocabulary, C channels, n trained tokens.
import { Module, Container } from '../nn/module.js';
import { Embedding, Linear, computeDtype } from '../nn/layers.js';
import { embedding, linear, noGrad, tidy, tensor, cat, zeros, ones, Tensor } from '../tensor/index.js';
import type { AdapterContext } from './types.js';

/** Holds the base layer and the per-adapter rows (PEFT's module names, so saved keys match). */
export class TokenAdapter extends Module {
  readonly base_layer: Embedding | Linear;
  readonly trainable_tokens_delta = this.module('trainable_tokens_delta', new Container());
  readonly indices = new Map<string, number[]>();
  constructor(base: Embedding | Linear) {
    super();
    this.base_layer = this.module('base_layer', base);
  }
  delta(name: string): Tensor { return this.trainable_tokens_delta.getParameter(name); }  // (n, C)

  /** The weight with every named adapter's rows written in (later adapters win on overlaps). */
  weightWith(names: string[]): Tensor {
    let W = this.base_layer.weight;  // (V, C)
    const V = W.shape[0]!;
    for (const n of names) {
      const idx = this.indices.get(n)!;
      // index_copy as a differentiable product: W * keep + S @ delta, S (V, n) one-hot rows.
      const keepRows = ones([V, 1], { dtype: W.dtype, device: W.device });
      const S = zeros([V, idx.length], { dtype: W.dtype, device: W.device });
      noGrad(() => idx.forEach((row, j) => {
        keepRows.narrow(0, row, 1).fill_(0);
        S.narrow(0, row, 1).narrow(1, j, 1).fill_(1);
      }));
      W = W.mul(keepRows).add(S.matmul(this.delta(n).to(W.dtype)));
    }
    return W;
  }
}

export class TrainableTokens extends Module {
  readonly isTrainableTokens = true as const;
  /** Absent on a tied head, which reads the rows of `source`. */
  readonly token_adapter: TokenAdapter;
  constructor(base: Embedding | Linear, private readonly ctx: AdapterContext, readonly source: TrainableTokens | null = null) {
    super();
    // A tied head keeps its own base layer (the same weight tensor) but no deltas.
    this.token_adapter = this.module('token_adapter', new TokenAdapter(base));
  }
  get isTied(): boolean { return this.source !== null; }
  private get rows(): TokenAdapter { return (this.source ?? this).token_adapter; }
  get baseLayer(): Embedding | Linear { return this.token_adapter.base_layer; }

  addAdapter(name: string, indices: number[]): void {
    if (this.source) return;
    const W = this.baseLayer.weight;
    const V = W.shape[0]!;
    for (const i of indices) if (!(Number.isInteger(i) && i >= 0 && i < V)) throw new Error(`trainable_token_indices: ${i} is not a token id of this ${V}-token embedding`);
    this.token_adapter.indices.set(name, [...indices]);
    // PEFT starts the rows at their current values.
    const init = noGrad(() => tidy(() => W.indexSelect(0, tensor(indices, { dtype: 'int64', device: W.device })).to('float32')));
    this.token_adapter.trainable_tokens_delta.addParam(name, init, true);
  }
  hasAdapter(name: string): boolean { return this.rows.indices.has(name); }
  deleteAdapter(name: string): void {
    if (this.source || !this.hasAdapter(name)) return;
    this.token_adapter.trainable_tokens_delta.removeParam(name);
    this.token_adapter.indices.delete(name);
  }
  adapterParameters(name: string): Tensor[] {
    return !this.source && this.hasAdapter(name) ? [this.token_adapter.delta(name)] : [];
  }
  /** Saved tensors of an adapter, keyed relative to the wrapper (none for a tied head). */
  adapterState(name: string): Map<string, Tensor> {
    return this.source || !this.hasAdapter(name) ? new Map() : new Map([['token_adapter.trainable_tokens_delta', this.token_adapter.delta(name)]]);
  }
  loadDelta(name: string, t: Tensor, path: string): void {
    const want = [this.token_adapter.indices.get(name)!.length, this.baseLayer.weight.shape[1]!];
    if (t.shape.join() !== want.join()) throw new Error(`${path}.token_adapter.trainable_tokens_delta: the adapter has shape [${t.shape.join(', ')}] but trainable_token_indices needs [${want.join(', ')}]`);
    noGrad(() => this.token_adapter.trainable_tokens_delta.setParameter(name, t.to('float32', this.baseLayer.weight.device), true));
  }

  private activeNames(): string[] {
    return this.ctx.disabled ? [] : this.ctx.active.filter((n) => this.hasAdapter(n));
  }

  private run(x: Tensor, names: string[]): Tensor {
    const base = this.baseLayer;
    if (!names.length) return base.forward(x);
    const W = this.rows.weightWith(names);
    if (base instanceof Linear) return linear(x, W.to(x.dtype));  // a tied head (no bias)
    const e = embedding(W, x);  // x.shape + (C)
    const out = computeDtype(base.weight.dtype);
    return e.dtype === out ? e : e.to(out);
  }

  forward(x: Tensor): Tensor {
    const rows = this.ctx.rows;
    if (!rows || this.ctx.disabled) return this.run(x, this.activeNames());
    // Mixed batch (PEFT's _mixed_batch_forward): each row with its adapter's rows, base rows plain.
    const groups = new Map<string | null, number[]>();
    rows.names.forEach((n, i) => {
      const key = n !== null && this.hasAdapter(n) ? n : null;
      groups.set(key, [...(groups.get(key) ?? []), i]);
    });
    return tidy(() => {
      const outs: Tensor[] = [];
      const order: number[] = [];
      for (const [n, idx] of groups) {
        outs.push(this.run(x.indexSelect(0, tensor(idx, { dtype: 'int64', device: x.device })), n === null ? [] : [n]));
        order.push(...idx);
      }
      const inverse = new Array<number>(order.length);
      order.forEach((row, j) => { inverse[row] = j; });
      return cat(outs, 0).indexSelect(0, tensor(inverse, { dtype: 'int64', device: x.device }));
    });
  }

  /** The base layer with the active adapters' rows written into its weight (mergeAndUnload). */
  unload(names: string[]): Embedding | Linear {
    const base = this.baseLayer;
    const act = names.filter((n) => this.hasAdapter(n));
    if (act.length && !this.source) noGrad(() => base.setParameter('weight', tidy(() => this.rows.weightWith(act)), false));
    return base;
  }
}

export function isTrainableTokens(m: Module): m is TrainableTokens {
  return (m as unknown as Partial<TrainableTokens>).isTrainableTokens === true;
}
