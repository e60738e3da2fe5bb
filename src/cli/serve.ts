// adapterkit serve: the OpenAI-compatible server. With no flags it serves the embedded default model
// and any adapters in ./adapters. Ctrl-C (or SIGTERM) drains in-flight requests and exits 0.
import { existsSync, readFileSync } from 'node:fs';
import { parseFlags, numberFlag, dtypeFlag, UsageError } from './common.js';
import { defaultModelDir } from '../models/default-model.js';
import { startServer } from '../serve/server.js';

export const SERVE_USAGE = `usage: adapterkit serve [--model DIR] [--adapters DIR] [--port N] [options]
  --model DIR                HF checkpoint (default: the embedded default model)
  --adapters DIR             adapter root, one folder per adapter id (default ./adapters when it exists)
  --host H --port N          listen address (default 127.0.0.1:8000)
  --max-batch N              sequences decoded together (default 32)
  --max-queue N              requests waiting before 429 (default 256)
  --kv-budget-mb N           KV cache memory (default 512)        --max-context N   positions per sequence
  --max-adapters-resident N  adapters kept loaded (LRU, default 64) --adapter-budget-mb N (default 1024)
  --max-rank N               largest adapter rank accepted (default 64)
  --api-key KEY              require Authorization: Bearer KEY (all models)
  --api-keys FILE            JSON {"key": ["adapter", ...] | "*"}: per-key allow-lists
  --dtype auto|float32|bfloat16
  --threads auto|N           intra-op threads per model step (default auto: 1, 2, 4, ... up to
                             OMP_NUM_THREADS or the physical cores, measured per kind of step)
endpoints: POST /v1/completions, /v1/chat/completions (stream: true for SSE), GET /v1/models,
  POST /v1/adapters/load {id, path?}, /v1/adapters/unload {id}, GET /health, /metrics, / (playground)`;

export async function serveCommand(args: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const f = parseFlags(args, {
    model: s, adapters: s, host: s, port: s, 'max-batch': s, 'max-queue': s, 'kv-budget-mb': s, 'max-context': s,
    'max-adapters-resident': s, 'adapter-budget-mb': s, 'max-rank': s, 'api-key': s, 'api-keys': s, dtype: s, threads: s,
  }, SERVE_USAGE);
  const int = (k: string, min = 1) => numberFlag(f.str(k), k, { int: true, min });
  const keys = new Map<string, string[] | '*'>();
  if (f.str('api-key')) keys.set(f.str('api-key')!, '*');
  if (f.str('api-keys')) {
    let v: unknown;
    try {
      v = JSON.parse(readFileSync(f.str('api-keys')!, 'utf8'));
    } catch (e) {
      throw new UsageError(`--api-keys ${f.str('api-keys')}: ${(e as Error).message}`);
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new UsageError('--api-keys must hold a JSON object {"key": ["adapter", ...] or "*"}');
    for (const [k, a] of Object.entries(v)) {
      if (a !== '*' && !(Array.isArray(a) && a.every((x) => typeof x === 'string'))) throw new UsageError(`--api-keys: the value of a key must be "*" or a list of model names`);
      keys.set(k, a as string[] | '*');
    }
  }
  const adapters = f.str('adapters') ?? (existsSync('adapters') ? 'adapters' : null);
  if (adapters !== null && !existsSync(adapters)) throw new UsageError(`--adapters ${adapters} does not exist`);
  const srv = await startServer({
    model: f.str('model') ?? defaultModelDir(), adapters, host: f.str('host'), port: int('port', 0) ?? 8000, dtype: dtypeFlag(f.str('dtype')),
    maxBatch: int('max-batch'), maxQueue: int('max-queue', 0), kvBudgetMb: int('kv-budget-mb'), maxContext: int('max-context'),
    maxAdaptersResident: int('max-adapters-resident'), adapterBudgetMb: int('adapter-budget-mb'), maxRank: int('max-rank'), apiKeys: keys,
    threads: f.str('threads') === undefined || f.str('threads') === 'auto' ? 'auto' : int('threads'),
  });
  console.log(`adapterkit serve: ${srv.baseName} on ${srv.url} (${srv.engine.rowCapacity} sequences x ${srv.engine.capacity} positions of KV cache; adapters from ${adapters ?? 'nowhere (load with POST /v1/adapters/load)'})`);
  console.log(`  open ${srv.url}/ for the playground; Ctrl-C drains and exits`);
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      console.log(`\n  ${sig}: draining ${srv.engine.runningRows + srv.engine.queueDepth} requests...`);
      void srv.close().then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  console.log('  stopped');
  return 0;
}
