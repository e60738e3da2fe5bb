// Byte-level detokenization in JavaScript (the server's per-token path) against the tokenizers
// library's own decode of the whole sequence: random id sequences (multi-byte characters split over
// tokens, special tokens skipped), token by token, and the tokenizers it must decline.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';
import { byteLevelTable, completeUtf8Length } from '../src/tokenizer/byte-level.js';
import { defaultModelDir } from '../src/models/default-model.js';

function incremental(table: (Uint8Array | null)[], ids: number[]): string[] {
  const dec = new TextDecoder();
  let settled = '';
  let pending: number[] = [];
  const out: string[] = [];
  for (const id of ids) {
    const b = table[id];
    if (b) pending.push(...b);
    const n = completeUtf8Length(pending);
    settled += dec.decode(Uint8Array.from(pending.slice(0, n)));
    pending = pending.slice(n);
    out.push(pending.length ? settled + dec.decode(Uint8Array.from(pending)) : settled);
  }
  return out;
}

test('byte-level ids decode in JavaScript exactly as the tokenizer decodes them, prefix by prefix', async () => {
  const tok = HFTokenizer.fromDir(defaultModelDir());
  const table = tok.tokenBytes();
  assert.ok(table, 'the embedded tokenizer is byte-level BPE');
  let seed = 12345;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  // Text with multi-byte characters, so that tokens split UTF-8 sequences.
  const text = 'Call me Ishmael — naïve café, 日本語 and emoji 🐋🌊! ';
  const real = await tok.encode(text.repeat(3), { addSpecialTokens: false });
  const cases = [real, ...Array.from({ length: 20 }, () => Array.from({ length: 24 }, () => Math.floor(rnd() * tok.vocabSize)))];
  cases.push([1, ...real.slice(0, 10), 2, ...real.slice(10, 20)]);  // <s>, </s> (special: skipped)
  for (const ids of cases) {
    const got = incremental(table, ids);
    for (let i = 0; i < ids.length; i++) assert.equal(got[i], await tok.decode(ids.slice(0, i + 1)), `ids ${JSON.stringify(ids.slice(0, i + 1))}`);
  }
});

test('completeUtf8Length and tokenizers that are not plain byte-level BPE', () => {
  assert.equal(completeUtf8Length([0x41, 0xe2, 0x82]), 1);  // "A" then two of €'s three bytes
  assert.equal(completeUtf8Length([0x41, 0xe2, 0x82, 0xac]), 4);
  assert.equal(completeUtf8Length([0xf0, 0x9f, 0x90]), 0);
  assert.equal(completeUtf8Length([0x80, 0x80, 0x80, 0x80]), 4);  // stray continuation bytes: invalid, decoded lossily now
  assert.equal(byteLevelTable({ model: { type: 'WordPiece', vocab: { a: 0 } }, decoder: { type: 'WordPiece' } }), null);
  assert.equal(byteLevelTable({ model: { type: 'BPE', vocab: { '▁a': 0 } }, decoder: { type: 'Metaspace' } }), null);
  assert.equal(byteLevelTable({ model: { type: 'BPE', vocab: { 'a b': 0 } }, decoder: { type: 'ByteLevel' } }), null, 'a space is not a byte-level character');
  const t = byteLevelTable({ model: { type: 'BPE', vocab: { 'Ġa': 0, 'b': 1 } }, decoder: { type: 'ByteLevel' }, added_tokens: [{ id: 2, content: '<x>', special: true }, { id: 3, content: 'hé', special: false }] })!;
  assert.deepEqual([...t[0]!], [0x20, 0x61]);
  assert.equal(t[2], null);
  assert.deepEqual([...t[3]!], [0x68, 0xc3, 0xa9]);
});
