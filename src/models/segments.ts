// A base model as segments: the embedding, each block, the final norm. Running them in order is the
// forward pass; gradient checkpointing (src/train/checkpointing.ts) runs them one at a time.
import type { Tensor } from '../tensor/index.js';
import type { ModelOutput } from './types.js';

export interface Segments {
  embed: () => Tensor;  // (B, T, C)
  blocks: ((h: Tensor) => Tensor)[];  // (B, T, C) -> (B, T, C)
  final: (h: Tensor) => Tensor;  // the last hidden states (B, T, C)
}

/** A task model as segments plus its head (hidden states -> output). */
export interface ModelSegments extends Segments {
  head: (hidden: Tensor) => ModelOutput;
}

export function runSegments(s: Segments): Tensor {
  let h = s.embed();
  for (const b of s.blocks) h = b(h);
  return s.final(h);
}

