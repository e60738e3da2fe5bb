// A key/value cache for decoder generation: per layer, keys and values of every earlier position.
// It owns its tensors (kept out of scopes) and frees them in dispose().
import { cat, keep, type Tensor } from '../tensor/index.js';

/** What a model's attention layers need from a cache: the cached length and an append that returns every key/value. */
export interface KVStore {
  /** Positions already cached (the same for every row; padding is masked by the attention mask). */
  readonly length: number;
  /** Appends this step's keys/values (B, Hkv, T, D) for a layer; returns the full (B, Hkv, S, D). */
  update(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor };
}

export class KVCache implements KVStore {
  private readonly k: (Tensor | null)[];
  private readonly v: (Tensor | null)[];

  constructor(readonly numLayers: number) {
    this.k = new Array(numLayers).fill(null);
    this.v = new Array(numLayers).fill(null);
  }

  /** Positions already cached (0 before the first forward). */
  get length(): number {
    const k = this.k[0];
    return k ? k.shape[2]! : 0;
  }

  /** Appends this step's keys/values (B, Hkv, T, D) for a layer; returns the full (B, Hkv, S, D). */
  update(layer: number, k: Tensor, v: Tensor): { k: Tensor; v: Tensor } {
    const pk = this.k[layer];
    const pv = this.v[layer];
    const nk = keep(pk ? cat([pk, k.detach()], 2) : k.detach());  // the cache never holds a graph
    const nv = keep(pv ? cat([pv, v.detach()], 2) : v.detach());
    pk?.dispose();
    pv?.dispose();
    this.k[layer] = nk;
    this.v[layer] = nv;
    return { k: nk, v: nv };
  }

  /** The cached keys and values of a layer, (B, Hkv, S, D) each (owned by the cache: do not dispose). */
  layer(l: number): { k: Tensor; v: Tensor } {
    const k = this.k[l];
    const v = this.v[l];
    if (!k || !v) throw new Error(`KV cache: layer ${l} holds nothing yet`);
    return { k, v };
  }

  /** Keeps only the rows in `index` (beam or finished-sequence pruning). */
  selectRows(index: Tensor): void {
    for (let i = 0; i < this.numLayers; i++) {
      for (const arr of [this.k, this.v]) {
        const t = arr[i];
        if (t) {
          arr[i] = keep(t.indexSelect(0, index));
          t.dispose();
        }
      }
    }
  }

  dispose(): void {
    for (const t of [...this.k, ...this.v]) t?.dispose();
    this.k.fill(null);
    this.v.fill(null);
  }
  [Symbol.dispose](): void {
    this.dispose();
  }
}
