// Data layer, part 1: readers (CSV, JSONL, text) and task builders. The tokenizers are byte-level
// BPE with no merges unless stated, so a string's ids are its UTF-8 bytes plus the number of
// special tokens placed first: expected values below are computed from bytes, not the tokenizer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';
import { byteLevelBpe } from '../src/tokenizer/bytelevel.js';
import {
  parseCsv, parseCsvRows, parseJsonl, parseText, readRecords, readJsonl, fromObjects, DataError,
  buildCausalLm, buildInstruction, fitPromptResponse, buildSequenceClassification, buildTokenClassification,
  buildLabelMap, normalizeLabelMap, IGNORE_INDEX,
} from '../src/data/index.js';

const CHAT = '{% for m in messages %}<{{ m.role }}>{{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}';
// <pad> = 0, <eos> = 1, byte b = b + 2.
const tok = HFTokenizer.fromJson(JSON.stringify(byteLevelBpe({ specialsFirst: ['<pad>', '<eos>'] }).json), { eos_token: '<eos>', pad_token: '<pad>', chat_template: CHAT });
const bytes = (s: string, offset = 2) => [...Buffer.from(s, 'utf8')].map((b) => b + offset);
const EOS = 1;
const work = mkdtempSync(join(tmpdir(), 'ak-data-'));
const file = (name: string, text: string) => { const p = join(work, name); writeFileSync(p, text); return p; };
const X = IGNORE_INDEX;

test('CSV: quotes, embedded delimiters/quotes/newlines, CRLF, BOM, blank lines, line numbers', () => {
  const text = '\uFEFFid,text,label\r\n'
    + '1,"hello, world",pos\r\n'
    + '2,"she said ""hi""",neg\r\n'
    + '\r\n'
    + '3,"line one\r\nline two\nline three",pos\n'
    + '4,,neg\n'
    + '5,"",pos\n'
    + '6,plain text,"quoted label"';
  const { records, skipped } = parseCsv(text, { source: 'x.csv' });
  assert.equal(skipped, 0);
  assert.deepEqual(records.map((r) => r.data), [
    { id: '1', text: 'hello, world', label: 'pos' },
    { id: '2', text: 'she said "hi"', label: 'neg' },
    { id: '3', text: 'line one\r\nline two\nline three', label: 'pos' },
    { id: '4', text: '', label: 'neg' },
    { id: '5', text: '', label: 'pos' },
    { id: '6', text: 'plain text', label: 'quoted label' },
  ]);
  // Line 4 is blank; record 3 spans lines 5-7, so record 4 starts on line 8.
  assert.deepEqual(records.map((r) => r.line), [2, 3, 5, 8, 9, 10]);
  assert.ok(records.every((r) => r.source === 'x.csv'));
  // Trailing delimiter = empty last field; lone CR line ends; a trailing newline adds no record.
  assert.deepEqual(parseCsvRows('a,b,\rc,"d"\n').map((r) => [r.fields, r.line]), [[['a', 'b', ''], 1], [['c', 'd'], 2]]);
  assert.deepEqual(parseCsvRows('a\tb\n"x\ty"\tz', { delimiter: '\t' }).map((r) => r.fields), [['a', 'b'], ['x\ty', 'z']]);
});

test('CSV: bad rows name file:line; unterminated quotes and bad headers always throw', () => {
  const text = 'a,b\n1,2\n3\n"4"x,5\n6,7"8\n9,10\n';
  assert.throws(() => parseCsv(text, { source: 'bad.csv' }), (e: unknown) => e instanceof DataError && e.message === 'bad.csv:3: expected 2 fields (as in the header), got 1');
  const r = parseCsv(text, { source: 'bad.csv', onBadRow: 'skip' });
  assert.deepEqual(r.records.map((x) => [x.data, x.line]), [[{ a: '1', b: '2' }, 2], [{ a: '9', b: '10' }, 6]]);
  assert.equal(r.skipped, 3);
  assert.equal(r.reasons[0], 'bad.csv:3: expected 2 fields (as in the header), got 1');
  assert.match(r.reasons[1]!, /^bad\.csv:4: field 1: unexpected "x" after the closing quote/);
  assert.match(r.reasons[2]!, /^bad\.csv:5: field 2: quote inside an unquoted field/);
  assert.throws(() => parseCsv('a,b\n1,2\n3,"never\nclosed\n', { source: 'u.csv', onBadRow: 'skip' }), /^DataError: u\.csv:3: unterminated quoted field/);
  assert.throws(() => parseCsv('a,a\n1,2\n', { source: 'h.csv' }), /h\.csv:1: header row: duplicate column name "a"/);
  assert.throws(() => parseCsv('', { source: 'e.csv' }), /e\.csv:1: no header row/);
});

test('JSONL: invalid JSON and non-objects name file:line; skip counts and keeps the first reasons', () => {
  const p = file('rows.jsonl', '{"text": "a", "label": 1}\n\n{"text": "b", \n[1, 2]\r\n{"text": "c", "label": 0}\nnull\n');
  assert.throws(() => readJsonl(p), (e: unknown) => e instanceof DataError && e.line === 3 && e.source === p && /invalid JSON/.test(e.message));
  const r = readJsonl(p, { onBadRow: 'skip', keepReasons: 1 });
  assert.deepEqual(r.records.map((x) => [x.data.text, x.line]), [['a', 1], ['c', 5]]);
  assert.equal(r.skipped, 3);
  assert.equal(r.reasons.length, 1);
  assert.ok(r.reasons[0]!.startsWith(`${p}:3: invalid JSON`));
  assert.throws(() => parseJsonl('{}\n[1, 2]', { source: 's' }), /^DataError: s:2: expected a JSON object, got an array$/);
});

test('text reader modes and readRecords by extension', () => {
  const text = 'first line\n\n  \nsecond para l1\nsecond para l2\n';
  assert.deepEqual(parseText(text).records.map((r) => [r.data.text, r.line]), [['first line', 1], ['second para l1', 4], ['second para l2', 5]]);
  assert.deepEqual(parseText(text, { mode: 'paragraphs' }).records.map((r) => [r.data.text, r.line]), [['first line', 1], ['second para l1\nsecond para l2', 4]]);
  assert.deepEqual(parseText(text, { mode: 'document', field: 'doc' }).records.map((r) => r.data), [{ doc: text }]);
  assert.throws(() => parseText(' \n', { mode: 'document', source: 'empty.txt' }), /empty\.txt:1: empty text/);
  assert.deepEqual(readRecords(file('t.tsv', 'x\ty\n1\t"a\tb"\n')).records.map((r) => r.data), [{ x: '1', y: 'a\tb' }]);
  assert.equal(readRecords(file('t.txt', 'a\nb\n')).records.length, 2);
  assert.throws(() => readRecords(file('t.parquet', '')), /unknown data file extension ".parquet"/);
});

test('causal LM packing: documents + EOS concatenated and chopped into exact blocks', async () => {
  const recs = fromObjects([{ text: 'ab' }, { text: 'cde' }, { text: 'f' }]);
  // Stream: a b EOS c d e EOS f EOS (9 tokens) -> two blocks of 4, one token left over.
  const stream = [...bytes('ab'), EOS, ...bytes('cde'), EOS, ...bytes('f'), EOS];
  const packed = await buildCausalLm(recs, tok, { blockSize: 4 });
  assert.deepEqual(packed.examples.map((e) => e.inputIds), [stream.slice(0, 4), stream.slice(4, 8)]);
  assert.ok(packed.examples.every((e) => JSON.stringify(e.labels) === JSON.stringify(e.inputIds)));
  assert.equal(packed.tokens, 9);
  assert.equal(packed.droppedTokens, 1);
  const kept = await buildCausalLm(recs, tok, { blockSize: 4, dropLast: false });
  assert.deepEqual(kept.examples.map((e) => e.inputIds), [stream.slice(0, 4), stream.slice(4, 8), stream.slice(8)]);
  assert.equal(kept.droppedTokens, 0);
  // Exactly divisible: nothing dropped, blocks re-concatenate to the stream.
  const three = await buildCausalLm(recs, tok, { blockSize: 3 });
  assert.deepEqual(three.examples.flatMap((e) => e.inputIds), stream);
  const unpacked = await buildCausalLm(recs, tok, { blockSize: 3, packed: false });
  assert.deepEqual(unpacked.examples.map((e) => e.inputIds), [[...bytes('ab'), EOS], bytes('cde'), [...bytes('f'), EOS]]);
  assert.equal(unpacked.truncated, 1);
  assert.equal(unpacked.examples[1]!.origin, '<memory>:2');
  const noEos = await buildCausalLm(recs, tok, { blockSize: 100, packed: false, appendEos: false });
  assert.deepEqual(noEos.examples[0]!.inputIds, bytes('ab'));
});

test('instruction: -100 exactly over the prompt, response + EOS learned', async () => {
  const recs = fromObjects([{ prompt: 'Q: 2+2?', response: ' 4' }, { question: 'hi', answer: 'yo' }]);
  const { examples } = await buildInstruction(recs.slice(0, 1), tok);
  const p = bytes('Q: 2+2?');
  const r = [...bytes(' 4'), EOS];
  assert.deepEqual(examples[0]!.inputIds, [...p, ...r]);
  assert.deepEqual(examples[0]!.labels, [...p.map(() => X), ...r]);
  const renamed = await buildInstruction(recs.slice(1), tok, { promptField: 'question', responseField: 'answer' });
  assert.deepEqual(renamed.examples[0]!.labels, [X, X, ...bytes('yo'), EOS]);
  // Missing field / wrong type / empty text are bad rows naming the row.
  await assert.rejects(buildInstruction(recs.slice(1), tok), /<memory>:2: missing field "prompt" \(fields: "question", "answer"\)/);
  await assert.rejects(buildInstruction(fromObjects([{ prompt: 3, response: 'x' }], 'f.jsonl'), tok), /f\.jsonl:1: field "prompt" must be a string, got number 3/);
  await assert.rejects(buildInstruction(fromObjects([{ prompt: 'x', response: '  ' }], 'f.jsonl'), tok), /f\.jsonl:1: field "response" is empty/);
});

test('instruction: chat messages via the chat template; every assistant turn is trained (lastTurnOnly: the last)', async () => {
  const messages = [
    { role: 'user', content: 'hi' }, { role: 'assistant', content: 'hey' }, { role: 'user', content: 'bye' }, { role: 'assistant', content: 'ok' },
  ];
  const { examples } = await buildInstruction(fromObjects([{ messages }]), tok);
  // Template: <role>content<eos> per turn; the generation prompt is "<assistant>".
  const ctx1 = [...bytes('<user>hi'), EOS, ...bytes('<assistant>')];
  const turn1 = [...bytes('hey'), EOS];
  const ctx2 = [...bytes('<user>bye'), EOS, ...bytes('<assistant>')];
  const response = [...bytes('ok'), EOS]; // the template wrote EOS itself: not appended twice
  assert.deepEqual(examples[0]!.inputIds, [...ctx1, ...turn1, ...ctx2, ...response]);
  assert.deepEqual(examples[0]!.labels, [...ctx1.map(() => X), ...turn1, ...ctx2.map(() => X), ...response], 'both assistant turns are learned');
  const last = (await buildInstruction(fromObjects([{ messages }]), tok, { lastTurnOnly: true })).examples[0]!;
  const prompt = [...ctx1, ...turn1, ...ctx2];
  assert.deepEqual(last.inputIds, [...prompt, ...response]);
  assert.deepEqual(last.labels, [...prompt.map(() => X), ...response]);
  // Cut to 12 tokens: the final response stays whole, the context loses its start, labels follow.
  const cut = (await buildInstruction(fromObjects([{ messages }]), tok, { maxLength: 12 })).examples[0]!;
  const all = [...ctx1, ...turn1, ...ctx2];
  const allLabels = [...ctx1.map(() => X), ...turn1, ...ctx2.map(() => X)];
  assert.deepEqual(cut.inputIds, [...all.slice(all.length - 9), ...response]);
  assert.deepEqual(cut.labels, [...allLabels.slice(all.length - 9), ...response]);
  await assert.rejects(buildInstruction(fromObjects([{ messages: messages.slice(0, 3) }], 'c.jsonl'), tok), /c\.jsonl:1: the last message of "messages" must be the assistant's/);
  await assert.rejects(buildInstruction(fromObjects([{ messages: [{ role: 'user' }] }], 'c.jsonl'), tok), /c\.jsonl:1: messages\[0\]\.content must be a string/);
  const noTemplate = HFTokenizer.fromJson(JSON.stringify(byteLevelBpe({ specialsFirst: ['<pad>', '<eos>'] }).json), { eos_token: '<eos>' });
  await assert.rejects(buildInstruction(fromObjects([{ messages }]), noTemplate, { onBadRow: 'skip' }), /needs a chat template/);
});

test('instruction truncation keeps the response when it can', async () => {
  // Table: [prompt, response, maxLength, minPrompt, bos] -> [prompt kept, response kept]
  const cases: [number[], number[], number, number, number | null, number[], number[]][] = [
    [[1, 2, 3], [7, 8], 5, 1, null, [1, 2, 3], [7, 8]], // fits
    [[1, 2, 3, 4], [7, 8], 4, 1, null, [3, 4], [7, 8]], // prompt loses its start
    [[9, 2, 3, 4], [7, 8], 4, 1, 9, [9, 4], [7, 8]], // ... but keeps a leading BOS
    [[1, 2, 3], [5, 6, 7, 8], 3, 1, null, [3], [5, 6]], // response too long: cut at its end
    [[1, 2, 3], [5, 6, 7, 8], 3, 2, null, [2, 3], [5]],
  ];
  for (const [p, r, max, min, bos, wp, wr] of cases) {
    const f = fitPromptResponse(p, r, max, min, bos);
    assert.deepEqual([f.prompt, f.response], [wp, wr], JSON.stringify([p, r, max, min, bos]));
  }
  const res = await buildInstruction(fromObjects([{ prompt: 'abcdef', response: 'xy' }]), tok, { maxLength: 5 });
  assert.deepEqual(res.examples[0]!.inputIds, [...bytes('ef'), ...bytes('xy'), EOS]);
  assert.deepEqual(res.examples[0]!.labels, [X, X, ...bytes('xy'), EOS]);
  assert.equal(res.truncated, 1);
});

test('sequence classification: deterministic label maps, given maps, unknown labels', async () => {
  // CSV labels are strings; integer-looking ones sort numerically (2 before 10).
  assert.deepEqual(buildLabelMap(['10', 2, '1', 2]).id2label, ['1', '2', '10']);
  assert.deepEqual(buildLabelMap(['neg', 'pos', 'Neu', 'neg']).label2id, { Neu: 0, neg: 1, pos: 2 });
  const { records } = parseCsv('text,label\ngood,pos\nbad,neg\nmeh,neu\n', { source: 'cls.csv' });
  const train = await buildSequenceClassification(records, tok);
  assert.deepEqual(train.id2label, ['neg', 'neu', 'pos']);
  assert.deepEqual(train.examples.map((e) => [e.inputIds, e.label]), [[bytes('good'), 2], [bytes('bad'), 0], [bytes('meh'), 1]]);
  // Same map whatever the row order.
  const reversed = await buildSequenceClassification([...records].reverse(), tok);
  assert.deepEqual(reversed.label2id, train.label2id);
  const evalRecs = parseCsv('text,label\nfine,pos\nodd,weird\n', { source: 'eval.csv' }).records;
  await assert.rejects(buildSequenceClassification(evalRecs, tok, { labelMap: train }), /eval\.csv:3: unknown label "weird" \(the label map has 3: "neg", "neu", "pos"\)/);
  const skipped = await buildSequenceClassification(evalRecs, tok, { labelMap: train.id2label, onBadRow: 'skip' });
  assert.deepEqual(skipped.examples.map((e) => e.label), [2]);
  assert.equal(skipped.skipped, 1);
  // Integer labels in JSONL and their string form are the same label.
  const ints = await buildSequenceClassification(fromObjects([{ text: 'a', label: 1 }, { text: 'b', label: 0 }]), tok, { labelMap: { '0': 0, '1': 1 } });
  assert.deepEqual(ints.examples.map((e) => e.label), [1, 0]);
  await assert.rejects(buildSequenceClassification(fromObjects([{ text: 'a', label: 1.5 }], 'j'), tok), /j:1: field "label" must be a non-empty string or an integer label, got number 1.5/);
  assert.throws(() => normalizeLabelMap({ a: 0, b: 2 }), /ids must be 0\.\.1, each once; "b" has 2/);
});

test('sequence classification truncation keeps the special tokens', async () => {
  // <cls> = 0, <sep> = 1, <pad> = 2, byte b = b + 3; encoder template <cls> A <sep>.
  const enc = HFTokenizer.fromJson(JSON.stringify(byteLevelBpe({ specialsFirst: ['<cls>', '<sep>', '<pad>'], template: { cls: '<cls>', sep: '<sep>' } }).json), { pad_token: '<pad>' });
  const r = await buildSequenceClassification(fromObjects([{ text: 'abcdef', label: 'x' }, { text: 'ab', label: 'y' }]), enc, { maxLength: 4 });
  assert.deepEqual(r.examples.map((e) => e.inputIds), [[0, ...bytes('ab', 3), 1], [0, ...bytes('ab', 3), 1]]);
  assert.equal(r.truncated, 1);
});

test('token classification: first sub-word gets the tag, the rest and specials get -100', async () => {
  // Merges make " dog" one token (id 3 + 256 + 2 = 261); "dog" without the space stays 3 bytes.
  const enc = HFTokenizer.fromJson(JSON.stringify(byteLevelBpe({
    specialsFirst: ['<cls>', '<sep>', '<pad>'], template: { cls: '<cls>', sep: '<sep>' }, merges: [['Ġ', 'd'], ['Ġd', 'o'], ['Ġdo', 'g']],
  }).json), { pad_token: '<pad>' });
  const rows = fromObjects([{ tokens: ['Hi', 'dog', 'ok'], tags: ['B-X', 'O', 'B-Y'] }], 'ner.jsonl');
  const r = await buildTokenClassification(rows, enc);
  assert.deepEqual(r.id2label, ['B-X', 'B-Y', 'O']);
  const e = r.examples[0]!;
  //              <cls>  H         i          " dog"  " "        o          k          <sep>
  assert.deepEqual(e.inputIds, [0, 72 + 3, 105 + 3, 261, 32 + 3, 111 + 3, 107 + 3, 1]);
  assert.deepEqual(e.labels, [X, 0, X, 2, 1, X, X, X]);
  assert.deepEqual(e.wordIds, [null, 0, 0, 1, 2, 2, 2, null]);
  const noSpace = await buildTokenClassification(rows, enc, { prefixSpace: false, addSpecialTokens: false, labelMap: r });
  assert.deepEqual(noSpace.examples[0]!.inputIds, [...bytes('Hi', 3), ...bytes('dog', 3), ...bytes('ok', 3)]);
  assert.deepEqual(noSpace.examples[0]!.labels, [0, X, 2, X, X, 1, X]);
  const every = await buildTokenClassification(rows, enc, { subwordLabels: 'all', maxLength: 5 });
  assert.deepEqual(every.examples[0]!.inputIds, [0, 75, 108, 261, 1]);
  assert.deepEqual(every.examples[0]!.labels, [X, 0, 0, 2, X]);
  assert.equal(every.truncated, 1);
  await assert.rejects(buildTokenClassification(fromObjects([{ tokens: ['a', 'b'], tags: ['O'] }], 'n.jsonl'), enc), /n\.jsonl:1: "tokens" has 2 words but "tags" has 1 tags/);
  await assert.rejects(buildTokenClassification(fromObjects([{ tokens: ['a', ''], tags: ['O', 'O'] }], 'n.jsonl'), enc), /n\.jsonl:1: tokens\[1\] must be a non-empty string/);
  await assert.rejects(buildTokenClassification(rows, enc, { labelMap: ['O', 'B-X'] }), /ner\.jsonl:1: unknown label "B-Y"/);
});

test('skip-and-count across reader and builder; the label map ignores skipped rows', async () => {
  const p = file('mixed.jsonl', [
    '{"text": "good", "label": "pos"}',
    '{"text": "", "label": "neg"}',
    '{"label": "neg"}',
    'not json',
    '{"text": "bad", "label": null}',
    '{"text": "fine", "label": "neu"}',
    '{"text": ["x"], "label": "zzz"}',
  ].join('\n'));
  const read = readJsonl(p, { onBadRow: 'skip' });
  assert.equal(read.skipped, 1);
  assert.equal(read.records.length, 6);
  const built = await buildSequenceClassification(read.records, tok, { onBadRow: 'skip', keepReasons: 3 });
  assert.equal(built.skipped, 4);
  assert.deepEqual(built.reasons, [
    `${p}:2: field "text" is empty`,
    `${p}:3: missing field "text" (fields: "label")`,
    `${p}:5: field "label" must be a non-empty string or an integer label, got null`,
  ]);
  // "neg" and "zzz" occur only on skipped rows, so they are not labels.
  assert.deepEqual(built.id2label, ['neu', 'pos']);
  assert.deepEqual(built.examples.map((e) => [e.label, e.origin]), [[1, `${p}:1`], [0, `${p}:6`]]);
  await assert.rejects(buildSequenceClassification(read.records, tok), (e: unknown) => e instanceof DataError && e.line === 2 && e.source === p);
});

test('odd names stay data: a "__proto__" column or label is an own property', async () => {
  const { records } = parseCsv('__proto__,label\nx,__proto__\ny,constructor\n');
  assert.deepEqual(Object.keys(records[0]!.data), ['__proto__', 'label']);
  assert.equal(records[0]!.data['__proto__'], 'x');
  const r = await buildSequenceClassification(records, tok, { textField: '__proto__' });
  assert.deepEqual(r.id2label, ['__proto__', 'constructor']);
  assert.deepEqual(Object.keys(r.label2id), ['__proto__', 'constructor']);
  assert.deepEqual(r.examples.map((e) => e.label), [0, 1]);
  await assert.rejects(buildSequenceClassification(fromObjects([{ text: 'a', label: 'toString' }], 'p'), tok, { labelMap: r }), /p:1: unknown label "toString"/);
});
