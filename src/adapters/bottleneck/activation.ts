// AdapterHub's Activation_Function_Class: the name lower-cased, "leakyrelu" is leaky_relu (slope
// 0.01), the rest are transformers' ACT2FN entries ("gelu" = exact erf GELU, "gelu_new" = tanh).
import { activation, type Activation } from '../../nn/activations.js';

export function bnActivation(name: string): Activation {
  const n = name.toLowerCase();
  if (n === 'leakyrelu') return (x) => x.maximum(x.mul(0.01));  // = leaky_relu(x, 0.01) (slope < 1)
  if (n === 'linear' || n === 'identity') return (x) => x;
  return activation(n);
}
