// Activation functions by their Hugging Face config names (hidden_act / activation_function),
// following transformers/activations.py.
import { TorchError, type Tensor } from '../tensor/index.js';

export type Activation = (x: Tensor) => Tensor;

// ATen's CPU kernels for tanh-GELU and SiLU are slow in bfloat16/float16 (the build we link has no
// vectorised half path for them): forward + backward on a 1024 x 3072 bf16 tensor took 39 ms for
// tanh-GELU and 12.6 ms for SiLU, against 23 ms and 6.7 ms computed in float32 with the casts
// (2-core Xeon, measured). So half inputs on the CPU are computed in float32 and cast back, which is
// also the more accurate result. Exact GELU is fast in bf16 (4 ms) and stays as it is.
const inFloat32 = (f: Activation): Activation => (x) =>
  (x.dtype === 'bfloat16' || x.dtype === 'float16') && x.device === 'cpu' ? f(x.to('float32')).to(x.dtype) : f(x);
const geluTanh = inFloat32((x) => x.gelu('tanh'));
const silu = inFloat32((x) => x.silu());

const ACTIVATIONS: Record<string, Activation> = {
  gelu: (x) => x.gelu(),  // exact, erf-based
  gelu_new: geluTanh,  // GPT-2: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
  gelu_fast: geluTanh,  // the same formula, written differently in HF
  gelu_pytorch_tanh: geluTanh,
  quick_gelu: (x) => x.mul(x.mul(1.702).sigmoid()),
  relu: (x) => x.relu(),
  silu,
  swish: silu,
  tanh: (x) => x.tanh(),
  sigmoid: (x) => x.sigmoid(),
};

export function activation(name: string): Activation {
  const f = ACTIVATIONS[name];
  if (!f) throw new TorchError('activation', [JSON.stringify(name)], `unsupported activation "${name}"; supported: ${Object.keys(ACTIVATIONS).join(', ')}`);
  return f;
}
