// A small, learnable synthetic language for tests and examples: sequences that count upward
// modulo the vocabulary from a random start with a random stride, so the next token is predictable
// from the previous two.
import { mulberry32 } from '../data/index.js';
import type { TokenExample } from '../data/index.js';

export function syntheticTask(vocab: number, nTrain: number, nEval: number, fixedLength = false): { train: TokenExample[]; eval: TokenExample[] } {
  const rand = mulberry32(1234);
  const make = (): TokenExample => {
    const len = fixedLength ? 12 : 8 + Math.floor(rand() * 8);
    const stride = 1 + Math.floor(rand() * 3);
    let x = 1 + Math.floor(rand() * (vocab - 1));
    const ids: number[] = [];
    for (let i = 0; i < len; i++) {
      ids.push(x);
      x = 1 + ((x - 1 + stride) % (vocab - 1));
    }
    return { inputIds: ids, labels: [...ids] };
  };
  return { train: Array.from({ length: nTrain }, make), eval: Array.from({ length: nEval }, make) };
}
