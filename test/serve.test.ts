// The serving engine and OpenAI-compatible server (issue 9), tested from outside as a user would:
// the official `openai` client, batched-vs-alone greedy equality across adapters, every bad input's
// status (and the server keeps serving), a 1,000-client loopback load test with an RSS bound,
// kill -9 of a streaming client frees its KV row, /health and /metrics, and Ctrl-C drain of the CLI.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { writeFileSync, symlinkSync, statSync, truncateSync, rmSync, readdirSync } from 'node:fs';
import { createServer as netServer } from 'node:net';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { MODEL, makeLora, makeAdapterRoot, copyAdapter, greedyAlone, post, metrics } from './serve-helpers.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const FIXTURE_LLAMA = join(repo, 'test', 'fixtures', 'hf-ref', 'llama');
const quiet = () => {};

let dir: string;  // temp folder; adapters in dir/adapters
let root: string;
let A: RunningServer;  // the main server: no auth, roomy queue
let B: RunningServer;  // the strict one: maxBatch 1, maxQueue 2, API keys, small body limit
let rss0Process = 0;  // RSS before any server started

before(async () => {
  const t0 = performance.now();
  rss0Process = process.memoryUsage().rss;
  dir = makeAdapterRoot(4);
  root = join(dir, 'adapters');
  // 20 ids for the load test (copies of a0..a3 under other names: each is its own pool entry).
  for (let i = 0; i < 20; i++) copyAdapter(join(root, `a${i % 4}`), join(root, `l${String(i).padStart(2, '0')}`));
  A = await startServer({ model: MODEL, adapters: root, port: 0, dtype: 'float32', maxBatch: 64, maxQueue: 2000, kvBudgetMb: 72, maxRank: 8, adapterBudgetMb: 64, log: quiet });
  B = await startServer({
    model: MODEL, adapters: root, port: 0, dtype: 'float32', maxBatch: 1, maxQueue: 2, kvBudgetMb: 8, adapterBudgetMb: 16, bodyLimit: 4096, log: quiet,
    apiKeys: new Map<string, string[] | '*'>([['k-all', '*'], ['k-a0', ['a0']]]),
  });
  console.log(`# setup ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});

after(async () => {
  await A?.close();
  await B?.close();
  rmSync(dir, { recursive: true, force: true });
});

const greedy = (s: RunningServer, model: string, prompt: string | number[], max: number, extra: Record<string, unknown> = {}) =>
  post(`${s.url}/v1/completions`, { model, prompt, max_tokens: max, temperature: 0, ...extra });

/** A good request still works (checked after every bad one). */
async function stillServing(s: RunningServer = A, headers: Record<string, string> = {}): Promise<void> {
  const r = await post(`${s.url}/v1/completions`, { model: 'a0', prompt: 'The movie was', max_tokens: 3, temperature: 0 }, headers);
  assert.equal(r.status, 200, `a good request after a bad one: ${JSON.stringify(r.json)}`);
  assert.equal(r.json.usage.completion_tokens > 0, true);
}

/** Waits until the server runs and queues nothing (so counters taken now are not moved by stragglers). */
async function idle(s: RunningServer): Promise<void> {
  for (let i = 0; i < 200 && (s.engine.runningRows || s.engine.queueDepth); i++) await new Promise((r) => setTimeout(r, 50));
}

describe('the openai client', () => {
  let client: OpenAI;
  before(() => { client = new OpenAI({ baseURL: `${A.url}/v1`, apiKey: 'unused', maxRetries: 0 }); });

  test('models.list names the base and every adapter', async () => {
    const ids: string[] = [];
    for await (const m of client.models.list()) ids.push(m.id);
    assert.equal(ids[0], A.baseName);
    for (const id of ['a0', 'a1', 'a2', 'a3', 'l00', 'l19']) assert.ok(ids.includes(id), `${id} in ${ids}`);
  });

  test('completions, chat completions and streaming agree', async () => {
    const c = await client.completions.create({ model: 'a1', prompt: 'The movie was', max_tokens: 12, temperature: 0 });
    assert.equal(c.object, 'text_completion');
    assert.equal(c.choices.length, 1);
    assert.ok(c.choices[0]!.text.length > 0);
    assert.equal(c.usage!.completion_tokens <= 12, true);
    const alone = await greedyAlone('The movie was', join(root, 'a1'), 12);
    assert.equal(c.choices[0]!.text, alone.text, 'the server\'s greedy text equals generate() alone');

    let streamed = '';
    let finish: string | null = null;
    const s = await client.completions.create({ model: 'a1', prompt: 'The movie was', max_tokens: 12, temperature: 0, stream: true });
    for await (const chunk of s) {
      streamed += chunk.choices[0]?.text ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(streamed, c.choices[0]!.text);
    assert.equal(finish, c.choices[0]!.finish_reason);

    const chat = await client.chat.completions.create({ model: 'a2', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 10, temperature: 0 });
    assert.equal(chat.object, 'chat.completion');
    assert.equal(chat.choices[0]!.message.role, 'assistant');
    assert.equal(typeof chat.choices[0]!.message.content, 'string');
    let chatStreamed = '';
    let roleSeen = false;
    const cs = await client.chat.completions.create({ model: 'a2', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 10, temperature: 0, stream: true });
    for await (const chunk of cs) {
      if (chunk.choices[0]?.delta?.role === 'assistant') roleSeen = true;
      chatStreamed += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.ok(roleSeen);
    assert.equal(chatStreamed, chat.choices[0]!.message.content);
  });

  test('n = 2, seed makes sampling reproducible, logprobs have the right count', async () => {
    const ask = (seed: number) => client.completions.create({ model: 'a3', prompt: 'A story about a', max_tokens: 16, temperature: 1, n: 2, seed });
    const [x, y, z] = [await ask(42), await ask(42), await ask(7)];
    assert.equal(x.choices.length, 2);
    assert.deepEqual(x.choices.map((c) => c.index).sort(), [0, 1]);
    assert.deepEqual(x.choices.map((c) => c.text), y.choices.map((c) => c.text), 'the same seed gives the same samples');
    assert.notDeepEqual(x.choices.map((c) => c.text), z.choices.map((c) => c.text), 'another seed gives other samples');
    assert.notEqual(x.choices[0]!.text, x.choices[1]!.text, 'the n sequences differ');

    const lp = await client.completions.create({ model: 'a0', prompt: 'The movie was', max_tokens: 6, temperature: 0, logprobs: 3 });
    const l = lp.choices[0]!.logprobs!;
    const n = lp.usage!.completion_tokens;
    assert.equal(l.tokens!.length, n);
    assert.equal(l.token_logprobs!.length, n);
    assert.equal(l.top_logprobs!.length, n);
    for (const [i, top] of l.top_logprobs!.entries()) {
      assert.equal(Object.keys(top).length, 3, 'three alternatives per token');
      assert.ok(l.token_logprobs![i]! <= 0);
      // greedy: the chosen token is the most likely one
      assert.ok(Math.abs(Math.max(...Object.values(top)) - l.token_logprobs![i]!) < 1e-4);
    }
    const clp = await client.chat.completions.create({ model: 'a0', messages: [{ role: 'user', content: 'Hi' }], max_tokens: 5, temperature: 0, logprobs: true, top_logprobs: 2 });
    const content = clp.choices[0]!.logprobs!.content!;
    assert.equal(content.length, clp.usage!.completion_tokens);
    for (const c of content) assert.equal(c.top_logprobs.length, 2);
  });
});

test('concurrent requests for different adapters and the base give the greedy tokens of each alone', async () => {
  const t0 = performance.now();
  const prompts = ['The movie was', 'I really did not like', 'A story about a', 'Call me Ishmael. Some years ago', 'It was the best of times'];
  const models = [A.baseName, 'a0', 'a1', 'a2', 'a3'];
  const cases = prompts.flatMap((p, i) => models.map((m, j) => ({ p, m, max: 8 + ((i + j) % 3) * 6 })));
  const got = await Promise.all(cases.map((c) => greedy(A, c.m, c.p, c.max)));
  for (const [k, c] of cases.entries()) {
    assert.equal(got[k]!.status, 200);
    const alone = await greedyAlone(c.p, c.m === A.baseName ? null : join(root, c.m), c.max);
    assert.equal(got[k]!.json.choices[0].text, alone.text, `${c.m} "${c.p}": batched vs alone`);
  }
  // the outputs really differ across adapters (else the equality above proves little)
  const texts = new Set(got.slice(0, models.length).map((g) => g.json.choices[0].text));
  assert.ok(texts.size >= 4, `adapters give different text: ${[...texts]}`);
  console.log(`# batched vs alone: ${cases.length} requests ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});

describe('bad inputs get their status and the server keeps serving', () => {
  test('unknown adapter: 404', async () => {
    const r = await greedy(A, 'no-such-adapter', 'hi', 3);
    assert.equal(r.status, 404);
    assert.match(r.json.error.message, /no-such-adapter/);
    await stillServing();
  });

  test('an adapter made for another base model: 400 naming the mismatch', async () => {
    makeLora(FIXTURE_LLAMA, join(root, 'foreign'), 9);
    const r = await greedy(A, 'foreign', 'hi', 3);
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.match(r.json.error.message, /foreign/);
    assert.match(r.json.error.message, /shape|size|mismatch|\[\s*\d+/i, 'names the mismatch');
    await stillServing();
    assert.equal((await greedy(A, 'foreign', 'hi', 3)).status, 400, 'still refused the second time');
  });

  test('rank above --max-rank: 400', async () => {
    makeLora(MODEL, join(root, 'big'), 11, 16);
    const r = await greedy(A, 'big', 'hi', 3);
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /rank 16/);
    assert.match(r.json.error.message, /8/);
    await stillServing();
  });

  test('malformed adapter files: 400', async () => {
    copyAdapter(join(root, 'a0'), join(root, 'badjson'));
    writeFileSync(join(root, 'badjson', 'adapter_config.json'), '{"peft_type": "LORA", "r": ');
    copyAdapter(join(root, 'a0'), join(root, 'trunc'));
    const st = join(root, 'trunc', readdirSync(join(root, 'trunc')).find((f) => f.endsWith('.safetensors'))!);
    truncateSync(st, Math.floor(statSync(st).size / 2));
    copyAdapter(join(root, 'a0'), join(root, 'garbage'));
    writeFileSync(join(root, 'garbage', readdirSync(join(root, 'garbage')).find((f) => f.endsWith('.safetensors'))!), Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3]));
    for (const id of ['badjson', 'trunc', 'garbage']) {
      const r = await greedy(A, id, 'hi', 3);
      assert.equal(r.status, 400, `${id}: ${JSON.stringify(r.json)}`);
      assert.match(r.json.error.message, new RegExp(id));
      await stillServing();
    }
  });

  test('ids that are paths: 400', async () => {
    const outside = join(dir, 'outside');
    makeLora(MODEL, outside, 12);
    symlinkSync(outside, join(root, 'escape'));
    for (const id of ['../x', '/etc', '../outside', 'a0/../a1', 'escape', '..', '.']) {
      const r = await greedy(A, id, 'hi', 3);
      assert.equal(r.status, 400, `${id}: ${r.status} ${JSON.stringify(r.json)}`);
      await stillServing();
    }
    const models = (await (await fetch(`${A.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.ok(!models.data.some((m) => m.id.includes('/') && m.id !== A.baseName));
  });

  test('a prompt longer than the context: 400 with the numbers', async () => {
    const long = new Array<number>(300).fill(5);
    const r = await greedy(A, 'a0', long, 3);
    assert.equal(r.status, 400);
    assert.match(r.json.error.message, /300/);
    assert.match(r.json.error.message, /256/);
    const r2 = await greedy(A, 'a0', new Array<number>(250).fill(5), 20);
    assert.equal(r2.status, 400, 'prompt + max_tokens over the context');
    assert.match(r2.json.error.message, /250/);
    assert.match(r2.json.error.message, /256/);
    await stillServing();
  });

  test('invalid JSON and a bad body: 400; other bad fields: 400', async () => {
    for (const body of ['{"model": "a0", "prompt": ', '[1,2]', '"x"']) {
      const r = await post(`${A.url}/v1/completions`, body);
      assert.equal(r.status, 400, body);
      assert.equal(typeof r.json.error.message, 'string');
    }
    for (const extra of [{ temperature: -1 }, { max_tokens: 0 }, { n: 0 }, { top_p: 2 }, { stop: [1] }, { prompt: [] }]) {
      const r = await post(`${A.url}/v1/completions`, { model: 'a0', prompt: 'hi', ...extra });
      assert.equal(r.status, 400, JSON.stringify(extra));
    }
    await stillServing();
  });

  test('a body over the limit: 413 (declared length and chunked)', async () => {
    const big = JSON.stringify({ model: 'a0', prompt: 'x'.repeat(10_000), max_tokens: 2 });
    const r = await post(`${B.url}/v1/completions`, big, { Authorization: 'Bearer k-all' });
    assert.equal(r.status, 413);
    // chunked: no Content-Length, the limit is found while reading
    const status = await new Promise<number | string>((resolve) => {
      const req = httpRequest(`${B.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer k-all', 'Transfer-Encoding': 'chunked' } }, (res) => {
        res.resume();
        resolve(res.statusCode!);
      });
      req.on('error', (e) => resolve(`error: ${e.message}`));
      let i = 0;
      const write = () => {
        if (i++ >= 10) return req.end();
        if (!req.destroyed) req.write('x'.repeat(1000), () => setImmediate(write));
      };
      write();
    });
    assert.equal(status, 413, 'a chunked body over the limit gets 413, not a reset connection');
    await stillServing(B, { Authorization: 'Bearer k-all' });
  });

  test('a bounded queue: 429 with Retry-After, the rest served', async () => {
    const rs = await Promise.all(Array.from({ length: 12 }, () => post(`${B.url}/v1/completions`, { model: 'a0', prompt: 'The movie was', max_tokens: 12, temperature: 0 }, { Authorization: 'Bearer k-all' })));
    const codes = rs.map((r) => r.status);
    assert.ok(codes.filter((c) => c === 429).length >= 1, `some 429: ${codes}`);
    assert.ok(codes.filter((c) => c === 200).length >= 2, `some 200: ${codes}`);
    assert.ok(codes.every((c) => c === 200 || c === 429), `${codes}`);
    for (const r of rs.filter((x) => x.status === 429)) {
      assert.ok(Number(r.headers.get('retry-after')) >= 1, 'Retry-After');
      assert.equal(r.json.error.type, 'rate_limit_error');
    }
    await stillServing(B, { Authorization: 'Bearer k-all' });
  });

  test('API keys: 401 without or with a wrong key, 403 outside the allow-list', async () => {
    const ask = (model: string, headers: Record<string, string>) => post(`${B.url}/v1/completions`, { model, prompt: 'hi', max_tokens: 2, temperature: 0 }, headers);
    assert.equal((await ask('a0', {})).status, 401);
    assert.equal((await ask('a0', { Authorization: 'Bearer nope' })).status, 401);
    assert.equal((await ask('a0', { Authorization: 'k-all' })).status, 401, 'no Bearer scheme');
    assert.equal((await ask(B.baseName, { Authorization: 'Bearer k-a0' })).status, 403);
    assert.equal((await ask('a1', { Authorization: 'Bearer k-a0' })).status, 403);
    assert.equal((await ask('a0', { Authorization: 'Bearer k-a0' })).status, 200);
    assert.equal((await ask('a1', { Authorization: 'Bearer k-all' })).status, 200);
    assert.equal((await fetch(`${B.url}/v1/models`)).status, 401);
    const listed = (await (await fetch(`${B.url}/v1/models`, { headers: { Authorization: 'Bearer k-a0' } })).json()) as { data: { id: string }[] };
    assert.deepEqual(listed.data.map((m) => m.id), ['a0'], 'a key sees only its models');
    const load = await post(`${B.url}/v1/adapters/load`, { id: 'a1' }, { Authorization: 'Bearer k-a0' });
    assert.equal(load.status, 403, 'a restricted key may not load adapters');
    assert.equal((await post(`${B.url}/v1/adapters/load`, { id: 'a1' })).status, 401);
    await stillServing(B, { Authorization: 'Bearer k-all' });
  });

  test('POST /v1/adapters/load and /unload', async () => {
    const ext = join(dir, 'external');
    makeLora(MODEL, ext, 21);
    let r = await post(`${A.url}/v1/adapters/load`, { id: 'ext', path: ext });
    assert.equal(r.status, 200, JSON.stringify(r.json));
    const models = (await (await fetch(`${A.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.ok(models.data.some((m) => m.id === 'ext'));
    const g = await greedy(A, 'ext', 'The movie was', 10);
    assert.equal(g.status, 200);
    assert.equal(g.json.choices[0].text, (await greedyAlone('The movie was', ext, 10)).text);
    r = await post(`${A.url}/v1/adapters/unload`, { id: 'ext' });
    assert.equal(r.status, 200);
    r = await post(`${A.url}/v1/adapters/unload`, { id: 'never-loaded' });
    assert.equal(r.status, 404);
    r = await post(`${A.url}/v1/adapters/load`, { id: 'nope' });
    assert.equal(r.status, 404);
    r = await post(`${A.url}/v1/adapters/load`, { id: '../a0' });
    assert.equal(r.status, 400);
    r = await post(`${A.url}/v1/adapters/load`, { id: 'x', path: join(dir, 'no-such-folder') });
    assert.equal(r.status, 400);
    r = await post(`${A.url}/v1/adapters/load`, { id: 'foreign2', path: join(root, 'foreign') });
    assert.equal(r.status, 400, 'a foreign adapter is refused through load too');
    r = await post(`${A.url}/v1/adapters/load`, {});
    assert.equal(r.status, 400);
    await stillServing();
  });

  test('reloading an adapter with changed weights serves the new weights; a running request finishes on the old', async () => {
    copyAdapter(join(root, 'a0'), join(root, 'hot'));
    const prompt = 'The movie was';
    const oldLong = await greedyAlone(prompt, join(root, 'a0'), 60);
    const newShort = await greedyAlone(prompt, join(root, 'a1'), 10);
    const oldShort = await greedyAlone(prompt, join(root, 'a0'), 10);
    assert.notEqual(newShort.text, oldShort.text);
    assert.equal((await greedy(A, 'hot', prompt, 10)).json.choices[0].text, oldShort.text);
    // a long streaming request on the old weights, then the weights change and the id reloads
    const res = await fetch(`${A.url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'hot', prompt, max_tokens: 60, temperature: 0, stream: true }) });
    const reader = res.body!.getReader();
    const dec = new TextDecoder();
    let sse = dec.decode((await reader.read()).value, { stream: true });
    try {
    rmSync(join(root, 'hot'), { recursive: true });
    copyAdapter(join(root, 'a1'), join(root, 'hot'));
    const r = await post(`${A.url}/v1/adapters/load`, { id: 'hot' });
    assert.equal(r.status, 200, `reload of a resident adapter: ${JSON.stringify(r.json)}`);
    const fresh = await greedy(A, 'hot', prompt, 10);
    assert.equal(fresh.json.choices[0].text, newShort.text, 'new requests get the new weights');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      sse += dec.decode(value, { stream: true });
    }
    const text = sse.split('\n\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)).choices[0].text).join('');
    assert.equal(text, oldLong.text, 'the running request finished on the old weights, unmixed');
    } finally {
      await reader.cancel().catch(() => {});
    }
    assert.equal((await greedy(A, 'hot', prompt, 10)).json.choices[0].text, newShort.text);
    await stillServing();
  });
});

test('1,000 concurrent clients over loopback: no 5xx, none lost, RSS within the bound', async () => {
  const t0 = performance.now();
  const ids = [A.baseName, ...Array.from({ length: 20 }, (_, i) => `l${String(i).padStart(2, '0')}`)];
  await idle(A);
  const before = await metrics(A.url);
  const prompts = ['The movie was', 'I liked', 'A story', 'Call me', 'It was the'];
  // RSS bound: what the process held before the burst (the model, libtorch, the KV slab already
  // allocated, the adapters of earlier tests) + the adapter budget the pool may still fill + slack for
  // 1,000 sockets with their request/response buffers and the engine's per-request bookkeeping
  // (generously 256 KiB each = 250 MiB) + 256 MiB for allocator (glibc arenas, libtorch caching) noise.
  const rss0 = process.memoryUsage().rss;
  const adapterBudget = 64 * 2 ** 20;  // A's adapterBudgetMb
  const bound = rss0 + adapterBudget + 1000 * 256 * 1024 + 256 * 2 ** 20;
  // And an absolute bound from the parts: the process before any server (node, libtorch, the test's
  // tokenizer) + per server the float32 model (2x the bfloat16 file) + its fixed KV slab + its adapter
  // budget, + the same per-socket and allocator slack.
  const modelF32 = 2 * statSync(join(MODEL, 'model.safetensors')).size;
  const absolute = rss0Process + 2 * modelF32 + A.engine.slab.bytes + B.engine.slab.bytes + (64 + 16) * 2 ** 20 + 1000 * 256 * 1024 + 256 * 2 ** 20;
  let peak = rss0;
  const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 25);
  const N = 1000;
  const seen = new Set<string>();
  let responses = 0;
  const statuses = new Map<number | string, number>();
  await Promise.all(Array.from({ length: N }, async (_, i) => {
    try {
      const r = await post(`${A.url}/v1/completions`, { model: ids[i % ids.length], prompt: prompts[i % prompts.length], max_tokens: 2 + (i % 3), temperature: 0 });
      responses++;
      statuses.set(r.status, (statuses.get(r.status) ?? 0) + 1);
      if (r.status === 200) {
        assert.ok(!seen.has(r.json.id), 'a response id seen twice');
        seen.add(r.json.id);
        assert.equal(r.json.usage.completion_tokens <= 2 + (i % 3), true);
      }
    } catch (e) {
      statuses.set(`client error ${(e as Error).message}`, (statuses.get(`client error ${(e as Error).message}`) ?? 0) + 1);
    }
  }));
  clearInterval(sampler);
  peak = Math.max(peak, process.memoryUsage().rss);
  const after = await metrics(A.url);
  const secs = (performance.now() - t0) / 1000;
  console.log(`# load: ${N} requests in ${secs.toFixed(1)} s, statuses ${JSON.stringify([...statuses])}; RSS ${(rss0 / 2 ** 20).toFixed(0)} -> peak ${(peak / 2 ** 20).toFixed(0)} MiB (bound ${(bound / 2 ** 20).toFixed(0)} MiB, absolute bound ${(absolute / 2 ** 20).toFixed(0)} MiB from ${(rss0Process / 2 ** 20).toFixed(0)} MiB before any server, server RSS metric ${(after.get('adapterkit_rss_bytes')! / 2 ** 20).toFixed(0)} MiB)`);
  assert.equal(responses, N, 'every request got a response');
  assert.deepEqual([...statuses], [[200, N]], 'all 200 (no 5xx, no 429 with maxQueue 2000)');
  assert.equal(seen.size, N);
  assert.equal(after.get('adapterkit_requests_completed_total')! - before.get('adapterkit_requests_completed_total')!, N, 'the server completed exactly N');
  assert.equal(after.get('adapterkit_requests_total')! - before.get('adapterkit_requests_total')!, N);
  assert.equal(after.get('adapterkit_kv_rows_free'), after.get('adapterkit_kv_rows_total'), 'every KV row free afterwards');
  assert.equal(after.get('adapterkit_queue_depth'), 0);
  assert.ok(peak <= bound, `peak RSS ${peak} over the bound ${bound}`);
  assert.ok(peak <= absolute, `peak RSS ${peak} over the absolute bound ${absolute}`);
});

test('kill -9 of a client mid-stream frees its KV row and counts a cancellation', async () => {
  await idle(A);
  const m0 = await metrics(A.url);
  const script = join(dir, 'client.mjs');
  writeFileSync(script, `
    const r = await fetch(${JSON.stringify(`${A.url}/v1/completions`)}, { method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ model: 'a2', prompt: 'The movie was', max_tokens: 240, temperature: 0, stream: true }) });
    const reader = r.body.getReader();
    await reader.read();
    console.log('FIRST');
    setInterval(() => {}, 1000);
  `);
  const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { if (d.toString().includes('FIRST')) resolve(); });
    child.on('exit', (c) => reject(new Error(`client exited ${c} before the first chunk`)));
  });
  const busy = await metrics(A.url);
  assert.equal(busy.get('adapterkit_running_sequences'), 1, 'the stream holds a row');
  child.kill('SIGKILL');
  const t0 = performance.now();
  let m = busy;
  while (performance.now() - t0 < 5000) {
    m = await metrics(A.url);
    if (m.get('adapterkit_kv_rows_free') === m.get('adapterkit_kv_rows_total') && m.get('adapterkit_requests_cancelled_total')! > m0.get('adapterkit_requests_cancelled_total')!) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const waited = performance.now() - t0;
  console.log(`# kill -9: row freed after ${waited.toFixed(0)} ms; ${m.get('adapterkit_generated_tokens_total')! - m0.get('adapterkit_generated_tokens_total')!} tokens generated of 240`);
  assert.equal(m.get('adapterkit_kv_rows_free'), m.get('adapterkit_kv_rows_total'));
  assert.equal(m.get('adapterkit_requests_cancelled_total'), m0.get('adapterkit_requests_cancelled_total')! + 1);
  assert.ok(m.get('adapterkit_generated_tokens_total')! - m0.get('adapterkit_generated_tokens_total')! < 240, 'stopped early');
  await stillServing();
});

test('/health and /metrics with the documented names', async () => {
  const h = await fetch(`${A.url}/health`);
  assert.equal(h.status, 200);
  assert.deepEqual(await h.json(), { status: 'ok' });
  const r = await fetch(`${A.url}/metrics`);
  assert.match(r.headers.get('content-type')!, /text\/plain/);
  const text = await r.text();
  for (const name of [
    'adapterkit_queue_depth', 'adapterkit_running_sequences', 'adapterkit_kv_rows_total', 'adapterkit_kv_rows_free', 'adapterkit_kv_cache_bytes',
    'adapterkit_tokens_per_second', 'adapterkit_requests_total', 'adapterkit_requests_completed_total', 'adapterkit_requests_cancelled_total',
    'adapterkit_requests_rejected_total', 'adapterkit_generated_tokens_total', 'adapterkit_adapter_cache_hits_total', 'adapterkit_adapter_cache_misses_total',
    'adapterkit_adapter_cache_evictions_total', 'adapterkit_adapters_resident', 'adapterkit_rss_bytes',
  ]) {
    assert.match(text, new RegExp(`^# TYPE ${name} (gauge|counter)$`, 'm'), name);
    assert.match(text, new RegExp(`^${name} [0-9.e+-]+$`, 'm'), name);
  }
  for (const h of ['adapterkit_time_to_first_token_seconds', 'adapterkit_request_latency_seconds']) {
    assert.match(text, new RegExp(`^# TYPE ${h} histogram$`, 'm'));
    assert.match(text, new RegExp(`^${h}_bucket\\{le="\\+Inf"\\} \\d+$`, 'm'));
    assert.match(text, new RegExp(`^${h}_count \\d+$`, 'm'));
  }
  const m = await metrics(A.url);
  assert.ok(m.get('adapterkit_adapter_cache_hits_total')! > 0 && m.get('adapterkit_adapter_cache_misses_total')! > 0);
  assert.ok(m.get('adapterkit_rejected_total') === undefined);
  assert.ok((await metrics(B.url)).get('adapterkit_requests_rejected_total')! >= 1, 'B counted its 429s');
  assert.equal(m.get('adapterkit_kv_rows_total'), 64);
  assert.equal(m.get('adapterkit_kv_cache_bytes'), A.engine.slab.bytes);
});

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = netServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

test('adapterkit serve (CLI): Ctrl-C drains a streaming request and exits 0', async () => {
  const t0 = performance.now();
  const port = await freePort();
  const child = spawn(process.execPath, [join(repo, 'bin', 'adapterkit.js'), 'serve', '--port', String(port), '--adapters', root, '--dtype', 'float32', '--max-batch', '4', '--kv-budget-mb', '8'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d));
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { out += d; if (out.includes(`http://127.0.0.1:${port}`)) resolve(); });
    void exited.then((c) => reject(new Error(`serve exited ${c}: ${out}${err}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  const res = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ model: 'a1', prompt: 'The movie was', max_tokens: 80, temperature: 0, stream: true }) });
  assert.equal(res.status, 200);
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let sse = dec.decode((await reader.read()).value, { stream: true });
  child.kill('SIGINT');
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    sse += dec.decode(value, { stream: true });
  }
  assert.match(sse, /data: \[DONE\]\n\n$/, 'the stream ran to its end');
  const events = sse.split('\n\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
  const finish = events.map((e) => e.choices[0].finish_reason).filter(Boolean);
  assert.equal(finish.length, 1);
  const text = events.map((e) => e.choices[0].text).join('');
  assert.equal(text, (await greedyAlone('The movie was', join(root, 'a1'), 80)).text, 'the whole completion');
  const code = await exited;
  assert.equal(code, 0, `exit code; stdout ${out} stderr ${err}`);
  assert.match(out, /SIGINT: draining/);
  assert.match(out, /stopped/);
  await assert.rejects(fetch(`${url}/health`), 'the port is closed');
  console.log(`# CLI drain ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});

