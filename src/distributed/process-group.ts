// One process group per process, as torch.distributed: ranks 0..worldSize-1 meet at rank 0's TCP
// store (masterAddr:masterPort) and then run collectives over Gloo. Every collective is blocking and
// bounded by `timeoutMs`: a peer that died or never arrives becomes a TorchError, never a hang.
import { collectives, type Backend, type ReduceOp } from '../tensor/collectives.js';
import type { Tensor } from '../tensor/index.js';

export interface ProcessGroupOptions {
  backend: Backend;
  rank: number;
  worldSize: number;
  masterAddr: string;
  masterPort: number;
  /** Rendezvous and every collective; default 30 minutes (torch's default). */
  timeoutMs: number;
  /** Network interface Gloo talks on (torch's GLOO_SOCKET_IFNAME); default: loopback for a local master, else the host's address. */
  interface?: string;
}

export const DEFAULT_PROCESS_GROUP: Omit<ProcessGroupOptions, 'rank' | 'worldSize'> = {
  backend: 'gloo', masterAddr: '127.0.0.1', masterPort: 29500, timeoutMs: 30 * 60 * 1000,
};

const KEYS = ['backend', 'rank', 'worldSize', 'masterAddr', 'masterPort', 'timeoutMs', 'interface'];

function validate(o: ProcessGroupOptions): void {
  for (const k of Object.keys(o)) if (!KEYS.includes(k)) throw new Error(`process group: unknown option "${k}" (known: ${KEYS.join(', ')})`);
  const int = (k: 'rank' | 'worldSize' | 'masterPort' | 'timeoutMs', min: number, max = Number.MAX_SAFE_INTEGER) => {
    if (!Number.isInteger(o[k]) || o[k] < min || o[k] > max) throw new Error(`process group: ${k} must be an integer in ${min}..${max === Number.MAX_SAFE_INTEGER ? '' : max}, got ${JSON.stringify(o[k])}`);
  };
  int('worldSize', 1);
  int('rank', 0, o.worldSize - 1);
  int('masterPort', 1, 65535);
  int('timeoutMs', 1);
  if (o.backend !== 'gloo' && o.backend !== 'nccl') throw new Error(`process group: backend must be gloo or nccl, got ${JSON.stringify(o.backend)}`);
}

/** The collectives of the initialised group. Tensors are CPU and contiguous; ops run in place. */
export class ProcessGroup {
  private alive = true;

  /** @internal use initProcessGroup() */
  constructor(readonly options: Readonly<ProcessGroupOptions>) {}

  get rank(): number { return this.options.rank; }
  get worldSize(): number { return this.options.worldSize; }
  get backend(): Backend { return this.options.backend; }

  private check(op: string): void {
    if (!this.alive) throw new Error(`${op}: the process group was destroyed`);
  }

  /** Every rank ends with the reduction of every rank's `t` (avg = sum / worldSize). */
  allReduce(t: Tensor, op: ReduceOp = 'sum'): Tensor {
    this.check('allReduce');
    collectives.allReduce(t, op);
    return t;
  }

  /** Every rank ends with `root`'s values in `t`. */
  broadcast(t: Tensor, root = 0): Tensor {
    this.check('broadcast');
    collectives.broadcast(t, root);
    return t;
  }

  /** Each rank's `t` (same shape everywhere), in rank order; the caller owns the new tensors. */
  allGather(t: Tensor): Tensor[] {
    this.check('allGather');
    return collectives.allGather(t);
  }

  /** Returns when every rank has called it. */
  barrier(): void {
    this.check('barrier');
    collectives.barrier();
  }

  /** @internal */
  _kill(): void { this.alive = false; }
}

let current: ProcessGroup | null = null;

/**
 * Joins the group: blocks until all `worldSize` ranks have arrived (or `timeoutMs` passes).
 * @example
 * const pg = initProcessGroup({ rank: Number(process.env.RANK), worldSize: 2, masterPort: 29500 });
 * pg.allReduce(t, 'avg');
 * destroyProcessGroup();
 */
export function initProcessGroup(o: Partial<ProcessGroupOptions> & Pick<ProcessGroupOptions, 'rank' | 'worldSize'>): ProcessGroup {
  const opts: ProcessGroupOptions = { ...DEFAULT_PROCESS_GROUP, ...o };
  validate(opts);
  if (current) throw new Error('initProcessGroup: this process already belongs to a group; call destroyProcessGroup() first');
  collectives.init(opts.backend, opts.rank, opts.worldSize, opts.masterAddr, opts.masterPort, opts.timeoutMs, opts.interface);
  current = new ProcessGroup(opts);
  return current;
}

/** The group this process joined, or null. */
export function currentProcessGroup(): ProcessGroup | null {
  return current;
}

/** Leaves the group (no-op without one). */
export function destroyProcessGroup(): void {
  current?._kill();
  current = null;
  collectives.destroy();
}

/** The launcher's environment (torchrun's names), or null when WORLD_SIZE is absent or 1. */
export interface LaunchEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
}

export function launchEnv(env: NodeJS.ProcessEnv = process.env): LaunchEnv | null {
  const world = Number(env.WORLD_SIZE ?? '1');
  if (!(world > 1)) return null;
  const num = (k: string, dflt?: number) => {
    const v = env[k] === undefined ? dflt : Number(env[k]);
    if (v === undefined || !Number.isInteger(v) || v < 0) throw new Error(`${k}=${env[k] ?? ''} must be a non-negative integer (set by adapterkit launch or torchrun)`);
    return v;
  };
  return {
    rank: num('RANK'), worldSize: world, localRank: num('LOCAL_RANK', num('RANK')), localWorldSize: num('LOCAL_WORLD_SIZE', world),
    masterAddr: env.MASTER_ADDR ?? '127.0.0.1', masterPort: num('MASTER_PORT', 29500),
  };
}
