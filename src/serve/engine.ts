// The serving engine: one base model, many adapters, continuous batching.
//  - Requests wait in a bounded queue; each scheduler step admits waiting requests (a prefill token
//    budget per step; fairness across adapters by S-LoRA's virtual token counter: the adapter that has
//    been served the fewest tokens goes first) and runs one decode step for every running sequence.
//    Sequences join and leave the running batch at token boundaries.
//  - Rows of a batch use different adapters through the mixed-batch path (per-row low-rank products
//    as gathered batched GEMMs; base weights never copied).
//  - KV cache: a fixed slab (SlabCache) sized from a memory budget; a request that cannot fit waits.
//  - Cancellation (a client that goes away) frees the sequence's row at the next token boundary.
//  - Intra-op threads per step are measured, not guessed (ThreadTuner): a small model's decode step
//    can run faster on one thread than on all cores.
// Greedy output of a request is the same alone or in a batch: positions come from the mask, padding
// is masked, and each row's computation is independent of the others'.
import { tensor, noGrad, tidy, keep, getNumThreads, setNumThreads, type Tensor } from '../tensor/index.js';
import { KVCache } from '../models/cache.js';
import { nextTokens } from '../models/sampling.js';
import { computeDtype } from '../nn/layers.js';
import type { PretrainedModel } from '../models/types.js';
import type { PeftModel } from '../adapters/index.js';
import type { HFTokenizer } from '../tokenizer/tokenizer.js';
import { SlabCache } from './slab-cache.js';
import { ThreadTuner } from './thread-tuner.js';
import { AdapterPool } from './adapter-pool.js';
import { HttpError } from './errors.js';
import { Histogram } from './metrics.js';
import { completeUtf8Length } from '../tokenizer/byte-level.js';

const UTF8 = new TextDecoder('utf-8');

export interface EngineOptions {
  /** Most sequences decoded together. */
  maxBatch: number;
  /** Most requests waiting; more get 429. */
  maxQueue: number;
  /** KV cache memory (MiB): with the context, sets how many rows the slab holds (at most maxBatch). */
  kvBudgetMb: number;
  /** Positions per sequence (prompt + generated); default the model's context. */
  maxContext?: number;
  /** Prompt tokens prefilled per scheduler step (one longer prompt still goes alone). */
  prefillTokens: number;
  /**
   * Intra-op threads for the model's steps: 'auto' (default) measures 1, 2, 4, ... up to the threads
   * the process has when the engine starts (configureRuntime) and keeps the fastest per kind of step;
   * a number fixes it. Between steps the process's own setting is restored once the engine is idle.
   */
  threads?: number | 'auto';
}

export interface SubmitOptions {
  promptIds: number[];
  /** Public adapter id, or null for the base model. */
  adapter: string | null;
  maxTokens: number;
  temperature: number;
  topP: number;
  seed: number | null;
  /** Sequences per prompt (OpenAI's n). */
  n: number;
  stop: string[];
  /** Top alternatives per token (null: no log-probabilities). */
  logprobs: number | null;
  /** Stop at these token ids (the model's EOS); default the engine's. */
  stopIds?: number[];
}

export interface TokenEvent {
  index: number;
  tokenId: number;
  /** Text this token completes (may be '' while a multi-byte character or a possible stop string is pending). */
  text: string;
  logprob?: number;
  top?: { token: string; logprob: number }[];
}

export interface SequenceResult {
  index: number;
  text: string;
  tokens: number[];
  finishReason: 'stop' | 'length' | 'cancelled';
  logprobs: number[];
  tops: { token: string; logprob: number }[][];
}

export interface RequestHandle {
  id: number;
  /** Streams token events as they are produced. */
  onToken: ((e: TokenEvent) => void) | null;
  /** Resolves when every sequence is done (or the request is cancelled). */
  done: Promise<SequenceResult[]>;
  cancel(): void;
  promptTokens: number;
}

interface Request {
  id: number;
  o: SubmitOptions;
  handle: RequestHandle;
  internal: string | null;
  adapterKey: string;
  enqueued: number;
  firstTokenAt: number | null;
  seqs: Sequence[];
  resolve: (r: SequenceResult[]) => void;
  cancelled: boolean;
  finished: number;
}

interface Sequence {
  req: Request;
  index: number;
  tokens: number[];
  logprobs: number[];
  tops: { token: string; logprob: number }[][];
  /** Text already sent to the client. */
  sent: number;
  /** Incremental detokenization (vLLM's): text of tokens before readOffset is settled; decode windows start at prefixOffset. */
  prefixOffset: number;
  readOffset: number;
  /** Text of tokens before readOffset. */
  settled: string;
  /** Byte-level tokenizers: bytes of an unfinished UTF-8 character, waiting for the next token. */
  pending: number[];
  text: string;
  done: boolean;
  finishReason: SequenceResult['finishReason'];
}

export class Engine {
  readonly slab: SlabCache;
  readonly capacity: number;
  private readonly waiting: Request[] = [];
  private rows: Sequence[] = [];
  private nextId = 1;
  private wake: (() => void) | null = null;
  private running = true;
  private loopDone: Promise<void>;
  /** S-LoRA's virtual token counter per adapter key (fairness). */
  private readonly served = new Map<string, number>();
  private readonly stopIds: number[];
  readonly metrics = {
    requests: 0, completed: 0, cancelled: 0, rejected: 0, promptTokens: 0, generatedTokens: 0, steps: 0,
    ttft: new Histogram([0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]),
    latency: new Histogram([0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120]),
    tokenTimes: [] as number[],
  };

  private readonly bytes: (Uint8Array | null)[] | null;
  /** Threads per step (CPU only; null on other devices, where the host threads barely matter). */
  readonly tuner: ThreadTuner | null;
  private readonly processThreads: number;
  private threadsNow: number;

  constructor(readonly model: PretrainedModel, readonly peft: PeftModel, readonly tok: HFTokenizer, readonly pool: AdapterPool, readonly o: EngineOptions, eosIds: number[], private readonly log: (s: string) => void = () => {}) {
    this.bytes = tok.tokenBytes();
    const ctx = contextOf(model);
    this.capacity = Math.min(o.maxContext ?? ctx, ctx);
    const shape = kvShape(model, peft);
    const perRow = SlabCache.bytesFor({ ...shape, rows: 1, capacity: this.capacity, dtype: computeDtype(model.dtype) });
    const rows = Math.min(o.maxBatch, Math.floor((o.kvBudgetMb * 2 ** 20) / perRow));
    if (rows < 1) throw new Error(`--kv-budget-mb ${o.kvBudgetMb} holds no sequence of ${this.capacity} positions (one needs ${(perRow / 2 ** 20).toFixed(1)} MiB); raise it or lower --max-context`);
    this.slab = new SlabCache({ ...shape, rows, capacity: this.capacity, dtype: computeDtype(model.dtype), device: model.device });
    this.stopIds = eosIds;
    this.processThreads = this.threadsNow = getNumThreads();
    const th = o.threads ?? 'auto';
    if (th !== 'auto' && (!Number.isInteger(th) || th < 1)) throw new RangeError(`threads must be 'auto' or a positive integer, got ${th}`);
    this.tuner = model.device === 'cpu' ? new ThreadTuner(th === 'auto' ? this.processThreads : th, { fixed: th !== 'auto' }) : null;
    this.loopDone = this.loop();
  }

  get queueDepth(): number { return this.waiting.length; }
  get runningRows(): number { return this.rows.length; }
  get rowCapacity(): number { return this.slab.o.rows; }

  /** Queues a request; throws HttpError 400 (too long) or 429 (queue full). */
  submit(o: SubmitOptions): RequestHandle {
    if (!this.running) throw new HttpError(503, 'the server is shutting down', 'server_error');
    const need = o.promptIds.length + o.maxTokens;
    if (o.promptIds.length === 0) throw new HttpError(400, 'the prompt is empty', 'invalid_request_error');
    if (need > this.capacity) {
      throw new HttpError(400, `this model's context is ${this.capacity} tokens; the prompt has ${o.promptIds.length} and max_tokens asks for ${o.maxTokens} more (${need}); shorten the prompt or lower max_tokens`, 'invalid_request_error');
    }
    if (o.n > this.slab.o.rows) throw new HttpError(400, `n = ${o.n} is more than the ${this.slab.o.rows} sequences this server runs at once`, 'invalid_request_error');
    if (this.waiting.length >= this.o.maxQueue) {
      this.metrics.rejected++;
      throw new HttpError(429, `the queue is full (${this.o.maxQueue} requests waiting); retry shortly`, 'rate_limit_error', { 'Retry-After': '1' });
    }
    // The adapter is resolved (and loaded) now, so a bad one is an error before queueing.
    const internal = o.adapter === null ? null : this.pool.acquire(o.adapter);
    let resolve!: (r: SequenceResult[]) => void;
    const done = new Promise<SequenceResult[]>((r) => (resolve = r));
    const id = this.nextId++;
    const req: Request = {
      id, o, internal, adapterKey: o.adapter ?? '', enqueued: performance.now(), firstTokenAt: null, seqs: [], resolve, cancelled: false, finished: 0,
      handle: { id, onToken: null, done, cancel: () => this.cancel(req), promptTokens: o.promptIds.length },
    };
    this.waiting.push(req);
    this.metrics.requests++;
    // A new adapter starts at the lowest counter of those waiting or running (S-LoRA), not at 0.
    if (!this.served.has(req.adapterKey)) {
      const others = [...this.active()].filter((k) => k !== req.adapterKey && this.served.has(k)).map((k) => this.served.get(k)!);
      this.served.set(req.adapterKey, others.length ? Math.min(...others) : 0);
    }
    this.kick();
    return req.handle;
  }

  private active(): Set<string> {
    return new Set([...this.waiting.map((r) => r.adapterKey), ...this.rows.map((s) => s.req.adapterKey)]);
  }

  private cancel(req: Request): void {
    if (req.cancelled || req.finished === req.o.n) return;
    req.cancelled = true;
    const w = this.waiting.indexOf(req);
    if (w >= 0) {
      this.waiting.splice(w, 1);
      this.finishRequest(req);
    }
    this.kick();
  }

  private kick(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Stops admitting, finishes what runs and what waits, then frees the cache. */
  async drain(): Promise<void> {
    this.running = false;
    this.kick();
    await this.loopDone;
    this.slab.dispose();
  }

  private async loop(): Promise<void> {
    for (;;) {
      if (this.waiting.length === 0 && this.rows.length === 0) {
        this.setThreads(this.processThreads);  // idle: the process's own setting again
        if (!this.running) return;
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      try {
        await this.admit();
        if (this.rows.length) await this.decode();
      } catch (e) {
        // A failure inside a step must not take the server down: fail the requests involved.
        this.log(`engine step failed: ${(e as Error).stack ?? e}`);
        for (const s of [...this.rows]) this.finishSeq(s, 'cancelled');
        this.compact();
      }
      await new Promise<void>((r) => setImmediate(r));
    }
  }

  /** Runs one model step (prefill or decode of `tokens` tokens) with the tuner's thread count, timing it. */
  private timed<T>(phase: 'prefill' | 'decode', tokens: number, f: () => T): T {
    if (!this.tuner) return f();
    const key = ThreadTuner.key(phase, tokens);
    const n = this.tuner.pick(key);
    this.setThreads(n);
    const t = performance.now();
    const r = f();
    this.tuner.record(key, n, performance.now() - t, tokens);
    return r;
  }

  private setThreads(n: number): void {
    if (n === this.threadsNow) return;
    setNumThreads(n);
    this.threadsNow = n;
  }

  /** Picks the next waiting request: the adapter with the fewest tokens served so far, oldest first. */
  private pickNext(): Request | null {
    if (!this.waiting.length) return null;
    let best = this.waiting[0]!;
    let bestServed = this.served.get(best.adapterKey) ?? 0;
    for (const r of this.waiting) {
      const s = this.served.get(r.adapterKey) ?? 0;
      if (s < bestServed) {
        best = r;
        bestServed = s;
      }
    }
    return best;
  }

  private async admit(): Promise<void> {
    const batch: Request[] = [];
    let tokens = 0;
    let rows = this.slab.freeRows;
    for (;;) {
      const r = this.pickNext();
      if (!r || r.o.n > rows) break;
      if (batch.length && tokens + r.o.promptIds.length > this.o.prefillTokens) break;
      this.waiting.splice(this.waiting.indexOf(r), 1);
      batch.push(r);
      tokens += r.o.promptIds.length;
      rows -= r.o.n;
      this.served.set(r.adapterKey, (this.served.get(r.adapterKey) ?? 0) + r.o.promptIds.length);
    }
    if (!batch.length) return;
    const tmax = Math.max(...batch.map((r) => r.o.promptIds.length));
    const ids = batch.map((r) => [...new Array<number>(tmax - r.o.promptIds.length).fill(0), ...r.o.promptIds]);
    const mask = batch.map((r) => [...new Array<number>(tmax - r.o.promptIds.length).fill(0), ...new Array<number>(r.o.promptIds.length).fill(1)]);
    const cache = new KVCache(this.model.numLayers);
    try {
      const logits = this.timed('prefill', tokens, () => noGrad(() => tidy(() => {
        const input = tensor(ids, { dtype: 'int64', device: this.model.device });
        const m = tensor(mask, { dtype: 'int64', device: this.model.device });
        const out = this.peft.forward({ inputIds: input, attentionMask: m, cache, logitsToKeep: 1, adapterNames: batch.map((r) => r.internal) });
        return keep(out.logits.select(1, -1).to('float32'));  // (B, V)
      })));
      try {
        const layers = Array.from({ length: this.model.numLayers }, (_, l) => cache.layer(l));
        const now = performance.now();
        for (let b = 0; b < batch.length; b++) {
          const r = batch[b]!;
          this.metrics.promptTokens += r.o.promptIds.length;
          for (let i = 0; i < r.o.n; i++) {
            const seq: Sequence = { req: r, index: i, tokens: [], logprobs: [], tops: [], sent: 0, text: '', done: false, finishReason: 'length', prefixOffset: 0, readOffset: 0, settled: '', pending: [] };
            r.seqs.push(seq);
            this.slab.addRow(layers, b, r.o.promptIds.length);
            this.rows.push(seq);
          }
          r.firstTokenAt = now;
          this.metrics.ttft.observe((now - r.enqueued) / 1000);
        }
        // The first token of each sequence comes from the prefill's last position.
        const rowOf = batch.flatMap((r, b) => r.seqs.map(() => b));
        const seqs = batch.flatMap((r) => r.seqs);
        await this.emit(seqs, logits, rowOf);
      } finally {
        logits.dispose();
      }
    } finally {
      cache.dispose();
    }
    this.compact();
  }

  private async decode(): Promise<void> {
    const seqs = this.rows;
    const last = seqs.map((s) => [s.tokens[s.tokens.length - 1] ?? s.req.o.promptIds[s.req.o.promptIds.length - 1]!]);
    const logits = this.timed('decode', seqs.length, () => noGrad(() => tidy(() => {
      const mask = this.slab.beginStep(1);  // (N, S + 1)
      const input = tensor(last, { dtype: 'int64', device: this.model.device });
      const out = this.peft.forward({ inputIds: input, attentionMask: mask, cache: this.slab, logitsToKeep: 1, adapterNames: seqs.map((s) => s.req.internal) });
      return keep(out.logits.select(1, -1).to('float32'));  // (N, V)
    })));
    this.slab.endStep(1);
    this.metrics.steps++;
    try {
      await this.emit(seqs, logits, seqs.map((_, i) => i));
    } finally {
      logits.dispose();
    }
    this.compact();
  }

  /** Samples the next token of each sequence from its logits row, streams it, and marks finished ones. */
  private async emit(seqs: Sequence[], logits: Tensor, rowOf: number[]): Promise<void> {
    const greedyRows = seqs.map((s, i) => (s.req.o.temperature === 0 ? i : -1)).filter((i) => i >= 0);
    const picks = new Array<number>(seqs.length);
    noGrad(() => tidy(() => {
      if (greedyRows.length) {
        const idx = tensor(greedyRows.map((i) => rowOf[i]!), { dtype: 'int64', device: logits.device });
        const am = Array.from(logits.indexSelect(0, idx).argmax(-1).data() as BigInt64Array, Number);
        greedyRows.forEach((i, j) => (picks[i] = am[j]!));
      }
      seqs.forEach((s, i) => {
        if (s.req.o.temperature === 0) return;
        const row = logits.narrow(0, rowOf[i]!, 1);
        const seed = s.req.o.seed === null ? undefined : s.req.o.seed + 7919 * s.index;
        picks[i] = Number((nextTokens(row, row.argmax(-1, true), { doSample: true, temperature: s.req.o.temperature, topP: s.req.o.topP, seed }, s.tokens.length).data() as BigInt64Array)[0]);
      });
    }));
    const wantLp = seqs.some((s) => s.req.o.logprobs !== null);
    let lp: { chosen: number[]; tops: { token: string; logprob: number }[][] } | null = null;
    if (wantLp) {
      lp = noGrad(() => tidy(() => {
        const rows = tensor(rowOf, { dtype: 'int64', device: logits.device });
        const ls = logits.indexSelect(0, rows).logSoftmax(-1);  // (N, V)
        const chosen = Array.from(ls.gather(1, tensor(picks.map((p) => [p]), { dtype: 'int64', device: logits.device })).squeeze(1).data() as Float32Array);
        const k = Math.max(1, ...seqs.map((s) => s.req.o.logprobs ?? 0));
        const { values, indices } = ls.topk(k, -1);
        const v = values.toArray() as number[][];
        const ix = indices.toArray() as number[][];
        return { chosen, tops: v.map((row, i) => row.slice(0, seqs[i]!.req.o.logprobs ?? 0).map((lv, j) => ({ token: this.tok.idToToken(Number(ix[i]![j]!)) ?? '', logprob: lv }))) };
      }));
    }
    for (let i = 0; i < seqs.length; i++) {
      const s = seqs[i]!;
      if (s.done) continue;
      const t = picks[i]!;
      s.tokens.push(t);
      this.metrics.generatedTokens++;
      this.metrics.tokenTimes.push(performance.now());
      this.served.set(s.req.adapterKey, (this.served.get(s.req.adapterKey) ?? 0) + 2);  // output tokens weigh 2 (S-LoRA's w_out)
      if (lp && s.req.o.logprobs !== null) {
        s.logprobs.push(lp.chosen[i]!);
        s.tops.push(lp.tops[i]!);
      }
      const stopId = (s.req.o.stopIds ?? this.stopIds).includes(t);
      const text = stopId ? s.text : await this.appendText(s);
      let finish: SequenceResult['finishReason'] | null = stopId ? 'stop' : null;
      let full = text;
      for (const st of s.req.o.stop) {
        const at = text.indexOf(st);
        if (st && at >= 0 && at < full.length) {
          full = text.slice(0, at);
          finish = 'stop';
        }
      }
      if (!finish && s.tokens.length >= s.req.o.maxTokens) finish = 'length';
      if (!finish && s.req.cancelled) finish = 'cancelled';
      // Hold back an incomplete character and anything that could still become a stop string.
      let safe = full.length;
      if (!finish) {
        if (full.endsWith('\uFFFD')) safe = full.length - 1;
        for (const st of s.req.o.stop) for (let k = Math.min(st.length - 1, full.length); k > 0; k--) if (st.startsWith(full.slice(full.length - k))) safe = Math.min(safe, full.length - k);
      }
      const delta = safe > s.sent ? full.slice(s.sent, safe) : '';
      s.sent = Math.max(s.sent, safe);
      s.text = full;
      try {
        s.req.handle.onToken?.({ index: s.index, tokenId: t, text: delta, logprob: lp ? lp.chosen[i] : undefined, top: lp ? lp.tops[i] : undefined });
      } catch {
        s.req.cancelled = true;  // a client whose stream fails is gone
      }
      if (finish) this.finishSeq(s, finish);
    }
  }

  /**
   * The sequence's text with its newest token, decoding only a short window (vLLM's incremental
   * detokenization): the window's text minus the text of its settled prefix is the new piece, kept
   * pending while it ends in an incomplete character.
   */
  private async appendText(s: Sequence): Promise<string> {
    const toks = s.tokens;
    if (this.bytes) {
      // Byte-level BPE: the new token's bytes, with UTF-8 completed across tokens, in JavaScript
      // (the same text as decoding the whole sequence; no tokenizer call per token).
      const b = this.bytes[toks[toks.length - 1]!];
      if (b) for (const x of b) s.pending.push(x);
      const n = completeUtf8Length(s.pending);
      if (n > 0) {
        s.settled += UTF8.decode(Uint8Array.from(s.pending.slice(0, n)));
        s.pending = s.pending.slice(n);
      }
      return s.pending.length ? s.settled + UTF8.decode(Uint8Array.from(s.pending)) : s.settled;
    }
    const prefix = await this.tok.decode(toks.slice(s.prefixOffset, s.readOffset));
    const full = await this.tok.decode(toks.slice(s.prefixOffset));
    if (full.length > prefix.length && !full.endsWith('\uFFFD')) {
      const settled = s.settled + full.slice(prefix.length);
      s.settled = settled;
      s.prefixOffset = s.readOffset;
      s.readOffset = toks.length;
      return settled;
    }
    return s.settled + full.slice(prefix.length);
  }

  private finishSeq(s: Sequence, reason: SequenceResult['finishReason']): void {
    if (s.done) return;
    s.done = true;
    s.finishReason = s.req.cancelled && reason !== 'stop' && reason !== 'length' ? 'cancelled' : reason;
    s.req.finished++;
    if (s.req.finished === s.req.o.n) this.finishRequest(s.req);
  }

  private finishRequest(r: Request): void {
    if (r.internal) this.pool.release(r.internal);
    if (r.cancelled) this.metrics.cancelled++;
    else this.metrics.completed++;
    this.metrics.latency.observe((performance.now() - r.enqueued) / 1000);
    r.resolve(r.seqs.map((s) => ({ index: s.index, text: s.text, tokens: s.tokens, finishReason: s.done ? s.finishReason : 'cancelled', logprobs: s.logprobs, tops: s.tops })));
  }

  /** Frees the rows of finished and cancelled sequences (a cancelled request stops at this token boundary). */
  private compact(): void {
    for (let r = this.rows.length - 1; r >= 0; r--) {
      const s = this.rows[r]!;
      if (!s.done && s.req.cancelled) this.finishSeq(s, 'cancelled');
      if (!s.done) continue;
      const moved = this.slab.removeRow(r);
      if (moved >= 0) this.rows[r] = this.rows[moved]!;
      this.rows.pop();
    }
  }

  /** Tokens per second over the last `seconds`. */
  tokensPerSecond(seconds = 10): number {
    const now = performance.now();
    const t = this.metrics.tokenTimes;
    while (t.length && t[0]! < now - 60_000) t.shift();
    return t.filter((x) => x >= now - seconds * 1000).length / seconds;
  }
}

function contextOf(model: PretrainedModel): number {
  const v = model.config.max_position_embeddings ?? model.config.n_positions;
  return typeof v === 'number' && v > 0 ? v : 2048;
}

/** Key/value heads and head dim, read from one tiny forward (the same for every family). */
function kvShape(model: PretrainedModel, peft: PeftModel): { layers: number; kvHeads: number; headDim: number } {
  const cache = new KVCache(model.numLayers);
  try {
    noGrad(() => tidy(() => void peft.withAdaptersDisabled(() => model.forward({ inputIds: tensor([[0]], { dtype: 'int64', device: model.device }), cache, logitsToKeep: 1 }))));
    const k = cache.layer(0).k;
    return { layers: model.numLayers, kvHeads: k.shape[1]!, headDim: k.shape[3]! };
  } finally {
    cache.dispose();
  }
}
