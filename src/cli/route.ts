// adapterkit route: an OpenAI-compatible front over several `adapterkit serve` replicas, routing each
// adapter to a replica by consistent hashing with bounded loads. Ctrl-C (or SIGTERM) lets forwarded
// requests finish and exits 0.
import { parseFlags, numberFlag, required, UsageError } from './common.js';
import { startRouter } from '../serve/router.js';

export const ROUTE_USAGE = `usage: adapterkit route --replicas URL,URL,... [--port N] [options]
  --replicas URL,URL,...     the adapterkit serve replicas (http://host:port), comma-separated
  --host H --port N          listen address (default 127.0.0.1:8080)
  --api-key KEY              require Authorization: Bearer KEY (the header is passed on to the replicas)
  --health-interval-ms N     GET /health and /v1/stats on every replica this often (default 2000)
  --max-retries N            other replicas tried when one fails before streaming (default 2)
  --eps X                    load bound slack: a replica takes at most ceil((1+X) x average) in flight (default 0.25)
routing: the request's model (adapter id) picks a replica by consistent hashing; the first replica on its
  ring walk under the load bound, preferring one where the adapter is resident; down replicas are skipped.
endpoints: POST /v1/completions, /v1/chat/completions, GET /v1/models (union), POST /v1/adapters/load,
  /unload, GET /health, /metrics (per replica: up, in flight, requests, retries, failures, resident)`;

export async function routeCommand(args: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const f = parseFlags(args, { replicas: s, host: s, port: s, 'api-key': s, 'health-interval-ms': s, 'max-retries': s, eps: s }, ROUTE_USAGE);
  if (f.positionals.length) throw new UsageError(`unexpected argument "${f.positionals[0]}"\n\n${ROUTE_USAGE}`);
  const replicas = required(f.str('replicas'), 'replicas', ROUTE_USAGE).split(',').map((u) => u.trim()).filter(Boolean);
  let router;
  try {
    router = await startRouter({
      replicas, host: f.str('host'), port: numberFlag(f.str('port'), 'port', { int: true, min: 0, max: 65535 }) ?? 8080,
      apiKey: f.str('api-key') ?? null,
      healthIntervalMs: numberFlag(f.str('health-interval-ms'), 'health-interval-ms', { int: true, min: 50 }),
      maxRetries: numberFlag(f.str('max-retries'), 'max-retries', { int: true, min: 0 }),
      eps: numberFlag(f.str('eps'), 'eps', { min: 0 }),
    });
  } catch (e) {
    if (/replica/.test((e as Error).message)) throw new UsageError(`--replicas: ${(e as Error).message}`);
    throw e;
  }
  const up = router.replicas.all.map((r) => `${r.url} ${r.up ? 'up' : `down (${r.lastError})`}`).join(', ');
  console.log(`adapterkit route: ${router.url} over ${router.replicas.all.length} replicas: ${up}`);
  console.log('  Ctrl-C lets forwarded requests finish and exits');
  await new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (sig: string) => {
      if (stopping) return;
      stopping = true;
      console.log(`\n  ${sig}: finishing forwarded requests...`);
      void router.close().then(resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  console.log('  stopped');
  return 0;
}
