// Gradient checkpointing: the forward runs block by block without a graph, keeping only each
// block's input; the backward then recomputes one block at a time (with its graph) and
// backpropagates through it, from the loss down to the embeddings. Activation memory falls from
// every block's intermediates to one block's, for about one extra forward pass. Dropout draws are
// seeded per block so the recomputation sees the same masks.
import { tidy, keep, noGrad, manualSeed, type Tensor } from '../tensor/index.js';
import type { ModelSegments } from '../models/segments.js';
import type { ModelOutput } from '../models/types.js';

const mix = (a: number, b: number) => (Math.imul(a ^ 0x27d4eb2f, 0x165667b1) ^ Math.imul(b + 7, 0x9e3779b1)) >>> 1;

/**
 * Forward and backward with checkpointing. `loss(output)` gives the (already normalised) scalar
 * loss from the head's output; gradients accumulate into the parameters' .grad. Returns the loss.
 */
export function checkpointedBackward(s: ModelSegments, loss: (out: ModelOutput) => Tensor, seed: number): number {
  const inputs: Tensor[] = [];
  try {
    // Forward, no graph: keep each block's input only.
    let h = keep(noGrad(() => tidy(() => { manualSeed(mix(seed, 0)); return s.embed(); })));
    s.blocks.forEach((block, i) => {
      inputs.push(h);
      const x = h;
      h = keep(noGrad(() => tidy(() => { manualSeed(mix(seed, i + 1)); return block(x); })));
    });
    // Head and loss with a graph, from the last hidden state as a leaf.
    let value = NaN;
    let g: Tensor = tidy(() => {
      const leaf = h.detach().requiresGrad_();
      const l = loss(s.head(s.final(leaf)));
      l.backward();
      value = l.item();
      return keep(leaf.grad!);
    });
    h.dispose();
    // Blocks in reverse: recompute with a graph, backpropagate the incoming gradient.
    for (let i = s.blocks.length - 1; i >= 0; i--) {
      const x = inputs[i]!;
      const gin = g;
      g = tidy(() => {
        const leaf = x.detach().requiresGrad_();
        manualSeed(mix(seed, i + 1));
        const y = s.blocks[i]!(leaf);
        y.backward(gin);
        return keep(leaf.grad!);
      });
      gin.dispose();
    }
    // The embedding, when something in it trains (e.g. embed_tokens in modules_to_save).
    const gEmb = g;
    tidy(() => {
      manualSeed(mix(seed, 0));
      const e = s.embed();
      if (e.requiresGrad) e.backward(gEmb);
    });
    gEmb.dispose();
    return value;
  } finally {
    inputs.forEach((t) => t.dispose());
  }
}
