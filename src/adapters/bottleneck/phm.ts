// Compacter's parameterized hypercomplex multiplication layer (AdapterHub PHMLayer, modeling.py):
//   H = Σ_k kron(rule_k, W_k)   (I, O)    y = x H + b
// with n = phm_dim rules (n, n, n) and weights W_k (I/n, O/n), W = W_left W_right (rank-R factors) when
// factorized. The rule is shared by every layer of an adapter (held by the SharedParameters part)
// unless shared_phm_rule is false. Note H is (in, out), not nn.Linear's (out, in).
// Shapes: n phm_dim, I in, O out, R rank.
import { Module } from '../../nn/module.js';
import { noGrad, zeros, empty, tidy, type Tensor, type Device } from '../../tensor/index.js';
import type { BottleneckConfig } from './config.js';
import { seedFor } from './init.js';

/** Batched Kronecker product: a (n, p, q), b (n, r, s) -> (n, p·r, q·s), out[k, i·r+u, j·s+v] = a[k,i,j]·b[k,u,v]. */
export function batchedKron(a: Tensor, b: Tensor): Tensor {
  const [n, p, q] = a.shape as [number, number, number];
  const [, r, s] = b.shape as [number, number, number];
  return a.unsqueeze(-1).unsqueeze(-3).mul(b.unsqueeze(-2).unsqueeze(-4)).reshape(n, p * r, q * s);  // (n, p, r, q, s) -> (n, pr, qs)
}

/** torch.nn.init.xavier_normal_ on each 2-D slice t[k] (fan_in = size(1), fan_out = size(0)). */
export function xavierNormalSlices(t: Tensor, seed: number): Tensor {
  const [, fanOut, fanIn] = t.shape as [number, number, number];
  return t.normal_(0, Math.sqrt(2 / (fanIn + fanOut)), seed);
}

/** The rule tensors of one adapter: (n, n, n), or its factors (n, n, 1) and (n, 1, n). */
export function ruleShapes(c: BottleneckConfig): [string, number[]][] {
  const n = c.phmDim;
  return c.factorizedPhmRule ? [['phm_rule_left', [n, n, 1]], ['phm_rule_right', [n, 1, n]]] : [['phm_rule', [n, n, n]]];
}

/** The rule from its tensors (bmm of the factors when factorized). */
export function ruleOf(get: (name: string) => Tensor, factorized: boolean): Tensor {
  return factorized ? get('phm_rule_left').bmm(get('phm_rule_right')) : get('phm_rule');  // (n, n, n)
}

export class PHMLayer extends Module {
  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    private readonly c: BottleneckConfig,
    /** The shared rule (n, n, n) of this adapter, read at forward time; null when the layer has its own. */
    private readonly sharedRule: (() => Tensor) | null,
    device: Device,
    seed: number,
    key: string,
  ) {
    super();
    const n = c.phmDim;
    if (inFeatures % n !== 0 || outFeatures % n !== 0) {
      throw new Error(`Compacter: phm_dim ${n} must divide the layer's in (${inFeatures}) and out (${outFeatures}) features; choose a phm_dim or reduction_factor that does`);
    }
    const ip = inFeatures / n;
    const op = outFeatures / n;
    const o = { dtype: 'float32' as const, device };
    noGrad(() => {
      // AdapterHub's init_W tests `if hypercomplex_nonlinearity:` first, so any non-empty value (the
      // default "glorot-uniform" included) gives xavier_normal_ on each slice; an empty one falls through.
      const init = (t: Tensor, k: string) => {
        const s = seedFor(seed, `${key}.${k}`);
        if (c.hypercomplexNonlinearity) return xavierNormalSlices(t, s);
        return t.normal_(0, c.phmInitRange, s);
      };
      if (c.factorizedPhmW) {
        this.param('W_left', init(empty([n, ip, c.phmRank], o), 'W_left'));  // (n, I/n, R)
        this.param('W_right', init(empty([n, c.phmRank, op], o), 'W_right'));  // (n, R, O/n)
      } else this.param('W', init(empty([n, ip, op], o), 'W'));  // (n, I/n, O/n)
      if (!sharedRule) {
        // Per-layer rule: c_init "normal" N(0, 0.01), "uniform" U(-0.01, 0.01) (phm_init_range unused here, as upstream).
        for (const [name, shape] of ruleShapes(c)) {
          const t = empty(shape, o);
          if (c.phmCInit === 'uniform') t.uniform_(-0.01, 0.01, seedFor(seed, `${key}.${name}`));
          else t.normal_(0, 0.01, seedFor(seed, `${key}.${name}`));
          this.param(name, t, c.learnPhm);
        }
      }
      if (c.phmBias) this.param('b', zeros([outFeatures], o));  // (O)
    });
  }

  /** The trainable tensors (the rule only when learn_phm). */
  trainable(): Tensor[] {
    return this.ownParameters().filter(([n]) => this.c.learnPhm || !n.startsWith('phm_rule')).map(([, t]) => t);
  }

  /** H = Σ_k kron(rule_k, W_k): (I, O). */
  weight(): Tensor {
    return tidy(() => {
      const W = this.c.factorizedPhmW ? this.own('W_left')!.bmm(this.own('W_right')!) : this.own('W')!;  // (n, I/n, O/n)
      const rule = this.sharedRule ? this.sharedRule() : ruleOf((k) => this.own(k)!, this.c.factorizedPhmRule);  // (n, n, n)
      return batchedKron(rule, W).sum(0);  // (I, O)
    });
  }

  forward(x: Tensor): Tensor {
    const y = x.matmul(this.weight());  // (…, O)
    const b = this.own('b');
    return b ? y.add(b) : y;
  }
}
