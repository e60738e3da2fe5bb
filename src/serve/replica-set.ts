// The router's view of its replicas: up or down (GET /health every interval, and at once on a refused
// connection), requests in flight through the router, counters, and which adapters each holds
// resident (GET /v1/stats, plus what the router itself sent there since). The choice of a replica
// for a request is here: consistent hashing of the adapter id with bounded loads (hash-ring.ts),
// preferring a replica where the adapter is resident.
import { HashRing, pickBounded } from './hash-ring.js';
import { metricFamily } from './metrics.js';

export class Replica {
  up = true;
  inFlight = 0;
  /** Attempts sent here (a retried request counts once per replica it tried). */
  requests = 0;
  /** Requests this replica took over after another one failed them. */
  retries = 0;
  /** Attempts that failed here: refused or reset connections, 5xx, streams broken mid-way. */
  failures = 0;
  /** The base model's name, from /v1/stats (null until the first poll). */
  base: string | null = null;
  resident = new Set<string>();
  lastError = '';
  constructor(readonly url: string) {}
}

export interface ReplicaSetOptions {
  /** Load slack of the bound: at most ceil((1 + eps) * average) in flight per replica. */
  eps: number;
  vnodes?: number;
  log: (s: string) => void;
}

/** A replica URL as the router keys it: http(s)://host:port with no trailing slash. */
export function normalizeReplicaUrl(u: string): string {
  let url: URL;
  try {
    url = new URL(u.trim());
  } catch {
    throw new Error(`replica "${u}" is not a URL (http://host:port)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`replica "${u}" must be an http:// or https:// URL`);
  return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
}

export class ReplicaSet {
  readonly replicas = new Map<string, Replica>();
  private readonly ring: HashRing;

  constructor(urls: string[], readonly o: ReplicaSetOptions) {
    if (!urls.length) throw new Error('the router needs at least one replica');
    for (const u of urls) {
      const url = normalizeReplicaUrl(u);
      if (this.replicas.has(url)) throw new Error(`replica ${url} is named twice`);
      this.replicas.set(url, new Replica(url));
    }
    this.ring = new HashRing(this.replicas.keys(), o.vnodes ?? 100);
  }

  get all(): Replica[] {
    return [...this.replicas.values()];
  }

  get upCount(): number {
    return this.all.filter((r) => r.up).length;
  }

  isResident(r: Replica, model: string): boolean {
    return model === r.base || r.resident.has(model);
  }

  /** The up replicas not in `exclude`, in the order the key meets them on the ring. */
  order(key: string, exclude: ReadonlySet<string> = new Set()): Replica[] {
    return this.ring.walk(key).map((u) => this.replicas.get(u)!).filter((r) => r.up && !exclude.has(r.url));
  }

  /** The replica for a request naming `model`: bounded load, resident preferred (null: none up). */
  pick(model: string, exclude: ReadonlySet<string> = new Set()): Replica | null {
    const order = this.order(model, exclude);
    const url = pickBounded(order.map((r) => r.url), (u) => this.replicas.get(u)!.inFlight, this.o.eps, (u) => this.isResident(this.replicas.get(u)!, model));
    return url === null ? null : this.replicas.get(url)!;
  }

  /** The adapter's home: the first up replica on its ring walk, whatever the loads. */
  home(key: string, exclude: ReadonlySet<string> = new Set()): Replica | null {
    return this.order(key, exclude)[0] ?? null;
  }

  markDown(r: Replica, why: string): void {
    r.lastError = why;
    if (!r.up) return;
    r.up = false;
    this.o.log(`replica ${r.url} is down: ${why}`);
  }

  private markUp(r: Replica): void {
    if (r.up) return;
    r.up = true;
    r.lastError = '';
    this.o.log(`replica ${r.url} is up`);
  }

  /** One health round: GET /health on every replica, then GET /v1/stats on the live ones for residency. */
  async checkAll(timeoutMs: number): Promise<void> {
    await Promise.all(this.all.map(async (r) => {
      try {
        const h = await fetch(`${r.url}/health`, { signal: AbortSignal.timeout(timeoutMs) });
        await h.body?.cancel();
        if (h.status !== 200) return this.markDown(r, `GET /health answered ${h.status}`);
        const s = await fetch(`${r.url}/v1/stats`, { signal: AbortSignal.timeout(timeoutMs) });
        if (s.ok) {
          const stats = (await s.json()) as { base?: unknown; resident?: unknown };
          if (typeof stats.base === 'string') r.base = stats.base;
          if (Array.isArray(stats.resident)) {
            r.resident = new Set(stats.resident.map((e: unknown) => (e && typeof e === 'object' ? (e as { id?: unknown }).id : e)).filter((id): id is string => typeof id === 'string'));
          }
        } else await s.body?.cancel();
        this.markUp(r);
      } catch (e) {
        this.markDown(r, `GET /health failed: ${(e as Error).message}`);
      }
    }));
  }

  /** Prometheus lines per replica (label replica="<url>"). */
  metricLines(): string[] {
    const rows = <T>(f: (r: Replica) => T): [Record<string, string>, T][] => this.all.map((r) => [{ replica: r.url }, f(r)]);
    return [
      ...metricFamily('adapterkit_router_replica_up', 'gauge', '1 when the replica passes its health check', rows((r) => (r.up ? 1 : 0))),
      ...metricFamily('adapterkit_router_replica_in_flight', 'gauge', 'requests the router has in flight on the replica', rows((r) => r.inFlight)),
      ...metricFamily('adapterkit_router_replica_requests_total', 'counter', 'requests routed to the replica (each attempt)', rows((r) => r.requests)),
      ...metricFamily('adapterkit_router_replica_retries_total', 'counter', 'requests the replica took over after another failed them', rows((r) => r.retries)),
      ...metricFamily('adapterkit_router_replica_failures_total', 'counter', 'attempts that failed on the replica (connection, 5xx, broken stream)', rows((r) => r.failures)),
      ...metricFamily('adapterkit_router_replica_adapters_resident', 'gauge', 'adapters resident on the replica (last poll)', rows((r) => r.resident.size)),
    ];
  }
}
