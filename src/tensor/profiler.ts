// A light op profiler: self time per libtorch op (and autograd node) while it is on, grouped into
// the families a user can act on (matrix products, elementwise, attention/softmax, norms, copies
// and casts, ...). Used by `adapterkit train --profile`; costs about a microsecond per op when on.
import { N } from './native.js';

export interface OpTime {
  name: string;
  seconds: number;
  calls: number;
}

/** Starts (or restarts) recording: clears the table. */
export function startOpProfiler(): void {
  N.profilerStart();
}

/** Stops recording and returns self time per op name, largest first. */
export function stopOpProfiler(): OpTime[] {
  const rows = N.profilerStop() as [string, number, number][];
  return rows.map(([name, seconds, calls]) => ({ name, seconds, calls })).sort((a, b) => b.seconds - a.seconds);
}

// Ordered: the first family whose pattern matches the op (or autograd node) name wins.
const FAMILIES: [string, RegExp][] = [
  ['matrix products', /^aten::(mm|addmm|bmm|baddbmm|matmul|linear|addmv|mv|dot)$|^(Mm|Addmm|Bmm|Baddbmm|Mv|Linear)Backward/],
  ['fused LM head + loss', /linear_cross_entropy|LinearCrossEntropy|fused/i],
  ['attention / softmax', /softmax|scaled_dot_product|masked_fill|Softmax/i],
  ['norms', /norm|Norm/],
  ['activations', /gelu|silu|relu|tanh|sigmoid|Gelu|Silu|Relu|Tanh|Sigmoid/i],
  ['losses', /nll|cross_entropy|NllLoss/i],
  ['embedding / gather / index', /embedding|index|gather|scatter|Embedding|Index|Gather|Scatter/i],
  ['copies and casts', /copy_|_to_copy|^aten::to$|contiguous|clone|ToCopy|Clone|cat|Cat|stack/],
  ['reductions', /sum|mean|max|min|norm|argmax|Sum|Mean|Max/],
  ['fills and allocation', /zero_|fill_|empty|zeros|ones|full|uniform_|normal_|bernoulli/],
  ['views and reshapes', /view|reshape|transpose|permute|expand|select|slice|unsqueeze|squeeze|split|chunk|^aten::t$|View|Reshape|Transpose|Permute|Expand|Select|Slice|Unsqueeze|Squeeze|TBackward/i],
  ['elementwise math', /add|sub|mul|div|pow|sqrt|rsqrt|exp|log|neg|lerp|addcmul|addcdiv|where|clamp|Add|Sub|Mul|Div|Pow|Sqrt|Rsqrt|Exp|Log|Neg/],
];

export function opFamily(name: string): string {
  for (const [family, re] of FAMILIES) if (re.test(name)) return family;
  return 'other';
}

/** Self time per family, largest first. */
export function groupByFamily(ops: readonly OpTime[]): OpTime[] {
  const m = new Map<string, OpTime>();
  for (const o of ops) {
    const f = opFamily(o.name);
    const g = m.get(f) ?? { name: f, seconds: 0, calls: 0 };
    g.seconds += o.seconds;
    g.calls += o.calls;
    m.set(f, g);
  }
  return [...m.values()].sort((a, b) => b.seconds - a.seconds);
}
