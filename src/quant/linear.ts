// QuantLinear: a frozen Linear whose weight is stored quantized (nf4/fp4/int8/int4). It is a Linear
// (y = x W^T + b, W (out, in)), so every adapter that wraps a Linear wraps it unchanged: the forward
// goes through the fused kernel (no dequantized copy of W is kept), gradients reach the input and
// the adapters, never W. Reading `weight` dequantizes (for merges and SVD-based inits), and setting
// it quantizes again (PEFT's merge into a 4-bit base: lossy, so a merged copy is a new rounding).
import { Linear, Conv1D, computeDtype } from '../nn/layers.js';
import { noGrad, type Tensor, type DType } from '../tensor/index.js';
import { quantLinear, dequantize, type QuantSpec } from '../tensor/quant.js';
import { QuantizedWeight, type QuantFormat, type QuantizeOptions } from './weight.js';

type Meta = Omit<QuantSpec, 'data' | 'absmax' | 'code' | 'zeros' | 'nestedAbsmax' | 'nestedCode'>;
const BUFFERS = ['data', 'absmax', 'code', 'zeros', 'nestedAbsmax', 'nestedCode'] as const;

/** What a layer can hand to BaseBackup so that unmerge restores its exact stored weight. */
export interface WeightBackup {
  restore(): void;
  dispose(): void;
}

export class QuantLinear extends Linear {
  private meta: Meta;
  private doubleQuant: boolean;
  /** The dtype the layer computes in (the model's); the input's dtype wins when it differs. */
  computeDtype: DType;

  constructor(q: QuantizedWeight, bias: Tensor | null, computeDtype: DType) {
    // Linear allocates an (out, in) weight: drop it at once; it was never written, so never paged in.
    super(q.shape[1], q.shape[0], { bias: false, dtype: computeDtype });
    const w = this.own('weight');
    this.dropParam('weight');
    w?.dispose();
    if (bias) this.param('bias', bias, bias.requiresGrad);
    this.computeDtype = computeDtype;
    this.meta = { format: q.spec.format, out: q.spec.out, in: q.spec.in, blocksize: q.spec.blocksize, nestedBlocksize: q.spec.nestedBlocksize, offset: q.spec.offset };
    this.doubleQuant = q.doubleQuant;
    this.install(q);
  }

  /** Quantizes a Linear or GPT-2 Conv1D (whose (in, out) weight is transposed first, as transformers does for bitsandbytes). */
  static fromLayer(layer: Linear | Conv1D, opts: QuantizeOptions): QuantLinear {
    if (layer instanceof QuantLinear) throw new Error('the layer is already quantized');
    const w = layer.weight;
    const q = noGrad(() => {
      const wt = layer instanceof Conv1D ? w.transpose(0, 1) : w;
      const r = QuantizedWeight.quantize(wt, opts);
      if (wt !== w) wt.dispose();
      return r;
    });
    const b = layer.bias;
    return new QuantLinear(q, b ? b.detach().clone() : null, computeDtype(w.dtype));
  }

  get format(): QuantFormat { return this.meta.format; }

  /** The stored weight as the kernels read it (tensors borrowed from the layer). */
  spec(): QuantSpec {
    const buf = (n: string) => this.ownBuffer(n) ?? undefined;
    return { ...this.meta, data: buf('data')!, absmax: buf('absmax')!, code: buf('code'), zeros: buf('zeros'), nestedAbsmax: buf('nestedAbsmax'), nestedCode: buf('nestedCode') };
  }

  /** Bytes of the stored weight (packed values, scales and maps; the bias not included). */
  weightBytes(): number {
    return BUFFERS.reduce((n, k) => {
      const t = this.ownBuffer(k);
      return n + (t ? t.numel * (t.dtype === 'float32' ? 4 : 1) : 0);
    }, 0);
  }

  /** The dequantized weight (out, in) in the compute dtype: a new tensor, never trainable. */
  override get weight(): Tensor {
    return noGrad(() => dequantize(this.spec(), this.computeDtype));
  }

  override forward(x: Tensor): Tensor {
    const y = quantLinear(x, this.spec());  // (…, out)
    const b = this.bias;
    return b === null ? y : y.add(b.dtype === y.dtype ? b : b.to(y.dtype));
  }

  /** `weight` quantizes `t` again in this layer's format; anything else is a plain parameter. */
  override setParameter(path: string, t: Tensor, trainable?: boolean): void {
    if (path !== 'weight') return super.setParameter(path, t, trainable);
    if (trainable) throw new Error('a quantized weight cannot be trained; train an adapter on it');
    const q = QuantizedWeight.quantize(t, { format: this.meta.format, blocksize: this.meta.blocksize || undefined, doubleQuant: this.doubleQuant });
    this.meta = { ...this.meta, offset: q.spec.offset };
    this.install(q);
  }

  /** A copy of the stored tensors; restore() puts them back bit for bit. */
  backupWeight(): WeightBackup {
    const saved = new Map(BUFFERS.map((k) => [k, this.ownBuffer(k)?.clone()] as const));
    const meta = { ...this.meta };
    return {
      restore: () => {
        this.meta = meta;
        for (const k of BUFFERS) this.setBuffer(k, saved.get(k) ?? null);
        saved.clear();
      },
      dispose: () => {
        for (const t of saved.values()) t?.dispose();
        saved.clear();
      },
    };
  }

  private install(q: QuantizedWeight): void {
    const s = q.spec;
    this.setBuffer('data', s.data);
    this.setBuffer('absmax', s.absmax);
    this.setBuffer('code', s.code ?? null);
    this.setBuffer('zeros', s.zeros ?? null);
    this.setBuffer('nestedAbsmax', s.nestedAbsmax ?? null);
    this.setBuffer('nestedCode', s.nestedCode ?? null);
  }

  private setBuffer(name: string, t: Tensor | null): void {
    if (t) {
      this.buffer(name, t);
      return;
    }
    this.ownBuffer(name)?.dispose();
    this.dropBuffer(name);
  }
}

export function isQuantLinear(m: unknown): m is QuantLinear {
  return m instanceof QuantLinear;
}
