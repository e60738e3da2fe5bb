// What the trainer does differently on several processes (PyTorch DDP's contract): every rank draws
// the same global batch of batchSize x worldSize rows and computes its contiguous slice; the losses,
// already divided by the global batch's item count, give gradients whose sum over the ranks is the
// single-process gradient of the global batch, so one fused all-reduce (sum) per step makes every
// rank's update identical. Rank 0 broadcasts the starting weights and alone writes files.
import { allReduceGradients, broadcastParameters, shardRange } from '../distributed/ddp.js';
import type { ProcessGroup } from '../distributed/process-group.js';
import type { Tensor } from '../tensor/index.js';

export class DataParallel {
  constructor(private readonly pg: ProcessGroup | null) {}

  get worldSize(): number { return this.pg?.worldSize ?? 1; }
  get rank(): number { return this.pg?.rank ?? 0; }
  /** Rank 0, or a single process: the one that writes checkpoints, adapters, metrics and progress. */
  get isMain(): boolean { return this.rank === 0; }
  get active(): boolean { return this.worldSize > 1; }

  /** This rank's rows of a global batch (given as example indices, in the loader's order). */
  slice<T>(global: readonly T[]): T[] {
    const [a, b] = shardRange(global.length, this.rank, this.worldSize);
    return global.slice(a, b);
  }

  /** Rank 0's trainable weights on every rank (the start of a run, or after a resume). */
  broadcastWeights(params: readonly Tensor[]): void {
    if (this.pg && this.active) broadcastParameters(this.pg, params, 0);
  }

  /**
   * Sums the gradients over the ranks, and with them this rank's share of the step loss and its stop
   * request: returns the global loss and whether any rank asked to stop (so every rank stops at the
   * same step, after the same update).
   */
  sync(params: readonly Tensor[], loss: number, stop: boolean): { loss: number; stop: boolean } {
    if (!this.pg || !this.active) return { loss, stop };
    const [sum, stops] = allReduceGradients(this.pg, params, [loss, stop ? 1 : 0]);
    return { loss: sum!, stop: stops! > 0 };
  }

  /** Resuming on another world size would change the per-rank batches and the data order: refused. */
  checkResume(saved: number | undefined, dir: string): void {
    const was = saved ?? 1;
    if (was !== this.worldSize) {
      throw new Error(`cannot resume from ${dir}: it was trained on ${was} process(es) and this run has ${this.worldSize}; ` +
        `resume with the same world size (adapterkit launch --nproc/--nnodes giving ${was} processes${was === 1 ? ', or plain adapterkit train' : ''})`);
    }
  }
}
