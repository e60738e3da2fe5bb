// adapterkit launch: torchrun for the adapterkit CLI. Starts --nproc copies of a command on this
// machine with torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT); `train` reads it and joins the group. One child failing stops the others; Ctrl-C
// and SIGTERM are passed on to every child, which save a checkpoint and stop at the same step.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { availableParallelism } from 'node:os';
import { parseFlags, numberFlag, UsageError } from './common.js';

export const LAUNCH_USAGE = `usage: adapterkit launch --nproc N [--nnodes M --node-rank R --master ADDR:PORT] [--threads-per-proc T] -- <command> [options]
  --nproc N              processes on this machine (e.g. one per GPU, or a share of the cores)
  --nnodes M             machines taking part (default 1); run the same launch on each with its --node-rank
  --node-rank R          this machine's place, 0..M-1 (node 0 hosts the rendezvous)
  --master ADDR:PORT     where rank 0 listens (default 127.0.0.1 and a free port; required with --nnodes > 1)
  --threads-per-proc T   torch threads in each process (default: cores / nproc)
  --grace-seconds S      after one process fails, how long the others get to exit before SIGKILL (default 10)
example: adapterkit launch --nproc 2 -- train --model DIR --data train.jsonl --output runs/x --batch-size 4
  (--batch-size is per process: this run equals one process with --batch-size 8)`;

/** A free TCP port on this machine (the OS picks; closed again before the children bind it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function launchCommand(args: string[]): Promise<number> {
  const dash = args.indexOf('--');
  if (dash < 0 || dash === args.length - 1) throw new UsageError(`launch needs the command after "--"\n\n${LAUNCH_USAGE}`);
  const command = args.slice(dash + 1);
  const s = { type: 'string' } as const;
  const f = parseFlags(args.slice(0, dash), { nproc: s, nnodes: s, 'node-rank': s, master: s, 'threads-per-proc': s, 'grace-seconds': s }, LAUNCH_USAGE);
  const int = (k: string, dflt: number, min: number): number => numberFlag(f.str(k), k, { int: true, min }) ?? dflt;
  const nproc = int('nproc', 0, 1);
  if (!nproc) throw new UsageError(`launch: --nproc is required\n\n${LAUNCH_USAGE}`);
  const nnodes = int('nnodes', 1, 1);
  const nodeRank = int('node-rank', 0, 0);
  if (nodeRank >= nnodes) throw new UsageError(`launch: --node-rank ${nodeRank} must be below --nnodes ${nnodes}`);
  const threads = int('threads-per-proc', Math.max(1, Math.floor(availableParallelism() / nproc)), 1);
  const grace = 1000 * (numberFlag(f.str('grace-seconds'), 'grace-seconds', { min: 0 }) ?? 10);
  let addr = '127.0.0.1';
  let port: number;
  const master = f.str('master');
  if (master) {
    const m = /^(.+):(\d+)$/.exec(master);
    if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) throw new UsageError(`launch: --master must be ADDR:PORT, got "${master}"`);
    addr = m[1]!;
    port = Number(m[2]);
  } else if (nnodes > 1) {
    throw new UsageError('launch: --master ADDR:PORT is required with --nnodes > 1 (the address of node 0, reachable from every node)');
  } else port = await freePort();

  const cli = fileURLToPath(new URL('../../../bin/adapterkit.js', import.meta.url));
  const world = nnodes * nproc;
  const children: ChildProcess[] = [];
  let failed: { rank: number; code: number } | null = null;
  let signalled: NodeJS.Signals | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  const stopAll = () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    // A process stuck in a collective with a dead peer leaves at its timeout; do not wait that long.
    killTimer ??= setTimeout(() => { for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL'); }, grace);
  };
  const forward = (sig: NodeJS.Signals) => {
    signalled = sig;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill(sig);
  };
  process.on('SIGINT', forward);
  process.on('SIGTERM', forward);
  try {
    const done = Array.from({ length: nproc }, (_, local) => {
      const rank = nodeRank * nproc + local;
      const env = {
        ...process.env, RANK: String(rank), WORLD_SIZE: String(world), LOCAL_RANK: String(local), LOCAL_WORLD_SIZE: String(nproc),
        MASTER_ADDR: addr, MASTER_PORT: String(port), OMP_NUM_THREADS: String(threads),
      };
      const child = spawn(process.execPath, [cli, ...command], { env, stdio: 'inherit' });
      children.push(child);
      console.error(`launch: rank ${rank} of ${world} started (pid ${child.pid}, ${threads} threads, master ${addr}:${port})`);
      return new Promise<void>((resolve) => {
        child.once('error', (e) => {
          console.error(`launch: rank ${rank} could not start: ${e.message}`);
          failed ??= { rank, code: 1 };
          stopAll();
          resolve();
        });
        child.once('exit', (code, sig) => {
          if (code !== 0 && !signalled) {
            if (!failed) {
              failed = { rank, code: code ?? 1 };
              console.error(`launch: rank ${rank} (pid ${child.pid}) ${sig ? `was killed by ${sig}` : `exited with status ${code}`}; stopping the others`);
            }
            stopAll();
          }
          resolve();
        });
      });
    });
    await Promise.all(done);
  } finally {
    process.off('SIGINT', forward);
    process.off('SIGTERM', forward);
    if (killTimer) clearTimeout(killTimer);
  }
  if (failed) return (failed as { code: number }).code || 1;
  if (signalled) return signalled === 'SIGTERM' ? 143 : 130;
  return 0;
}
