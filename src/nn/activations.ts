// Activation functions by their Hugging Face config names (hidden_act / activation_function),
// following transformers/activations.py.
import { TorchError, type Tensor } from '../tensor/index.js';

export type Activation = (x: Tensor) => Tensor;

const ACTIVATIONS: Record<string, Activation> = {
  gelu: (x) => x.gelu(),  // exact, erf-based
  gelu_new: (x) => x.gelu('tanh'),  // GPT-2: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3)))
  gelu_fast: (x) => x.gelu('tanh'),  // the same formula, written differently in HF
  gelu_pytorch_tanh: (x) => x.gelu('tanh'),
  quick_gelu: (x) => x.mul(x.mul(1.702).sigmoid()),
  relu: (x) => x.relu(),
  silu: (x) => x.silu(),
  swish: (x) => x.silu(),
  tanh: (x) => x.tanh(),
  sigmoid: (x) => x.sigmoid(),
};

export function activation(name: string): Activation {
  const f = ACTIVATIONS[name];
  if (!f) throw new TorchError('activation', [JSON.stringify(name)], `unsupported activation "${name}"; supported: ${Object.keys(ACTIVATIONS).join(', ')}`);
  return f;
}
