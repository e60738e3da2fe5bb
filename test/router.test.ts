// The router (issue 13 part 4), tested from outside as a user would: two real replicas in-process (the
// embedded model, LoRA adapters in an adapter root) and `startRouter` in front. The official `openai`
// client works through it; one adapter's requests land on one replica; many adapters spread over both;
// 4xx answers pass through unchanged; a replica killed mid-load loses no request that had not started
// streaming (they are retried on the other and give the same greedy text), a stream it was serving
// ends with an error event; health checks take the dead replica out and a restarted one back in; a
// drained replica (Ctrl-C) finishes its requests while new ones go to the other. A fake replica checks
// the retry rules one by one (5xx, resets before and after the first byte, a stream without [DONE]).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import OpenAI from 'openai';
import { startServer, type RunningServer, type ServeOptions } from '../src/serve/server.js';
import { startRouter, type RunningRouter } from '../src/index.js';
import { MODEL, makeAdapterRoot, copyAdapter, post, metrics } from './serve-helpers.js';

const repo = fileURLToPath(new URL('../..', import.meta.url));
const quiet = () => {};
const IDS = Array.from({ length: 16 }, (_, i) => `c${String(i).padStart(2, '0')}`);

let dir: string;
let root: string;
let R: RunningServer[] = [];  // the replicas
let router: RunningRouter;
const replicaOptions = (): ServeOptions => ({ model: MODEL, adapters: root, port: 0, dtype: 'float32', maxBatch: 16, kvBudgetMb: 16, maxRank: 8, log: quiet });

before(async () => {
  dir = makeAdapterRoot(2);
  root = join(dir, 'adapters');
  for (const [i, id] of IDS.entries()) copyAdapter(join(root, `a${i % 2}`), join(root, id));
  R = [await startServer(replicaOptions()), await startServer(replicaOptions())];
  router = await startRouter({ replicas: R.map((r) => r.url), port: 0, healthIntervalMs: 200, maxRetries: 2, log: quiet });
});

after(async () => {
  await router?.close();
  for (const r of R) await r.close();
  rmSync(dir, { recursive: true, force: true });
});

const complete = (model: string, max: number, extra: Record<string, unknown> = {}) =>
  post(`${router.url}/v1/completions`, { model, prompt: 'The movie was', max_tokens: max, temperature: 0, ...extra });

/** Requests routed to each replica so far, from the router's /metrics. */
async function routed(): Promise<number[]> {
  const m = await metrics(router.url);
  return R.map((r) => m.get(`adapterkit_router_replica_requests_total{replica="${r.url}"}`) ?? NaN);
}

test('the openai client works through the router: models, completions, chat, streaming', async () => {
  const client = new OpenAI({ baseURL: `${router.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const ids: string[] = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.equal(ids[0], R[0]!.baseName, 'the base first, once');
  assert.equal(ids.filter((x) => x === R[0]!.baseName).length, 1);
  for (const id of ['a0', 'a1', ...IDS]) assert.ok(ids.includes(id), `${id} in the union`);

  const c = await client.completions.create({ model: 'a1', prompt: 'The movie was', max_tokens: 12, temperature: 0 });
  const direct = await post(`${R[0]!.url}/v1/completions`, { model: 'a1', prompt: 'The movie was', max_tokens: 12, temperature: 0 });
  assert.equal(c.choices[0]!.text, direct.json.choices[0].text, 'the same greedy text as the replica gives directly');
  assert.ok(c.choices[0]!.text.length > 0);

  let streamed = '';
  for await (const chunk of await client.completions.create({ model: 'a1', prompt: 'The movie was', max_tokens: 12, temperature: 0, stream: true })) streamed += chunk.choices[0]?.text ?? '';
  assert.equal(streamed, c.choices[0]!.text);

  const chat = await client.chat.completions.create({ model: 'a1', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 10, temperature: 0 });
  assert.equal(chat.object, 'chat.completion');
  let chatStreamed = '';
  let role = false;
  for await (const chunk of await client.chat.completions.create({ model: 'a1', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 10, temperature: 0, stream: true })) {
    role ||= chunk.choices[0]?.delta?.role === 'assistant';
    chatStreamed += chunk.choices[0]?.delta?.content ?? '';
  }
  assert.ok(role);
  assert.equal(chatStreamed, chat.choices[0]!.message.content);
});

test('4xx answers pass through unchanged; the router\'s own errors are OpenAI-shaped', async () => {
  const viaRouter = await complete('no-such-adapter', 3);
  const direct = await post(`${R[1]!.url}/v1/completions`, { model: 'no-such-adapter', prompt: 'The movie was', max_tokens: 3, temperature: 0 });
  assert.equal(viaRouter.status, 404);
  assert.deepEqual(viaRouter.json, direct.json);
  const badJson = await post(`${router.url}/v1/completions`, '{"model": "a0", "prompt": ');
  assert.equal(badJson.status, 400, 'a body the router cannot read still reaches a replica, which says why');
  assert.match(badJson.json.error.message, /JSON/);
  const tooLong = await complete('a0', 3, { prompt: new Array<number>(300).fill(5) });
  assert.equal(tooLong.status, 400);
  assert.match(tooLong.json.error.message, /300/);
  const noRoute = await post(`${router.url}/v1/embeddings`, {});
  assert.equal(noRoute.status, 404);
  assert.equal(noRoute.json.error.type, 'not_found_error');
});

test('one adapter\'s requests land on one replica; many adapters spread over both', async () => {
  const before = await routed();
  const served = new Set<string>();
  for (let i = 0; i < 6; i++) {
    const r = await complete('a0', 4);
    assert.equal(r.status, 200);
    served.add(r.headers.get('x-adapterkit-replica')!);
  }
  assert.equal(served.size, 1, `a0 went to ${[...served]}`);
  const delta = (await routed()).map((n, i) => n - before[i]!);
  assert.deepEqual([...delta].sort(), [0, 6], `routed per replica: ${delta}`);
  const home = R.findIndex((r) => r.url === [...served][0]);
  assert.ok(R[home]!.pool.resident().some((e) => e.id === 'a0'), 'a0 is resident on its replica');
  assert.ok(!R[1 - home]!.pool.resident().some((e) => e.id === 'a0'), 'and was never loaded on the other');

  // 16 adapters, each once: both replicas get some (all on one: chance 2^-15 for random ports).
  const where = new Map<string, string>();
  for (const id of IDS) {
    const r = await complete(id, 2);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    where.set(id, r.headers.get('x-adapterkit-replica')!);
  }
  const counts = R.map((r) => [...where.values()].filter((u) => u === r.url).length);
  assert.ok(counts.every((n) => n > 0), `adapters per replica: ${counts}`);
  // Each adapter stays where it went (it is resident there now), and the router's poll sees it.
  for (const id of IDS.slice(0, 6)) assert.equal((await complete(id, 2)).headers.get('x-adapterkit-replica'), where.get(id), id);
  await router.checkHealth();
  const m = await metrics(router.url);
  R.forEach((r, i) => assert.equal(m.get(`adapterkit_router_replica_adapters_resident{replica="${r.url}"}`), r.pool.resident().length, `replica ${i} residency`));
});

test('the router\'s API key, load/unload to the adapter\'s home, and the CLI', async () => {
  const locked = await startRouter({ replicas: R.map((r) => r.url), port: 0, apiKey: 'sekrit', log: quiet });
  try {
    const ask = (h: Record<string, string>) => post(`${locked.url}/v1/completions`, { model: 'a0', prompt: 'hi', max_tokens: 2 }, h);
    assert.equal((await ask({})).status, 401);
    assert.equal((await ask({ Authorization: 'Bearer wrong!' })).status, 401);
    assert.equal((await ask({ Authorization: 'Bearer sekrit' })).status, 200);
    assert.equal((await fetch(`${locked.url}/health`)).status, 200, '/health needs no key');
  } finally {
    await locked.close();
  }
  copyAdapter(join(root, 'a1'), join(dir, 'extra'));
  const load = await post(`${router.url}/v1/adapters/load`, { id: 'x1', path: join(dir, 'extra') });
  assert.equal(load.status, 200, JSON.stringify(load.json));
  const home = load.headers.get('x-adapterkit-replica')!;
  assert.equal(router.replicas.home('x1')!.url, home);
  const r = await complete('x1', 3);
  assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.equal(r.headers.get('x-adapterkit-replica'), home, 'the loaded adapter is served where it was loaded');
  const un = await post(`${router.url}/v1/adapters/unload`, { id: 'x1' });
  assert.equal(un.status, 200);
  assert.equal((await post(`${router.url}/v1/adapters/unload`, { id: 'x1' })).status, 404, 'not resident anywhere now');

  const cli = (...args: string[]) => spawnSync(process.execPath, [join(repo, 'bin', 'adapterkit.js'), ...args], { encoding: 'utf8' });
  assert.match(cli('--help').stdout, /route +one OpenAI-compatible front/);
  assert.match(cli('route', '--help').stdout, /usage: adapterkit route --replicas URL,URL/);
  const missing = cli('route');
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /--replicas is required/);
  const notUrl = cli('route', '--replicas', 'localhost:8000');
  assert.equal(notUrl.status, 2);
  assert.match(notUrl.stderr, /--replicas: replica "localhost:8000" must be an http/);

  const child = spawn(process.execPath, [join(repo, 'bin', 'adapterkit.js'), 'route', '--replicas', R.map((x) => x.url).join(','), '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const exited = new Promise<number | null>((res) => child.on('exit', (c) => res(c)));
  const url = await new Promise<string>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => { out += d; const m = /route: (http:\/\/\S+)/.exec(out); if (m) resolve(m[1]!); });
    void exited.then((c) => reject(new Error(`route exited ${c}: ${out}`)));
  });
  assert.match(out, /2 replicas: .* up, .* up/);
  const viaCli = await post(`${url}/v1/completions`, { model: 'a0', prompt: 'The movie was', max_tokens: 3, temperature: 0 });
  assert.equal(viaCli.status, 200);
  child.kill('SIGINT');
  assert.equal(await exited, 0, out);
});

/** A replica that misbehaves on purpose: its completions answer as `mode` says; /health and /v1/stats are fine. */
async function fakeReplica(): Promise<{ url: string; server: Server; mode: string; hits: number }> {
  const f = { url: '', server: createServer(), mode: '503', hits: 0 };
  f.server.on('request', (req, res) => {
    const p = req.url ?? '';
    if (p === '/health') return void res.end('{"status":"ok"}');
    if (p === '/v1/stats') return void res.end('{"base":"fake-base","resident":[{"id":"fake-resident"}]}');
    if (p === '/v1/models') return void res.end('{"object":"list","data":[{"id":"fake-only","object":"model"}]}');
    f.hits++;
    req.resume();
    if (f.mode === '503') {
      res.writeHead(503, { 'Content-Type': 'application/json' });
      return void res.end('{"error":{"message":"fake overload","type":"server_error","code":503}}');
    }
    if (f.mode === 'reset') return void req.socket.destroy();
    res.writeHead(200, { 'Content-Type': 'text/event-stream' });
    if (f.mode === 'headers-then-reset') return void res.flushHeaders(), void setTimeout(() => req.socket.destroy(), 20);
    res.write('data: {"id":"x","object":"text_completion","choices":[{"index":0,"text":"partial","finish_reason":null}]}\n\n');
    if (f.mode === 'sse-then-reset') setTimeout(() => req.socket.destroy(), 20);
    else res.end();  // 'sse-no-done': a clean end without data: [DONE] is a truncation too
  });
  await new Promise<void>((r) => f.server.listen(0, '127.0.0.1', r));
  f.url = `http://127.0.0.1:${(f.server.address() as { port: number }).port}`;
  return f;
}

test('retry rules with a misbehaving replica: 5xx, resets and empty streams are retried, a started stream is not', async () => {
  const fake = await fakeReplica();
  const real = R[0]!;
  const r2 = await startRouter({ replicas: [fake.url, real.url], port: 0, healthIntervalMs: 60_000, maxRetries: 1, log: quiet });
  try {
    // Adapters whose home is the fake, which the real replica serves but does not hold resident yet
    // (else the router would rightly prefer the real one): a fresh one per case, since a success on
    // the real replica makes it resident there.
    const fresh = Array.from({ length: 48 }, (_, i) => `f${i}`);
    for (const f of fresh) copyAdapter(join(root, 'a0'), join(root, f));
    const onFake = fresh.filter((x) => r2.replicas.home(x)!.url === fake.url);
    assert.ok(onFake.length >= 7, `adapters homed on the fake: ${onFake.length}`);
    let id = onFake.pop()!;
    const models = (await (await fetch(`${r2.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.ok(models.data.some((m) => m.id === 'fake-only') && models.data.some((m) => m.id === 'a0'), 'the union of both lists');
    const ask = (stream: boolean) => post(`${r2.url}/v1/completions`, { model: id, prompt: 'The movie was', max_tokens: 4, temperature: 0, stream });
    for (const mode of ['503', 'reset', 'headers-then-reset']) {
      fake.mode = mode;
      id = onFake.pop()!;
      const hits = fake.hits;
      const r = await ask(mode !== '503');
      // (a reset on a kept-alive socket is tried once more on a new one before the next replica)
      assert.ok(fake.hits > hits, `${mode}: tried the fake first`);
      assert.equal(r.status, 200, `${mode}: ${JSON.stringify(r.json)}`);
      assert.equal(r.headers.get('x-adapterkit-replica'), real.url, `${mode}: retried on the real replica`);
      if (mode !== '503') assert.match(String(r.json), /data: \[DONE\]\n\n$/);
    }
    for (const mode of ['sse-then-reset', 'sse-no-done']) {
      fake.mode = mode;
      id = onFake.pop()!;
      const r = await ask(true);
      assert.equal(r.status, 200);
      const text = String(r.json);
      assert.match(text, /"partial"/, `${mode}: what was streamed reached the client`);
      assert.match(text, /data: \{"error":\{"message":"replica [^"]* failed mid-stream/, `${mode}: then an error event`);
      assert.doesNotMatch(text, /^data: \[DONE\]/m, `${mode}: and no [DONE]`);
      assert.equal(r.headers.get('x-adapterkit-replica'), fake.url, `${mode}: not retried once streaming`);
    }
    // The last try's 5xx passes through unchanged when no retry is left.
    const r0 = await startRouter({ replicas: [fake.url], port: 0, healthIntervalMs: 60_000, maxRetries: 1, log: quiet });
    fake.mode = '503';
    const only = await post(`${r0.url}/v1/completions`, { model: id, prompt: 'hi' });
    assert.equal(only.status, 503);
    assert.equal(only.json.error.message, 'fake overload');
    await r0.close();
    // Nobody listening: the refused request is retried on the real replica, and the fake marked down
    // at once (r2's health checks are a minute apart); a router with only the fake answers 503.
    fake.server.close();
    fake.server.closeAllConnections();
    id = onFake.pop()!;
    const refused = await ask(false);
    assert.equal(refused.status, 200, JSON.stringify(refused.json));
    assert.equal(refused.headers.get('x-adapterkit-replica'), real.url);
    assert.equal(r2.replicas.replicas.get(fake.url)!.up, false, 'marked down by the refusal');
    assert.match(r2.replicas.replicas.get(fake.url)!.lastError, /ECONNREFUSED/);
    const r1 = await startRouter({ replicas: [fake.url], port: 0, healthIntervalMs: 60_000, log: quiet });
    assert.equal(r1.replicas.upCount, 0, 'the first health round found it down');
    const none = await post(`${r1.url}/v1/completions`, { model: id, prompt: 'hi' });
    assert.equal(none.status, 503);
    assert.match(none.json.error.message, /no replica is up/);
    assert.equal((await fetch(`${r1.url}/health`)).status, 503);
    await r1.close();
  } finally {
    await r2.close();
    fake.server.close();
  }
});

test('a replica killed under load: requests not yet streaming are retried on the other, a started stream ends with an error', async () => {
  const client = new OpenAI({ baseURL: `${router.url}/v1`, apiKey: 'unused', maxRetries: 0 });
  const reference = (await complete('a0', 60)).json.choices[0].text as string;
  const victim = R.find((r) => r.url === router.replicas.pick('a0')!.url)!;
  const survivor = R.find((r) => r !== victim)!;
  const m0 = await metrics(router.url);

  // A long stream on a0's replica, started (first chunk read) before the kill.
  const stream = await client.completions.create({ model: 'a0', prompt: 'The movie was', max_tokens: 200, temperature: 0, stream: true });
  const it = stream[Symbol.asyncIterator]();
  await it.next();
  // Non-streaming requests: the bounded load puts about half on the victim; kill it while they run.
  const pending = Array.from({ length: 8 }, () => complete('a0', 60));
  for (let i = 0; i < 400 && victim.engine.runningRows + victim.engine.queueDepth < 3; i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(victim.engine.runningRows + victim.engine.queueDepth >= 3, 'the victim holds the stream and some of the others');
  victim.server.close();
  victim.server.closeAllConnections();  // a crash, not a drain: every connection is reset at once
  // And more right after, before any health check ran: refused connections, retried too.
  const late = Array.from({ length: 4 }, () => complete('a0', 60));

  await assert.rejects(async () => { for (;;) if ((await it.next()).done) break; }, (e: Error) => /mid-stream/.test(e.message), 'the stream ends with an error event, not a silent end');
  const all = await Promise.all([...pending, ...late]);
  for (const r of all) {
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.equal(r.json.choices[0].text, reference, 'the whole greedy completion, from the survivor');
  }
  assert.ok(all.every((r) => r.headers.get('x-adapterkit-replica') === survivor.url));
  const m = await metrics(router.url);
  const key = (name: string, r: RunningServer) => `${name}{replica="${r.url}"}`;
  const retries = m.get('adapterkit_router_retries_total')! - m0.get('adapterkit_router_retries_total')!;
  assert.ok(retries >= 2, `retries ${retries}`);
  assert.ok(m.get(key('adapterkit_router_replica_retries_total', survivor))! - m0.get(key('adapterkit_router_replica_retries_total', survivor))! >= 2);
  assert.ok(m.get(key('adapterkit_router_replica_failures_total', victim))! - m0.get(key('adapterkit_router_replica_failures_total', victim))! >= 3);
  assert.equal(m.get('adapterkit_router_failures_total')! - m0.get('adapterkit_router_failures_total')!, 1, 'only the started stream failed for its client');

  // Health checks: the victim is down and skipped; restarted on its port, it comes back.
  await router.checkHealth();
  assert.equal((await metrics(router.url)).get(key('adapterkit_router_replica_up', victim)), 0);
  assert.equal((await fetch(`${router.url}/health`)).status, 200, 'the router is healthy with one replica');
  assert.equal((await complete('c00', 2)).headers.get('x-adapterkit-replica'), survivor.url);
  await victim.close();
  const port = Number(new URL(victim.url).port);
  const revived = await startServer({ ...replicaOptions(), port });
  R[R.indexOf(victim)] = revived;
  await router.checkHealth();
  assert.equal((await metrics(router.url)).get(key('adapterkit_router_replica_up', revived)), 1);
  const spread = new Set<string>();
  for (const id of IDS) spread.add((await complete(id, 2)).headers.get('x-adapterkit-replica')!);
  assert.equal(spread.size, 2, 'the revived replica takes requests again');
});

test('a replica drained (Ctrl-C) under load: its running requests finish, new ones go to the other', async () => {
  const [gone, stays] = [R[0]!, R[1]!];
  const ids = ['a0', 'a1', ...IDS];
  const first = ids.map((id) => complete(id, 30));
  for (let i = 0; i < 400 && gone.engine.runningRows + gone.engine.queueDepth < 2; i++) await new Promise((r) => setTimeout(r, 5));
  const drained = gone.close();
  R = [stays];  // after() must not close it twice
  const second = ids.map((id) => complete(id, 30));
  const all = await Promise.all([...first, ...second]);
  await drained;
  for (const r of all) assert.equal(r.status, 200, JSON.stringify(r.json));
  assert.ok(all.slice(ids.length).every((r) => r.headers.get('x-adapterkit-replica') === stays.url), 'after the drain began, only the other replica serves');
});
