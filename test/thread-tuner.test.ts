// The serving engine's per-step thread choice (src/serve/thread-tuner.ts): the tuner's rule on
// synthetic timings (a table of cases), then the engine really switching threads, choosing, giving
// the same greedy tokens as a fixed thread count, and restoring the process's setting when idle.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ThreadTuner } from '../src/serve/thread-tuner.js';
import { loadModel, PeftModel, getNumThreads, setNumThreads } from '../src/index.js';
import { Engine } from '../src/serve/engine.js';
import { AdapterPool } from '../src/serve/adapter-pool.js';
import { MODEL, tok, EOS, makeAdapterRoot } from './serve-helpers.js';
import { join } from 'node:path';
import { rmSync } from 'node:fs';

test('candidates are 1, 2, 4, ... up to the maximum; fixed and bad settings', () => {
  const cases: [number, number[]][] = [[1, [1]], [2, [1, 2]], [3, [1, 2, 3]], [6, [1, 2, 4, 6]], [8, [1, 2, 4, 8]], [16, [1, 2, 4, 8, 16]]];
  for (const [max, want] of cases) assert.deepEqual(new ThreadTuner(max).candidates, want, `max ${max}`);
  assert.deepEqual(new ThreadTuner(6, { fixed: true }).candidates, [6]);
  for (const bad of [0, -1, 1.5, NaN]) assert.throws(() => new ThreadTuner(bad), /positive integer/);
  assert.throws(() => new ThreadTuner(2, { trials: 0 }), /trials/);
  // One candidate: nothing to measure, every pick is it.
  const one = new ThreadTuner(4, { fixed: true });
  for (let i = 0; i < 5; i++) assert.equal(one.pick('decode:32'), 4);
  assert.deepEqual(one.chosen(), {});
});

test('groups: phase and tokens rounded up to a power of two', () => {
  const cases: [Parameters<typeof ThreadTuner.key>, string][] = [
    [['decode', 1], 'decode:1'], [['decode', 2], 'decode:2'], [['decode', 3], 'decode:4'], [['decode', 17], 'decode:32'],
    [['decode', 32], 'decode:32'], [['prefill', 33], 'prefill:64'], [['prefill', 512], 'prefill:512'], [['prefill', 0], 'prefill:1'],
  ];
  for (const [args, want] of cases) assert.equal(ThreadTuner.key(...args), want, JSON.stringify(args));
});

/** Drives a tuner with a cost model ms(threads) per token; returns the picks in order. */
function drive(t: ThreadTuner, key: string, steps: number, ms: (threads: number, step: number) => number, tokens = 32): number[] {
  const picks: number[] = [];
  for (let i = 0; i < steps; i++) {
    const n = t.pick(key);
    picks.push(n);
    t.record(key, n, ms(n, i) * tokens, tokens);
  }
  return picks;
}

test('measures every candidate round-robin, then keeps the lowest median', () => {
  const cases: { name: string; max: number; ms: (n: number, i: number) => number; want: number }[] = [
    { name: 'small steps: one thread wins', max: 2, ms: (n) => (n === 1 ? 0.2 : 0.33), want: 1 },
    { name: 'large steps: all cores win', max: 2, ms: (n) => 1 / n, want: 2 },
    { name: 'four cores, two best', max: 4, ms: (n) => ({ 1: 1, 2: 0.6, 4: 0.7 })[n]!, want: 2 },
    // One 100x outlier for the winner (a GC pause, a page fault) does not move a median of five.
    { name: 'an outlier does not decide', max: 2, ms: (n, i) => (n === 1 ? (i === 0 ? 100 : 0.2) : 0.3), want: 1 },
    { name: 'a tie goes to fewer threads', max: 4, ms: () => 0.5, want: 1 },
  ];
  for (const c of cases) {
    const t = new ThreadTuner(c.max, { trials: 5 });
    const n = t.candidates.length;
    const picks = drive(t, 'decode:32', 5 * n + 20, c.ms);
    // Exploration: each round visits every candidate once, in order.
    for (let r = 0; r < 5; r++) assert.deepEqual(picks.slice(r * n, (r + 1) * n), t.candidates, `${c.name}: round ${r}`);
    assert.ok(picks.slice(5 * n).every((p) => p === c.want), `${c.name}: after measuring, always ${c.want} (got ${picks.slice(5 * n)})`);
    assert.deepEqual(t.chosen(), { 'decode:32': c.want }, c.name);
  }
});

test('groups are tuned separately, per token (not per step), and measured again after revisitSteps', () => {
  const t = new ThreadTuner(2, { trials: 3, revisitSteps: 10 });
  // Decode steps of 32 rows: 1 thread is faster. Prefill of 512 tokens: 2 threads are.
  drive(t, 'decode:32', 6, (n) => (n === 1 ? 0.2 : 0.3));
  drive(t, 'prefill:512', 6, (n) => (n === 1 ? 0.2 : 0.12), 512);
  assert.deepEqual(t.chosen(), { 'decode:32': 1, 'prefill:512': 2 });
  // Samples are normalised by tokens: a step of 20 rows at 2 threads is not "faster" for being shorter.
  const u = new ThreadTuner(2, { trials: 1 });
  u.record('decode:32', 1, 1, 1);  // not picked yet: ignored
  assert.equal(u.pick('decode:32'), 1);
  u.record('decode:32', 1, 32 * 0.2, 32);
  assert.equal(u.pick('decode:32'), 2);
  u.record('decode:32', 2, 20 * 0.25, 20);  // 5 ms for 20 rows is more per token than 6.4 ms for 32
  assert.deepEqual(u.chosen(), { 'decode:32': 1 });
  // The machine changes (another job takes a core): after revisitSteps the group is measured again.
  const picks = drive(t, 'decode:32', 10 + 6 + 5, (n) => (n === 1 ? 0.6 : 0.3));
  assert.ok(picks.slice(0, 10).every((p) => p === 1), 'the old choice holds until revisitSteps');
  assert.deepEqual(picks.slice(10, 16), [1, 2, 1, 2, 1, 2], 'then every candidate is measured again');
  assert.ok(picks.slice(16).every((p) => p === 2), 'and the new best is kept');
  // Bad records change nothing.
  t.record('decode:32', 3, 1, 32);
  t.record('nowhere', 1, 1, 32);
  t.record('decode:32', 1, NaN, 32);
  assert.deepEqual(t.chosen(), { 'decode:32': 2, 'prefill:512': 2 });
});

test('the engine switches threads per step, chooses, gives the greedy tokens of a fixed count, and restores the process setting when idle', async () => {
  const root = makeAdapterRoot(2);
  const before = getNumThreads();
  setNumThreads(2);
  try {
    const run = async (threads: number | 'auto') => {
      const model = loadModel(MODEL, { dtype: 'float32' });
      model.eval();
      const peft = new PeftModel(model);
      const pool = new AdapterPool(peft, { root: join(root, 'adapters'), maxResident: 4, budgetBytes: 2 ** 28, maxRank: 64 });
      const engine = new Engine(model, peft, tok, pool, { maxBatch: 8, maxQueue: 64, kvBudgetMb: 64, prefillTokens: 64, maxContext: 128, threads }, EOS);
      const seen = new Set<number>();
      const fwd = peft.forward.bind(peft);
      peft.forward = (input) => {
        seen.add(getNumThreads());
        return fwd(input);
      };
      const prompts = Array.from({ length: 8 }, (_, i) => Array.from({ length: 5 + i }, (_, j) => 10 + ((i * 31 + j * 7) % 900)));
      const outs = await Promise.all(prompts.map((p, i) => engine.submit({ promptIds: p, adapter: [null, 'a0', 'a1'][i % 3]!, maxTokens: 24, temperature: 0, topP: 1, seed: null, n: 1, stop: [], logprobs: null, stopIds: [] }).done));
      const chosen = engine.tuner!.chosen();
      await engine.drain();
      const after = getNumThreads();
      peft.dispose();
      model.dispose();
      return { tokens: outs.map((o) => o[0]!.tokens), seen, chosen, after };
    };
    const auto = await run('auto');
    const fixed = await run(1);
    assert.deepEqual([...auto.seen].sort(), [1, 2], 'auto measures both 1 and 2 threads');
    assert.ok(Object.keys(auto.chosen).some((k) => k.startsWith('decode:')), `a decode group is chosen: ${JSON.stringify(auto.chosen)}`);
    for (const n of Object.values(auto.chosen)) assert.ok(n === 1 || n === 2);
    assert.deepEqual([...fixed.seen], [1], 'a fixed count is used for every step');
    assert.deepEqual(fixed.chosen, {});
    assert.deepEqual(auto.tokens, fixed.tokens, 'greedy tokens do not depend on the thread count');
    assert.equal(auto.after, 2, 'idle: the process setting is back');
    assert.equal(fixed.after, 2);
  } finally {
    setNumThreads(before);
    rmSync(root, { recursive: true, force: true });
  }
});
