// AdapterFusion (Pfeiffer et al. 2021) as AdapterHub's BertFusion (adapters 1.2.0,
// src/adapters/methods/modeling.py) and its config (configuration/adapter_fusion_config.py).
// One BertFusion per residual site and fusion name, at `<site>.adapter_fusion_layer.<name>`
// (AdapterHub's BottleneckLayer.adapter_fusion_layer ModuleDict), so the state-dict keys are
// `…output_adapters.adapter_fusion_layer.a,b.query.weight`.
//   query (B,T,C), key = value = the fused adapters' up-projections (B,T,K,C), residual (B,T,C):
//   residual_before: value (and key: the same tensor, added in place) += residual
//   q = query(query); k = key(key); v = value(value) if value_before_softmax
//   scores (B,T,K) = q·k, dropout, softmax(scores / T);  ctx = Σ_k p_k v_k;  value after softmax if not
//   value_before_softmax;  + residual unless residual_before.  T decays by T/1000 per forward to 1.
import { Module, Container } from '../../nn/module.js';
import { Linear, Dropout } from '../../nn/layers.js';
import { empty, zeros, full, eye, where, tidy, keep, noGrad, type Tensor, type Device } from '../../tensor/index.js';
import { seedFor } from './init.js';

/** AdapterHub's AdapterFusionConfig fields (asdict order), snake_case as in the file. */
export interface FusionConfig {
  key: boolean;
  query: boolean;
  value: boolean;
  query_before_ln: boolean;
  regularization: boolean;
  residual_before: boolean;
  temperature: boolean;
  value_before_softmax: boolean;
  value_initialized: boolean | string;
  dropout_prob: number | null;
}

export const FUSION_FIELDS: readonly (keyof FusionConfig)[] = ['key', 'query', 'value', 'query_before_ln', 'regularization', 'residual_before', 'temperature', 'value_before_softmax', 'value_initialized', 'dropout_prob'];

/** ADAPTERFUSION_CONFIG_MAP: StaticAdapterFusionConfig and DynamicAdapterFusionConfig. */
export const FUSION_PRESETS: Readonly<Record<'static' | 'dynamic', Readonly<FusionConfig>>> = {
  static: { key: true, query: true, value: false, query_before_ln: false, regularization: false, residual_before: false, temperature: false, value_before_softmax: true, value_initialized: false, dropout_prob: null },
  dynamic: { key: true, query: true, value: true, query_before_ln: false, regularization: true, residual_before: false, temperature: false, value_before_softmax: true, value_initialized: true, dropout_prob: null },
};

/**
 * A fusion config from a preset name or an object. An object is a full config (AdapterHub's
 * from_dict needs every field); as a convenience, an object with a `preset` key ("static"/"dynamic")
 * fills the missing fields from it. Unknown keys are an error.
 */
export function resolveFusionConfig(config: 'static' | 'dynamic' | Partial<FusionConfig> & { preset?: 'static' | 'dynamic' } = 'dynamic'): FusionConfig {
  if (typeof config === 'string') {
    const p = FUSION_PRESETS[config];
    if (!p) throw new Error(`invalid AdapterFusion config identifier "${config}" (have: static, dynamic)`);
    return { ...p };
  }
  const { preset, ...rest } = config;
  for (const k of Object.keys(rest)) if (!FUSION_FIELDS.includes(k as keyof FusionConfig)) throw new Error(`AdapterFusion config: unknown field "${k}" (fields: ${FUSION_FIELDS.join(', ')})`);
  const base = preset ? FUSION_PRESETS[preset] : null;
  if (preset && !base) throw new Error(`invalid AdapterFusion preset "${preset}" (have: static, dynamic)`);
  const out = { ...(base ?? {}), ...rest } as FusionConfig;
  for (const k of FUSION_FIELDS) {
    if (!(k in out)) throw new Error(`AdapterFusion config: missing field "${k}" (give every field, or preset: "static" | "dynamic")`);
    if (k === 'dropout_prob') {
      if (out.dropout_prob !== null && !(typeof out.dropout_prob === 'number' && out.dropout_prob >= 0 && out.dropout_prob < 1)) throw new Error(`AdapterFusion config: dropout_prob must be null or in [0, 1), got ${JSON.stringify(out.dropout_prob)}`);
    } else if (k !== 'value_initialized' && typeof out[k] !== 'boolean') throw new Error(`AdapterFusion config: ${k} must be a boolean, got ${JSON.stringify(out[k])}`);
  }
  return out;
}

function linear(i: number, o: number, bias: boolean, device: Device): Linear {
  const l = new Linear(i, o, { dtype: 'float32', bias });
  noGrad(() => {
    l.setParameter('weight', zeros([o, i], { device }), true);
    if (bias) l.setParameter('bias', zeros([o], { device }), true);
  });
  return l;
}

/** AdapterHub's BertFusion. */
export class BertFusion extends Module {
  readonly query: Linear | null = null;
  readonly key: Linear | null = null;
  readonly value: Linear | null = null;
  /** Created (and saved) when none of query/key/value is set, but never used in forward (as AdapterHub). */
  readonly dense: Linear | null = null;
  private readonly drop: Dropout;
  /** Softmax temperature: 50 decaying by 0.05 per forward down to 1 when `temperature`, else 1. */
  T: number;
  private readonly reduction: number;

  constructor(readonly config: FusionConfig, dense: number, dropoutProb: number, device: Device, seed: number, key: string) {
    super();
    this.drop = this.module('dropout', new Dropout(dropoutProb));
    const c = config;
    const bert = (l: Linear, k: string) => noGrad(() => l.setParameter('weight', empty(l.weight.shape, { device }).normal_(0, 0.02, seedFor(seed, `${key}.${k}`)), true));
    if (!c.query && !c.key && !c.value) {
      // nn.Linear(dense, 1) with torch's default init: U(±1/√in) for weight and bias.
      const d = this.dense = this.module('dense', linear(dense, 1, true, device));
      const b = 1 / Math.sqrt(dense);
      noGrad(() => {
        d.setParameter('weight', empty([1, dense], { device }).uniform_(-b, b, seedFor(seed, `${key}.dense`)), true);
        d.setParameter('bias', empty([1], { device }).uniform_(-b, b, seedFor(seed, `${key}.dense.bias`)), true);
      });
    }
    if (c.query) bert(this.query = this.module('query', linear(dense, dense, true, device)), 'query');
    if (c.key) bert(this.key = this.module('key', linear(dense, dense, true, device)), 'key');
    if (c.value) {
      const v = this.value = this.module('value', linear(dense, dense, false, device));
      bert(v, 'value');
      // value_initialized: 1e-6 everywhere, 1 on the diagonal (a near-identity value matrix).
      if (c.value_initialized) noGrad(() => v.setParameter('weight', tidy(() => keep(where(eye(dense, dense, { device }).gt(0.5), 1.0, full([dense, dense], 0.000001, { dtype: 'float32', device })))), true));
    }
    this.T = c.temperature ? 50.0 : 1.0;
    this.reduction = this.T / 1000.0;
  }

  /** query (B,T,C); key/value (B,T,K,C); residual (B,T,C) -> (B,T,C). */
  forward(query: Tensor, key: Tensor, value: Tensor, residual: Tensor): Tensor {
    const c = this.config;
    if (c.residual_before) {
      // `value += residual[:, :, None, :]` in place: key is the same tensor, so it changes too.
      const same = key === value;
      value = value.add(residual.unsqueeze(2));
      if (same) key = value;
    }
    const q = this.query ? this.query.forward(query) : query;
    const k = this.key ? this.key.forward(key) : key;
    const v = this.value && c.value_before_softmax ? this.value.forward(value) : value;
    let scores = q.unsqueeze(2).matmul(k.transpose(-2, -1)).squeeze(2);  // (B,T,1,C)·(B,T,C,K) -> (B,T,K)
    scores = this.drop.forward(scores);
    const probs = (this.T === 1 ? scores : scores.div(this.T)).softmax(-1);
    this.T = Math.max(this.T - this.reduction, 1.0);
    let ctx = probs.unsqueeze(2).matmul(v).squeeze(2);  // (B,T,1,K)·(B,T,K,C) -> (B,T,C)
    if (this.value && !c.value_before_softmax) ctx = this.value.forward(ctx);
    if (!c.residual_before) ctx = ctx.add(residual);
    return ctx;
  }

  /** Distinct trainable tensors (dense included, as AdapterHub's parameters()). */
  tensors(): Tensor[] {
    return [...new Set(this.namedParameters().map(([, t]) => t))];
  }
}

/** `adapter_fusion_layer` of a site: one BertFusion per fusion name (names may contain ","). */
export class FusionLayers extends Container {
  get(name: string): BertFusion | null {
    return this.child(name) as BertFusion | null;
  }
}
