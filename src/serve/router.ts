// adapterkit's router: one OpenAI-compatible front over several `adapterkit serve` replicas. A request
// goes to a replica chosen by consistent hashing of its adapter id (the `model` field) with bounded
// loads, preferring a replica where the adapter is resident (replica-set.ts), so an adapter's requests
// stick to one replica and its weights load once. Bodies pass through unchanged, and so do 4xx answers.
// A replica that refuses or resets the connection, or answers 5xx, before the client got any byte is
// retried on the next replica of the ring (up to maxRetries); once a stream has started, a failure
// ends it with an SSE error event, never a silent truncation. Node's http module, like server.ts.
import { createServer as httpServer, request as httpRequest, Agent as HttpAgent, type IncomingMessage, type ServerResponse, type Server, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent as HttpsAgent } from 'node:https';
import { timingSafeEqual } from 'node:crypto';
import { HttpError } from './errors.js';
import { metric } from './metrics.js';
import { ReplicaSet, type Replica } from './replica-set.js';

export interface RouterOptions {
  /** Replica base URLs (http://host:port of `adapterkit serve`). */
  replicas: string[];
  host?: string;
  /** 0: any free port. */
  port?: number;
  /** Require Authorization: Bearer <key> on /v1/ (null: open). The header is passed on to the replicas. */
  apiKey?: string | null;
  /** Health and residency poll interval (default 2000 ms). */
  healthIntervalMs?: number;
  /** Other replicas tried after the first one fails a request (default 2). */
  maxRetries?: number;
  /** Load bound slack: a replica takes at most ceil((1 + eps) * average) in flight (default 0.25). */
  eps?: number;
  /** Request body limit in bytes (default 1 MiB, as the server). */
  bodyLimit?: number;
  log?: (s: string) => void;
}

export interface RunningRouter {
  url: string;
  server: Server;
  replicas: ReplicaSet;
  /** One health round now (the timer runs them every healthIntervalMs). */
  checkHealth(): Promise<void>;
  /** Stops accepting, lets forwarded requests finish, stops the health checks. */
  close(): Promise<void>;
}

/** Hop-by-hop headers are the connection's own; the rest pass through both ways. */
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'proxy-connection', 'upgrade', 'te', 'trailer', 'host']);
const REPLICA_HEADER = 'x-adapterkit-replica';

function passHeaders(h: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined && !HOP.has(k)) out[k] = v;
  return out;
}

const json = (res: ServerResponse, status: number, body: unknown, headers: OutgoingHttpHeaders = {}) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
};

function readRaw(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      req.resume();
      return reject(new HttpError(413, `request body of ${declared} bytes is over the limit of ${limit}`, 'invalid_request_error'));
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (size > limit) return;  // drain the rest: the 413 is on its way
      size += c.length;
      if (size > limit) return reject(new HttpError(413, `request body is over the limit of ${limit} bytes`, 'invalid_request_error', { Connection: 'close' }));
      chunks.push(c);
    });
    req.on('end', () => { if (size <= limit) resolve(Buffer.concat(chunks)); });
    req.on('error', reject);
  });
}

/** A string field of a JSON object body (null when the body is not JSON or lacks it: the replica will say why). */
function field(body: Buffer, key: string): string | null {
  try {
    const v: unknown = JSON.parse(body.toString('utf8'));
    const f = v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>)[key] : undefined;
    return typeof f === 'string' ? f : null;
  } catch {
    return null;
  }
}

/** Reads a whole upstream body; rejects when the connection breaks before its end. */
function readAll(up: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    up.on('data', (c: Buffer) => chunks.push(c));
    up.on('end', () => resolve(Buffer.concat(chunks)));
    up.on('error', reject);
    up.on('close', () => { if (!up.complete) reject(new Error('the replica closed the connection before the response ended')); });
  });
}

/** A buffered answer: what the client gets, unless it was streamed already. */
interface Answer { status: number; headers: OutgoingHttpHeaders; body: Buffer; replica: string }

function reply(res: ServerResponse, a: Answer): void {
  res.writeHead(a.status, { ...a.headers, 'Content-Length': a.body.length, [REPLICA_HEADER]: a.replica });
  res.end(a.body);
}

/** Ends a started SSE stream with an error event (the openai client raises it as an APIError). */
function sseError(res: ServerResponse, message: string): void {
  if (res.destroyed || res.writableEnded) return;
  res.end(`data: ${JSON.stringify({ error: { message, type: 'server_error', code: 502 } })}\n\n`);
}

type Relay = { kind: 'done' } | { kind: 'broken' } | { kind: 'retry'; why: string };

/**
 * Streams an SSE answer to the client. Nothing is sent until the replica's first body byte, so a
 * replica that fails before it is still retried; after it, a failure, or an end without
 * `data: [DONE]`, closes the client's stream with an error event.
 */
function relaySse(up: IncomingMessage, res: ServerResponse, replica: string): Promise<Relay> {
  return new Promise((resolve) => {
    let started = false;
    let settled = false;
    let tail = '';
    const settle = (r: Relay) => { if (!settled) { settled = true; resolve(r); } };
    const broke = (why: string) => {
      if (settled) return;
      if (!started) return settle({ kind: 'retry', why });
      sseError(res, `replica ${replica} failed mid-stream: ${why}`);
      settle({ kind: 'broken' });
    };
    up.on('data', (c: Buffer) => {
      if (!started) {
        started = true;
        res.writeHead(up.statusCode ?? 200, { ...passHeaders(up.headers), [REPLICA_HEADER]: replica });
      }
      tail = (tail + c.toString('latin1')).slice(-32);
      if (!res.destroyed && !res.write(c)) {
        up.pause();
        res.once('drain', () => up.resume());
      }
    });
    up.on('end', () => {
      if (!started) return broke('the replica sent an empty stream');
      if (!/data: \[DONE\]\s*$/.test(tail)) return broke('the stream ended without data: [DONE]');
      res.end();
      settle({ kind: 'done' });
    });
    up.on('error', (e) => broke(e.message));
    up.on('close', () => { if (!up.complete) broke('the connection closed before the stream ended'); });
  });
}

export async function startRouter(o: RouterOptions): Promise<RunningRouter> {
  const log = o.log ?? ((s: string) => console.log(s));
  const set = new ReplicaSet(o.replicas, { eps: o.eps ?? 0.25, log });
  const maxRetries = o.maxRetries ?? 2;
  const interval = o.healthIntervalMs ?? 2000;
  const limit = o.bodyLimit ?? 2 ** 20;
  const agents = { http: new HttpAgent({ keepAlive: true }), https: new HttpsAgent({ keepAlive: true }) };
  const totals = { requests: 0, inFlight: 0, retries: 0, failures: 0 };
  let closing = false;

  function auth(req: IncomingMessage): void {
    if (!o.apiKey) return;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    const given = Buffer.from(m ? m[1]!.trim() : '');
    const want = Buffer.from(o.apiKey);
    if (!m || given.length !== want.length || !timingSafeEqual(given, want)) {
      throw new HttpError(401, m ? 'invalid API key' : 'missing API key (Authorization: Bearer <key>)', 'authentication_error');
    }
  }

  /** Sends one request to a replica; resolves with its response head, rejects on a connection failure. */
  function open(r: Replica, req: IncomingMessage, path: string, body: Buffer): { response: Promise<IncomingMessage>; abort(): void; reused(): boolean } {
    const u = new URL(r.url + path);
    const https = u.protocol === 'https:';
    const headers = { ...passHeaders(req.headers), 'content-length': body.length };
    const out = (https ? httpsRequest : httpRequest)(u, { method: req.method, headers, agent: https ? agents.https : agents.http });
    const response = new Promise<IncomingMessage>((resolve, reject) => {
      out.on('response', resolve);
      out.on('error', reject);
    });
    out.end(body);
    return { response, abort: () => out.destroy(), reused: () => out.reusedSocket };
  }

  /**
   * Tries replicas from `pick` until one answers below 500: returns its answer, or null when an SSE
   * answer was streamed to the client already. After maxRetries more tries, the last 5xx passes
   * through, or 502 (every try failed to connect) / 503 (no replica up).
   */
  async function attempts(req: IncomingMessage, res: ServerResponse, path: string, body: Buffer, pick: (tried: ReadonlySet<string>) => Replica | null, retries: number, model: string | null): Promise<Answer | null> {
    const tried = new Set<string>();
    const errors: string[] = [];
    let last5xx: Answer | null = null;
    let gone = false;
    let abort = () => {};
    const onClose = () => { if (!res.writableFinished) { gone = true; abort(); } };
    res.on('close', onClose);
    try {
      for (let attempt = 0; attempt <= retries && !gone; attempt++) {
        const r = pick(tried);
        if (!r) break;
        tried.add(r.url);
        r.requests++;
        if (attempt > 0) {
          r.retries++;
          totals.retries++;
        }
        r.inFlight++;
        try {
          let up: IncomingMessage;
          for (let fresh = false; ; fresh = true) {
            const call = open(r, req, path, body);
            abort = call.abort;
            try {
              up = await call.response;
              break;
            } catch (e) {
              // A kept-alive socket the replica closed just as the request went out (the race Node's
              // docs describe for reusedSocket): once more on a new connection, not a failure yet.
              if (fresh || gone || !call.reused() || (e as NodeJS.ErrnoException).code !== 'ECONNRESET') throw e;
            }
          }
          const status = up.statusCode ?? 502;
          const sse = status < 300 && /^text\/event-stream/.test(String(up.headers['content-type'] ?? ''));
          if (sse) {
            const out = await relaySse(up, res, r.url);
            if (out.kind === 'retry') {
              if (gone) return null;
              r.failures++;
              errors.push(`${r.url}: ${out.why}`);
              continue;
            }
            if (out.kind === 'broken' && !gone) {
              r.failures++;
              totals.failures++;
            }
            if (out.kind === 'done' && model && model !== r.base) r.resident.add(model);
            return null;
          }
          const a: Answer = { status, headers: passHeaders(up.headers), body: await readAll(up), replica: r.url };
          if (status >= 500) {
            r.failures++;
            errors.push(`${r.url}: ${status}`);
            last5xx = a;
            continue;
          }
          if (status < 300 && model && model !== r.base) r.resident.add(model);  // until the next poll says otherwise
          return a;
        } catch (e) {
          if (gone) return null;
          const err = e as NodeJS.ErrnoException;
          r.failures++;
          errors.push(`${r.url}: ${err.code ?? err.message}`);
          // A refused connection means nobody listens: skip the replica until a health check passes.
          if (err.code === 'ECONNREFUSED' || err.code === 'EHOSTUNREACH' || err.code === 'ENOTFOUND') set.markDown(r, err.code);
        } finally {
          r.inFlight--;
          abort = () => {};
        }
      }
    } finally {
      res.off('close', onClose);
    }
    if (gone) return null;
    totals.failures++;
    if (last5xx) return last5xx;
    if (!tried.size) throw new HttpError(503, `no replica is up (${set.all.map((r) => `${r.url}: ${r.lastError || 'down'}`).join('; ')})`, 'server_error');
    throw new HttpError(502, `no replica could serve the request (${errors.join('; ')})`, 'server_error');
  }

  async function completion(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    auth(req);
    const body = await readRaw(req, limit);
    const model = field(body, 'model');
    totals.requests++;
    totals.inFlight++;
    try {
      const a = await attempts(req, res, path, body, (tried) => set.pick(model ?? '', tried), maxRetries, model);
      if (a) reply(res, a);
    } finally {
      totals.inFlight--;
    }
  }

  /** Load goes to the adapter's home and then to every other replica holding it (a reload must reach all). Unload goes everywhere. */
  async function adapters(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    auth(req);
    const body = await readRaw(req, limit);
    const id = field(body, 'id') ?? '';
    totals.requests++;
    totals.inFlight++;
    try {
      const unload = path.endsWith('/unload');
      const others = set.all.filter((r) => r.up && (unload || r.resident.has(id)));
      const home = await attempts(req, res, path, body, (tried) => set.home(id, tried), maxRetries, null);
      if (!home) return;
      const rest = others.filter((r) => r.url !== home.replica && (unload || home.status < 300));
      const answers = await Promise.all(rest.map((r) => attempts(req, res, path, body, (tried) => (tried.has(r.url) ? null : r), 0, null).catch(() => null)));
      for (const [i, a] of answers.entries()) if (a && a.status < 300 && unload) set.replicas.get(rest[i]!.url)!.resident.delete(id);
      if (home.status < 300 && unload) set.replicas.get(home.replica)?.resident.delete(id);
      if (home.status < 300 && !unload) set.replicas.get(home.replica)?.resident.add(id);
      // Unload: 200 when any replica held the adapter, else the home's 404.
      reply(res, unload && home.status === 404 ? answers.find((a) => a && a.status < 300) ?? home : home);
    } finally {
      totals.inFlight--;
    }
  }

  /** The union of the up replicas' model lists (each replica applies the caller's key). */
  async function models(req: IncomingMessage, res: ServerResponse): Promise<void> {
    auth(req);
    const up = set.all.filter((r) => r.up);
    const got = await Promise.all(up.map(async (r) => {
      try {
        const f = await fetch(`${r.url}/v1/models`, { headers: req.headers.authorization ? { Authorization: req.headers.authorization } : {}, signal: AbortSignal.timeout(10_000) });
        return { status: f.status, text: await f.text() };
      } catch {
        return null;
      }
    }));
    const data: { id: string }[] = [];
    const seen = new Set<string>();
    let ok = false;
    for (const g of got) {
      if (!g || g.status !== 200) continue;
      let list: unknown;
      try {
        list = (JSON.parse(g.text) as { data?: unknown }).data;
      } catch {
        continue;  // not a model list: as if the replica had not answered
      }
      if (!Array.isArray(list)) continue;
      ok = true;
      for (const m of list as { id?: unknown }[]) if (m && typeof m.id === 'string' && !seen.has(m.id)) { seen.add(m.id); data.push(m as { id: string }); }
    }
    if (ok) return json(res, 200, { object: 'list', data });
    const refused = got.find((g) => g && g.status < 500);
    if (refused) {
      res.writeHead(refused.status, { 'Content-Type': 'application/json' });
      return void res.end(refused.text);
    }
    throw new HttpError(up.length ? 502 : 503, up.length ? 'no replica answered GET /v1/models' : 'no replica is up', 'server_error');
  }

  function metricsText(): string {
    return [
      ...metric('adapterkit_router_requests_total', 'counter', 'requests the router forwarded (before retries)', totals.requests),
      ...metric('adapterkit_router_in_flight', 'gauge', 'requests in flight through the router', totals.inFlight),
      ...metric('adapterkit_router_retries_total', 'counter', 'attempts on another replica after one failed', totals.retries),
      ...metric('adapterkit_router_failures_total', 'counter', 'requests that failed for the client (every try failed, or a stream broke)', totals.failures),
      ...metric('adapterkit_router_replicas_up', 'gauge', 'replicas passing their health check', set.upCount),
      ...set.metricLines(),
    ].join('\n') + '\n';
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const p = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method === 'GET' && p === '/health') {
      const up = set.upCount;
      return json(res, !closing && up ? 200 : 503, { status: closing ? 'draining' : up ? 'ok' : 'no replica up', replicas: set.all.map((r) => ({ url: r.url, up: r.up, inFlight: r.inFlight, resident: r.resident.size })) });
    }
    if (req.method === 'GET' && p === '/metrics') {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
      return void res.end(metricsText());
    }
    if (req.method === 'GET' && p === '/v1/models') return models(req, res);
    if (req.method === 'POST' && (p === '/v1/completions' || p === '/v1/chat/completions')) return completion(req, res, p);
    if (req.method === 'POST' && (p === '/v1/adapters/load' || p === '/v1/adapters/unload')) return adapters(req, res, p);
    throw new HttpError(404, `no route ${req.method} ${p}`, 'not_found_error');
  }

  const server = httpServer((req, res) => {
    route(req, res).catch((e: unknown) => {
      const err = e instanceof HttpError ? e : new HttpError(500, `internal error: ${(e as Error).message}`, 'server_error');
      if (!(e instanceof HttpError)) log(`router request failed: ${(e as Error).stack ?? e}`);
      if (res.headersSent) return void (res.destroyed || res.end());
      json(res, err.status, { error: { message: err.message, type: err.type, code: err.status } }, err.headers);
    });
  });
  server.keepAliveTimeout = 5_000;

  let checking: Promise<void> | null = null;
  const checkHealth = () => (checking ??= set.checkAll(Math.max(1000, interval)).finally(() => { checking = null; }));
  await checkHealth();
  const timer = setInterval(() => void checkHealth(), interval);
  timer.unref();

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8080, o.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const url = `http://${o.host ?? '127.0.0.1'}:${typeof addr === 'object' && addr ? addr.port : o.port}`;
  return {
    url, server, replicas: set, checkHealth,
    async close() {
      closing = true;
      clearInterval(timer);
      const closed = new Promise<void>((r) => server.close(() => r()));
      while (totals.inFlight > 0) await new Promise((r) => setTimeout(r, 20));
      server.closeAllConnections();
      await closed;
      await checking;
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}
