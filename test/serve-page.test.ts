// The playground page at `/` in a real headless browser: Debian's chromium driven by puppeteer-core
// (nothing downloads a browser). Skips, naming the binary, where /usr/bin/chromium is missing.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../src/serve/server.js';
import { MODEL, makeAdapterRoot, post } from './serve-helpers.js';

// The callbacks below run in the page; this Node project has no DOM types.
/* eslint-disable @typescript-eslint/no-explicit-any */
declare const document: any;
type El = any;

const CHROMIUM = '/usr/bin/chromium';
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is missing (apt-get install -y chromium)`;

let dir: string;
let S: RunningServer;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
let browser: any;

before(async () => {
  if (skip) return;
  dir = makeAdapterRoot(3);
  S = await startServer({ model: MODEL, adapters: join(dir, 'adapters'), port: 0, dtype: 'float32', maxBatch: 8, kvBudgetMb: 16, log: () => {} });
  const puppeteer = (await import('puppeteer-core')).default;
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--headless=new'] });
});

after(async () => {
  await browser?.close();
  await S?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

test('the playground: adapters listed, streamed greedy text equals the API, live figures update', { skip }, async () => {
  const t0 = performance.now();
  const page = await browser.newPage();
  const errors: string[] = [];
  page.on('pageerror', (e: Error) => errors.push(e.message));
  await page.goto(S.url + '/', { waitUntil: 'load' });

  // the select lists the base and the adapters
  await page.waitForFunction(() => (document.getElementById('model') as El).options.length >= 4, { timeout: 10_000 });
  const options: string[] = await page.$$eval('#model option', (os: El[]) => os.map((o) => o.value));
  assert.deepEqual(options, [S.baseName, 'a0', 'a1', 'a2']);
  const labels: string[] = await page.$$eval('#model option', (os: El[]) => os.map((o) => o.textContent ?? ''));
  assert.match(labels[0]!, /\(base\)/);

  // live figures: filled from /v1/stats
  await page.waitForFunction(() => document.getElementById('s-known')!.textContent !== '–', { timeout: 10_000 });
  assert.equal(await page.$eval('#s-known', (e: El) => e.textContent), '3');
  assert.match(await page.$eval('#s-running', (e: El) => e.textContent), /^0 \/ 8$/);
  assert.equal(await page.$eval('#base', (e: El) => e.textContent), S.baseName);

  // type a prompt, choose an adapter, Generate
  const prompt = 'Call me Ishmael. Some years ago';
  await page.$eval('#prompt', (e: El) => { e.value = ''; });
  await page.type('#prompt', prompt);
  await page.select('#model', 'a1');
  await page.$eval('#max', (e: El) => { e.value = ''; });
  await page.type('#max', '24');
  await page.click('#go');
  await page.waitForFunction(() => document.getElementById('out')!.dataset.done === '1', { timeout: 30_000 });
  const gen: string = await page.$eval('#gen', (e: El) => e.textContent);
  assert.ok(gen.length > 0, 'streamed text');
  assert.equal(await page.$eval('#err', (e: El) => e.textContent), '');
  const api = await post(`${S.url}/v1/completions`, { model: 'a1', prompt, max_tokens: 24, temperature: 0 });
  assert.equal(api.status, 200);
  assert.equal(gen, api.json.choices[0].text, 'the page shows the greedy completion of the API');

  // while requests run, the figures show them: running > 0, then tokens/s > 0
  const busy = Promise.all(Array.from({ length: 6 }, (_, i) => post(`${S.url}/v1/completions`, { model: ['a0', 'a2', S.baseName][i % 3], prompt: 'The movie was', max_tokens: 200, temperature: 0 })));
  await page.waitForFunction(() => !/^0 \//.test(document.getElementById('s-running')!.textContent ?? ''), { timeout: 10_000 });
  await busy;
  await page.waitForFunction(() => Number(document.getElementById('s-tps')!.textContent) > 0, { timeout: 10_000 });
  await page.waitForFunction(() => /^0 \//.test(document.getElementById('s-running')!.textContent ?? ''), { timeout: 10_000 });
  assert.ok(Number(await page.$eval('#s-gen', (e: El) => e.textContent)) >= 6 * 1, 'tokens generated counted');
  assert.deepEqual(errors, [], 'no page errors');
  console.log(`# page test ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});
