// adapterkit's OpenAI-compatible HTTP server over the engine. Node's own http module: no framework
// dependency to keep patched, streaming (SSE) and back-pressure are plain, and every limit (body size,
// queue, auth) is a few lines here. Endpoints: POST /v1/completions, POST /v1/chat/completions (SSE
// with stream: true), GET /v1/models, POST /v1/adapters/load and /unload, GET /health, GET /metrics
// (Prometheus text), GET /v1/stats (JSON for the page), GET / (the playground page).
import { createServer as httpServer, type IncomingMessage, type ServerResponse, type Server } from 'node:http';
import { basename } from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadModel } from '../models/load.js';
import { readGenerationConfig } from '../models/generation-config.js';
import { PeftModel } from '../adapters/index.js';
import { HFTokenizer, type ChatMessage } from '../tokenizer/tokenizer.js';
import type { DType } from '../tensor/index.js';
import { Engine, type SubmitOptions, type RequestHandle, type TokenEvent } from './engine.js';
import { AdapterPool } from './adapter-pool.js';
import { HttpError } from './errors.js';
import { metric } from './metrics.js';
import { PLAYGROUND_HTML } from './page.js';

export interface ServeOptions {
  model: string;
  /** Adapter root (one folder per id); null: none. */
  adapters: string | null;
  host?: string;
  /** 0: any free port. */
  port?: number;
  dtype?: DType | 'auto';
  maxBatch?: number;
  maxQueue?: number;
  kvBudgetMb?: number;
  maxContext?: number;
  maxAdaptersResident?: number;
  adapterBudgetMb?: number;
  maxRank?: number;
  /** Intra-op threads per model step: 'auto' (default; measured per kind of step) or a fixed count. */
  threads?: number | 'auto';
  /** Bearer keys: key -> adapter ids it may use ('*': all, the base included). Empty: no auth. */
  apiKeys?: Map<string, string[] | '*'>;
  /** Request body limit in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** Largest max_tokens accepted (default the context). */
  log?: (s: string) => void;
}

export interface RunningServer {
  url: string;
  server: Server;
  engine: Engine;
  pool: AdapterPool;
  baseName: string;
  /** Stops accepting, finishes in-flight requests, frees the model. */
  close(): Promise<void>;
}

const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
};

function errorBody(e: HttpError): unknown {
  return { error: { message: e.message, type: e.type, code: e.status } };
}

function readBody(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length'] ?? 0);
    if (declared > limit) {
      reject(new HttpError(413, `request body of ${declared} bytes is over the limit of ${limit}`, 'invalid_request_error'));
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (size > limit) return;  // over the limit: drain the rest without keeping it, the 413 is on its way
      size += c.length;
      if (size > limit) {
        chunks.length = 0;
        reject(new HttpError(413, `request body is over the limit of ${limit} bytes`, 'invalid_request_error', { Connection: 'close' }));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (size > limit) return;
      const text = Buffer.concat(chunks).toString('utf8');
      if (!text.trim()) return resolve({});
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new HttpError(400, `request body is not valid JSON: ${(e as Error).message}`, 'invalid_request_error'));
      }
    });
    req.on('error', reject);
  });
}

const bad = (msg: string) => new HttpError(400, msg, 'invalid_request_error');

function num(body: Record<string, unknown>, key: string, def: number, lo: number, hi: number, int = false): number {
  const v = body[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi || (int && !Number.isInteger(v))) throw bad(`${key} must be ${int ? 'an integer' : 'a number'} in [${lo}, ${hi}], got ${JSON.stringify(v)}`);
  return v;
}

function stopList(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return [v];
  if (Array.isArray(v) && v.length <= 4 && v.every((s) => typeof s === 'string')) return v as string[];
  throw bad('stop must be a string or a list of up to 4 strings');
}

export async function startServer(o: ServeOptions): Promise<RunningServer> {
  const log = o.log ?? ((s: string) => console.log(s));
  const model = loadModel(o.model, { dtype: o.dtype ?? 'auto', task: 'causal-lm', log: () => {} });
  const tok = HFTokenizer.fromDir(o.model);
  const gen = readGenerationConfig(o.model);
  const eos = [...new Set([...(gen?.eosTokenIds ?? []), ...(tok.eosTokenId !== null ? [tok.eosTokenId] : [])])];
  const peft = new PeftModel(model);
  model.eval();
  const pool = new AdapterPool(peft, {
    root: o.adapters, maxResident: o.maxAdaptersResident ?? 64, budgetBytes: (o.adapterBudgetMb ?? 1024) * 2 ** 20, maxRank: o.maxRank ?? 64,
  }, log);
  const engine = new Engine(model, peft, tok, pool, {
    maxBatch: o.maxBatch ?? 32, maxQueue: o.maxQueue ?? 256, kvBudgetMb: o.kvBudgetMb ?? 512, maxContext: o.maxContext, prefillTokens: 512, threads: o.threads,
  }, eos, log);
  const baseName = typeof model.config._name_or_path === 'string' && !model.config._name_or_path.startsWith('/') ? model.config._name_or_path : basename(o.model);
  const limit = o.bodyLimit ?? 2 ** 20;
  const keys = o.apiKeys ?? new Map<string, string[] | '*'>();
  const started = Date.now();
  let closing = false;

  /** The adapter a `model` field names (null: the base), after the key's allow-list. */
  function adapterFor(name: unknown, allowed: string[] | '*'): string | null {
    if (typeof name !== 'string' || !name) throw bad('model is required: the base model\'s name or an adapter id (GET /v1/models lists them)');
    const adapter = name === baseName ? null : name;
    if (allowed !== '*' && !allowed.includes(adapter ?? baseName)) throw new HttpError(403, `this API key may not use "${name}"`, 'permission_error');
    return adapter;
  }

  function auth(req: IncomingMessage): string[] | '*' {
    if (!keys.size) return '*';
    const h = req.headers.authorization ?? '';
    const m = /^Bearer\s+(.+)$/i.exec(h);
    const allowed = m ? keys.get(m[1]!.trim()) : undefined;
    if (!allowed) throw new HttpError(401, m ? 'invalid API key' : 'missing API key (Authorization: Bearer <key>)', 'authentication_error');
    return allowed;
  }

  function samplingOf(body: Record<string, unknown>, promptIds: number[], adapter: string | null, logprobs: number | null, maxDefault: number): SubmitOptions {
    const maxTokens = num(body, body.max_completion_tokens !== undefined ? 'max_completion_tokens' : 'max_tokens', maxDefault, 1, engine.capacity, true);
    return {
      promptIds, adapter, maxTokens,
      temperature: num(body, 'temperature', 1, 0, 2),
      topP: num(body, 'top_p', 1, 0, 1),
      seed: body.seed === undefined || body.seed === null ? null : num(body, 'seed', 0, 0, 2 ** 31 - 1, true),
      n: num(body, 'n', 1, 1, 16, true),
      stop: stopList(body.stop),
      logprobs,
    };
  }

  async function completion(req: IncomingMessage, res: ServerResponse, chat: boolean): Promise<void> {
    const allowed = auth(req);
    const body = await readBody(req, limit);
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw bad('request body must be a JSON object');
    const b = body as Record<string, unknown>;
    const adapter = adapterFor(b.model, allowed);
    let promptIds: number[];
    let logprobs: number | null = null;
    if (chat) {
      const msgs = b.messages;
      if (!Array.isArray(msgs) || !msgs.length || !msgs.every((m) => m && typeof m === 'object' && typeof (m as ChatMessage).role === 'string' && typeof (m as ChatMessage).content === 'string')) {
        throw bad('messages must be a non-empty list of {role, content} with string content');
      }
      const text = tok.chatTemplate ? tok.applyChatTemplate(msgs as ChatMessage[], { addGenerationPrompt: true }) : (msgs as ChatMessage[]).map((m) => `${m.role}: ${m.content}\n`).join('') + 'assistant:';
      promptIds = await tok.encode(text, { addSpecialTokens: !tok.chatTemplate });
      if (b.logprobs === true) logprobs = num(b, 'top_logprobs', 0, 0, 20, true);
    } else {
      const p = b.prompt;
      if (typeof p === 'string') promptIds = await tok.encode(p);
      else if (Array.isArray(p) && p.length && p.every((t) => Number.isInteger(t) && t >= 0 && t < tok.vocabSize)) promptIds = p as number[];
      else throw bad('prompt must be a string or a list of token ids (one prompt per request)');
      if (b.logprobs !== undefined && b.logprobs !== null) logprobs = num(b, 'logprobs', 0, 0, 20, true);
    }
    if (promptIds.length >= engine.capacity) throw bad(`the prompt is ${promptIds.length} tokens; this model's context is ${engine.capacity} tokens and needs room for at least one new token`);
    const opts = samplingOf(b, promptIds, adapter, logprobs, chat ? Math.min(256, engine.capacity - promptIds.length) : 16);
    const handle = engine.submit(opts);  // 400 / 404 / 429 before anything is sent
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const modelName = b.model as string;
    // A client that goes away cancels its request at the next token boundary.
    res.on('close', () => { if (!res.writableFinished) handle.cancel(); });
    if (b.stream === true) return stream(res, handle, { id, created, modelName, chat, n: opts.n, logprobs: logprobs !== null });
    const results = await handle.done;
    const completionTokens = results.reduce((s, r) => s + r.tokens.length, 0);
    const usage = { prompt_tokens: promptIds.length, completion_tokens: completionTokens, total_tokens: promptIds.length + completionTokens };
    const choices = results.map((r) => chat
      ? {
        index: r.index, message: { role: 'assistant', content: r.text }, finish_reason: r.finishReason,
        logprobs: logprobs === null ? null : { content: r.tokens.map((t, i) => ({ token: tok.idToToken(t) ?? '', logprob: r.logprobs[i], bytes: null, top_logprobs: r.tops[i]!.map((x) => ({ ...x, bytes: null })) })) },
      }
      : {
        index: r.index, text: r.text, finish_reason: r.finishReason,
        logprobs: logprobs === null ? null : { tokens: r.tokens.map((t) => tok.idToToken(t) ?? ''), token_logprobs: r.logprobs, top_logprobs: r.tops.map((x) => Object.fromEntries(x.map((y) => [y.token, y.logprob]))), text_offset: [] },
      });
    json(res, 200, { id, object: chat ? 'chat.completion' : 'text_completion', created, model: modelName, choices, usage });
  }

  async function stream(res: ServerResponse, handle: RequestHandle, m: { id: string; created: number; modelName: string; chat: boolean; n: number; logprobs: boolean }): Promise<void> {
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    const send = (o: unknown) => res.write(`data: ${JSON.stringify(o)}\n\n`);
    const object = m.chat ? 'chat.completion.chunk' : 'text_completion';
    if (m.chat) for (let i = 0; i < m.n; i++) send({ id: m.id, object, created: m.created, model: m.modelName, choices: [{ index: i, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
    handle.onToken = (e: TokenEvent) => {
      if (res.destroyed) throw new Error('client gone');
      if (!e.text && !m.logprobs) return;
      const choice = m.chat
        ? { index: e.index, delta: { content: e.text }, finish_reason: null, ...(m.logprobs ? { logprobs: { content: [{ token: tok.idToToken(e.tokenId) ?? '', logprob: e.logprob, bytes: null, top_logprobs: (e.top ?? []).map((x) => ({ ...x, bytes: null })) }] } } : {}) }
        : { index: e.index, text: e.text, finish_reason: null, logprobs: m.logprobs ? { tokens: [tok.idToToken(e.tokenId) ?? ''], token_logprobs: [e.logprob], top_logprobs: [Object.fromEntries((e.top ?? []).map((y) => [y.token, y.logprob]))] } : null };
      send({ id: m.id, object, created: m.created, model: m.modelName, choices: [choice] });
    };
    const results = await handle.done;
    if (res.destroyed) return;
    for (const r of results) {
      send({ id: m.id, object, created: m.created, model: m.modelName, choices: [m.chat ? { index: r.index, delta: {}, finish_reason: r.finishReason } : { index: r.index, text: '', finish_reason: r.finishReason }] });
    }
    res.write('data: [DONE]\n\n');
    res.end();
  }

  function metricsText(): string {
    const lines = [
      ...metric('adapterkit_queue_depth', 'gauge', 'requests waiting', engine.queueDepth),
      ...metric('adapterkit_running_sequences', 'gauge', 'sequences in the running batch', engine.runningRows),
      ...metric('adapterkit_kv_rows_total', 'gauge', 'sequence rows the KV cache holds', engine.rowCapacity),
      ...metric('adapterkit_kv_rows_free', 'gauge', 'free KV cache rows', engine.slab.freeRows),
      ...metric('adapterkit_kv_cache_bytes', 'gauge', 'bytes of the KV cache (fixed)', engine.slab.bytes),
      ...metric('adapterkit_tokens_per_second', 'gauge', 'generated tokens per second over the last 10 s', engine.tokensPerSecond()),
      ...metric('adapterkit_requests_total', 'counter', 'requests accepted', engine.metrics.requests),
      ...metric('adapterkit_requests_completed_total', 'counter', 'requests completed', engine.metrics.completed),
      ...metric('adapterkit_requests_cancelled_total', 'counter', 'requests cancelled (client gone)', engine.metrics.cancelled),
      ...metric('adapterkit_requests_rejected_total', 'counter', 'requests refused with 429', engine.metrics.rejected),
      ...metric('adapterkit_prompt_tokens_total', 'counter', 'prompt tokens prefilled', engine.metrics.promptTokens),
      ...metric('adapterkit_generated_tokens_total', 'counter', 'tokens generated', engine.metrics.generatedTokens),
      ...metric('adapterkit_adapter_cache_hits_total', 'counter', 'adapter pool hits', pool.stats.hits),
      ...metric('adapterkit_adapter_cache_misses_total', 'counter', 'adapter pool misses (loads on first use)', pool.stats.misses),
      ...metric('adapterkit_adapter_cache_evictions_total', 'counter', 'adapters evicted (LRU)', pool.stats.evictions),
      ...metric('adapterkit_adapters_resident', 'gauge', 'adapters resident', pool.resident().length),
      ...metric('adapterkit_adapter_bytes_resident', 'gauge', 'bytes of resident adapter weights', pool.residentBytes),
      ...metric('adapterkit_rss_bytes', 'gauge', 'resident set size of the server process', process.memoryUsage().rss),
      ...engine.metrics.ttft.lines('adapterkit_time_to_first_token_seconds', 'time from arrival to the first token'),
      ...engine.metrics.latency.lines('adapterkit_request_latency_seconds', 'time from arrival to the last token'),
    ];
    return lines.join('\n') + '\n';
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const p = url.pathname;
    if (req.method === 'GET' && p === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
      res.end(PLAYGROUND_HTML);
      return;
    }
    if (req.method === 'GET' && p === '/health') return json(res, closing ? 503 : 200, { status: closing ? 'draining' : 'ok' });
    if (req.method === 'GET' && p === '/metrics') {
      res.writeHead(200, { 'Content-Type': 'text/plain; version=0.0.4' });
      res.end(metricsText());
      return;
    }
    if (req.method === 'GET' && p === '/v1/stats') {
      return json(res, 200, {
        base: baseName, queue: engine.queueDepth, running: engine.runningRows, rows: engine.rowCapacity, tokensPerSecond: engine.tokensPerSecond(),
        resident: pool.resident(), known: pool.known().length, uptimeSeconds: (Date.now() - started) / 1000, generatedTokens: engine.metrics.generatedTokens,
        threads: engine.tuner?.chosen() ?? {},
      });
    }
    if (req.method === 'GET' && p === '/v1/models') {
      const allowed = auth(req);
      const ids = [baseName, ...pool.known()].filter((m) => allowed === '*' || allowed.includes(m));
      return json(res, 200, { object: 'list', data: ids.map((m) => ({ id: m, object: 'model', created: Math.floor(started / 1000), owned_by: 'adapterkit', ...(m === baseName ? {} : { parent: baseName }) })) });
    }
    if (req.method === 'POST' && p === '/v1/completions') return completion(req, res, false);
    if (req.method === 'POST' && p === '/v1/chat/completions') return completion(req, res, true);
    if (req.method === 'POST' && (p === '/v1/adapters/load' || p === '/v1/adapters/unload')) {
      const allowed = auth(req);
      if (allowed !== '*') throw new HttpError(403, 'only an API key for all models may load or unload adapters', 'permission_error');
      const b = (await readBody(req, limit)) as Record<string, unknown>;
      if (typeof b.id !== 'string') throw bad('id (the adapter id) is required');
      if (p.endsWith('/load')) {
        if (b.path !== undefined && typeof b.path !== 'string') throw bad('path must be a string');
        pool.load(b.id, b.path as string | undefined);
        return json(res, 200, { id: b.id, loaded: true });
      }
      return json(res, pool.unload(b.id) ? 200 : 404, { id: b.id, unloaded: true });
    }
    throw new HttpError(404, `no route ${req.method} ${p}`, 'not_found_error');
  }

  const server = httpServer((req, res) => {
    route(req, res).catch((e: unknown) => {
      const err = e instanceof HttpError ? e : new HttpError(500, `internal error: ${(e as Error).message}`, 'server_error');
      if (!(e instanceof HttpError)) log(`request failed: ${(e as Error).stack ?? e}`);
      if (res.headersSent) {
        if (!res.destroyed) res.end();
        return;
      }
      json(res, err.status, errorBody(err), err.headers);
    });
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 8000, o.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const url = `http://${o.host ?? '127.0.0.1'}:${typeof addr === 'object' && addr ? addr.port : o.port}`;
  return {
    url, server, engine, pool, baseName,
    async close() {
      closing = true;
      const closed = new Promise<void>((r) => server.close(() => r()));
      await engine.drain();
      server.closeAllConnections?.();
      await closed;
      peft.dispose();
    },
  };
}
