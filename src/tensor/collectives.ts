// The native process-group entries (native/distributed.cc), typed: the only door from TypeScript to
// c10d. The public API with its options and checks is src/distributed/process-group.ts.
import { N, type Handle } from './native.js';
import { Tensor, run } from './tensor.js';

export type Backend = 'gloo' | 'nccl';
export type ReduceOp = 'sum' | 'avg' | 'max' | 'min';

/** True when the addon was built with c10d and Gloo (false: every collective throws "built without c10d"). */
export function distributedAvailable(): boolean {
  return N.distributedAvailable() as boolean;
}

export const collectives = {
  init(backend: Backend, rank: number, worldSize: number, masterAddr: string, masterPort: number, timeoutMs: number, iface?: string): void {
    run('initProcessGroup', [backend, rank, worldSize, `${masterAddr}:${masterPort}`, timeoutMs], () => N.initProcessGroup(backend, rank, worldSize, masterAddr, masterPort, timeoutMs, iface));
  },
  allReduce(t: Tensor, op: ReduceOp): void {
    run('allReduce', [t, op], () => N.allReduce(t.handle, op));
  },
  broadcast(t: Tensor, root: number): void {
    run('broadcast', [t, root], () => N.broadcast(t.handle, root));
  },
  allGather(t: Tensor): Tensor[] {
    return run('allGather', [t], () => N.allGather(t.handle) as Handle[]).map((h) => new Tensor(h));
  },
  barrier(): void {
    run('barrier', [], () => N.barrier());
  },
  destroy(): void {
    run('destroyProcessGroup', [], () => N.destroyProcessGroup());
  },
};
