// A corpus of malformed safetensors files, each a minimal edit of a valid one, each refused with
// its own error code and a message naming the file; then random corruption of a real file, which
// must only ever produce SafetensorsErrors (no crash, no hang, no other exception), and an engine
// that still works afterwards.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tensor, tidy, liveTensors, arange } from '../src/index.js';
import { SafetensorsFile, SafetensorsError, writeSafetensors } from '../src/io/safetensors.js';

const root = mkdtempSync(join(tmpdir(), 'adapterkit-stbad-'));
after(() => rmSync(root, { recursive: true, force: true }));

/** 8-byte LE length (given, or the padded header's), the header padded with spaces to 8, data. */
function st(header: string, data: readonly number[] = [], headerLength?: bigint): Buffer {
  let h = Buffer.from(header, 'utf8');
  h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(h.length));
  return Buffer.concat([len, h, Buffer.from(data)]);
}
const F32 = (shape: string, begin: number, end: number): string => `{"dtype":"F32","shape":${shape},"data_offsets":[${begin},${end}]}`;
const bytes = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

// [what, file bytes, expected code]
const corpus: [string, Buffer, string][] = [
  ['5-byte file', Buffer.from([1, 2, 3, 4, 5]), 'FILE_TOO_SHORT'],
  ['empty file', Buffer.alloc(0), 'FILE_TOO_SHORT'],
  ['header length 2^40', st('{}', [], 1n << 40n), 'HEADER_TOO_LARGE'],
  ['a zip (PyTorch .bin)', Buffer.from('PK\x03\x04\x14\x00\x00\x00\x08\x00\x00\x00', 'latin1'), 'HEADER_TOO_LARGE'],
  ['header length past the end', st('{}', [], 64n), 'HEADER_PAST_EOF'],
  ['header not UTF-8', Buffer.concat([st('{}').subarray(0, 8), Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x20, 0x20, 0x20, 0x20])]), 'HEADER_NOT_UTF8'],
  ['header not JSON', st('{"a":'), 'HEADER_NOT_JSON'],
  ['empty header', st(''), 'HEADER_NOT_JSON'],
  ['header an array', st('[1,2]'), 'HEADER_NOT_OBJECT'],
  ['header null', st('null'), 'HEADER_NOT_OBJECT'],
  ['a name twice', st(`{"a":${F32('[1]', 0, 4)},"a":${F32('[1]', 4, 8)}}`, bytes(8)), 'DUPLICATE_NAME'],
  ['a name twice, once escaped', st(`{"a":${F32('[1]', 0, 4)},"\\u0061":${F32('[1]', 4, 8)}}`, bytes(8)), 'DUPLICATE_NAME'],
  ['entry a number', st('{"a":5}'), 'ENTRY_NOT_OBJECT'],
  ['entry without data_offsets', st('{"a":{"dtype":"F32","shape":[1]}}', bytes(4)), 'ENTRY_MISSING_FIELD'],
  ['entry without dtype', st('{"a":{"shape":[1],"data_offsets":[0,4]}}', bytes(4)), 'ENTRY_MISSING_FIELD'],
  ['unknown dtype', st('{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}', bytes(16)), 'UNKNOWN_DTYPE'],
  ['lower-case dtype', st('{"a":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}', bytes(4)), 'UNKNOWN_DTYPE'],
  ['negative dimension', st(`{"a":${F32('[-1]', 0, 4)}}`, bytes(4)), 'BAD_SHAPE'],
  ['fractional dimension', st(`{"a":${F32('[1.5]', 0, 4)}}`, bytes(4)), 'BAD_SHAPE'],
  ['shape a string', st(`{"a":${F32('"4"', 0, 16)}}`, bytes(16)), 'BAD_SHAPE'],
  ['dimension 1e400 (Infinity)', st(`{"a":${F32('[1e400]', 0, 4)}}`, bytes(4)), 'BAD_SHAPE'],
  ['one offset', st('{"a":{"dtype":"F32","shape":[1],"data_offsets":[4]}}', bytes(4)), 'BAD_OFFSETS'],
  ['offset past 2^53', st('{"a":{"dtype":"U8","shape":[1],"data_offsets":[9007199254740993,9007199254740994]}}', bytes(1)), 'BAD_OFFSETS'],
  ['negative offset', st(`{"a":${F32('[1]', -4, 0)}}`, bytes(4)), 'BAD_OFFSETS'],
  ['reversed offsets', st(`{"a":${F32('[1]', 8, 4)}}`, bytes(8)), 'REVERSED_OFFSETS'],
  ['length not numel * size', st(`{"a":${F32('[2]', 0, 4)}}`, bytes(4)), 'BYTE_LENGTH_MISMATCH'],
  ['shape overflowing 2^64', st(`{"a":${F32('[1099511627776,1099511627776,1099511627776]', 0, 4)}}`, bytes(4)), 'BYTE_LENGTH_MISMATCH'],
  ['F4 of 3 elements (12 bits)', st('{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}', bytes(1)), 'BYTE_LENGTH_MISMATCH'],
  ['truncated data', st(`{"a":${F32('[4]', 0, 16)}}`, bytes(8)), 'TRUNCATED'],
  ['truncated in the second tensor', st(`{"a":${F32('[1]', 0, 4)},"b":${F32('[2]', 4, 12)}}`, bytes(8)), 'TRUNCATED'],
  ['offsets past the data section', st(`{"a":${F32('[1]', 0, 4)},"b":${F32('[1]', 8, 12)}}`, bytes(8)), 'OFFSETS_OUT_OF_RANGE'],
  ['overlapping tensors', st(`{"a":${F32('[2]', 0, 8)},"b":${F32('[2]', 4, 12)}}`, bytes(12)), 'OVERLAPPING_TENSORS'],
  ['aliased tensors', st(`{"a":${F32('[2]', 0, 8)},"b":${F32('[2]', 0, 8)}}`, bytes(16)), 'OVERLAPPING_TENSORS'],
  ['empty tensor inside another', st(`{"a":${F32('[2]', 0, 8)},"e":${F32('[0]', 4, 4)}}`, bytes(8)), 'OVERLAPPING_TENSORS'],
  ['gap between tensors', st(`{"a":${F32('[1]', 0, 4)},"b":${F32('[1]', 8, 12)}}`, bytes(12)), 'GAP_BETWEEN_TENSORS'],
  ['gap before the first tensor', st(`{"a":${F32('[1]', 4, 8)}}`, bytes(8)), 'GAP_BETWEEN_TENSORS'],
  ['bytes after the last tensor', st(`{"a":${F32('[1]', 0, 4)}}`, bytes(8)), 'DATA_NOT_COVERED'],
  ['data but no tensors', st('{}', bytes(4)), 'DATA_NOT_COVERED'],
  ['entry nested 200k deep', st(`{"a":${'['.repeat(200_000)}${']'.repeat(200_000)}}`), 'ENTRY_NOT_OBJECT'],
  ['shape nested 200k deep', st(`{"a":${F32(`${'['.repeat(200_000)}${']'.repeat(200_000)}`, 0, 4)}}`, bytes(4)), 'BAD_SHAPE'],
  ['metadata value a number', st(`{"__metadata__":{"rank":8},"a":${F32('[1]', 0, 4)}}`, bytes(4)), 'BAD_METADATA'],
  ['metadata an array', st('{"__metadata__":["pt"]}'), 'BAD_METADATA'],
  ['metadata null', st('{"__metadata__":null}'), 'BAD_METADATA'],
];

test('valid files built the same way open (the corpus edits valid files)', () => tidy(() => {
  const ok: Buffer[] = [
    st('{}'),
    st(`{"a":${F32('[1]', 0, 4)},"b":${F32('[1]', 4, 8)}}`, bytes(8)),
    st(`{"b":${F32('[1]', 4, 8)},"a":${F32('[2,0]', 0, 0)},"z":${F32('[]', 0, 4)}}`, bytes(8)),  // any order; empty and 0-d
    st(`{"__metadata__":{"format":"pt"},"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}`, bytes(2)),
  ];
  ok.forEach((b, i) => {
    const p = join(root, `ok-${i}.safetensors`);
    writeFileSync(p, b);
    SafetensorsFile.open(p).close();
  });
}));

test(`a corpus of ${corpus.length} malformed files: each refused with its own code, naming the file`, () => {
  const live = liveTensors();
  const seen = new Set<string>();
  corpus.forEach(([what, b, code], i) => {
    const p = join(root, `bad-${i}.safetensors`);
    writeFileSync(p, b);
    assert.throws(() => SafetensorsFile.open(p), (e: unknown) => {
      assert.ok(e instanceof SafetensorsError, `${what}: expected a SafetensorsError, got ${String(e)}`);
      assert.equal(e.code, code, `${what}: ${e.message}`);
      assert.equal(e.file, p);
      assert.ok(e.message.includes(p), `${what}: ${e.message}`);
      return true;
    }, what);
    seen.add(code);
  });
  assert.deepEqual([...seen].sort(), [
    'BAD_METADATA', 'BAD_OFFSETS', 'BAD_SHAPE', 'BYTE_LENGTH_MISMATCH', 'DATA_NOT_COVERED', 'DUPLICATE_NAME',
    'ENTRY_MISSING_FIELD', 'ENTRY_NOT_OBJECT', 'FILE_TOO_SHORT', 'GAP_BETWEEN_TENSORS', 'HEADER_NOT_JSON',
    'HEADER_NOT_OBJECT', 'HEADER_NOT_UTF8', 'HEADER_PAST_EOF', 'HEADER_TOO_LARGE', 'OFFSETS_OUT_OF_RANGE',
    'OVERLAPPING_TENSORS', 'REVERSED_OFFSETS', 'TRUNCATED', 'UNKNOWN_DTYPE',
  ]);
  assert.equal(liveTensors(), live);
});

test('errors name the tensor concerned', () => {
  const p = join(root, 'named.safetensors');
  writeFileSync(p, st(`{"ok":${F32('[1]', 0, 4)},"layers.3.bias":${F32('[2]', 4, 8)}}`, bytes(8)));
  assert.throws(() => SafetensorsFile.open(p), (e: unknown) =>
    e instanceof SafetensorsError && e.tensor === 'layers.3.bias' && e.message.includes('"layers.3.bias"'));
});

// mulberry32: a tiny seeded PRNG, so a failure reproduces.
function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test('random corruption only ever yields SafetensorsErrors, and the engine still works after', () => {
  const src = join(root, 'fuzz-src.safetensors');
  tidy(() => writeSafetensors(src, {
    'a.weight': arange(0, 12, 1, { dtype: 'float32' }).reshape(3, 4),
    'a.bias': tensor([1, 2, 3], { dtype: 'bfloat16' }),
    'steps': tensor([7], { dtype: 'int64' }),
    'mask': tensor([true, false]),
  }, { format: 'pt' }));
  const good = readFileSync(src);
  const headerEnd = 8 + Number(good.readBigUInt64LE(0));
  const rand = prng(20240607);
  const p = join(root, 'fuzz.safetensors');
  let refused = 0;
  let opened = 0;
  for (let iter = 0; iter < 400; iter++) {
    let b = Buffer.from(good);
    const kind = iter % 4;
    if (kind === 0) {  // flip a few bytes of the header (length field included)
      for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) b[Math.floor(rand() * headerEnd)] = Math.floor(rand() * 256);
    } else if (kind === 1) {  // cut the file anywhere
      b = b.subarray(0, Math.floor(rand() * b.length));
    } else if (kind === 2) {  // replace a header character with a JSON-significant one
      const significant = '{}[]",:0-9e \\';
      b[8 + Math.floor(rand() * (headerEnd - 8))] = significant.charCodeAt(Math.floor(rand() * significant.length));
    } else {  // append or drop bytes at the end of the data
      b = rand() < 0.5 ? Buffer.concat([b, Buffer.alloc(1 + Math.floor(rand() * 9))]) : b.subarray(0, b.length - 1 - Math.floor(rand() * 4));
    }
    writeFileSync(p, b);
    let f: SafetensorsFile;
    try {
      f = SafetensorsFile.open(p);
    } catch (e) {
      assert.ok(e instanceof SafetensorsError, `iteration ${iter}: ${String(e)}`);
      refused++;
      continue;
    }
    opened++;
    try {
      for (const name of f.names()) {
        try {
          tidy(() => f.read(name).bytes());
        } catch (e) {
          // A validated file can only fail to read a dtype the engine cannot hold.
          assert.ok(e instanceof SafetensorsError && e.code === 'UNSUPPORTED_DTYPE', `iteration ${iter}: ${String(e)}`);
        }
      }
    } finally {
      f.close();
    }
  }
  assert.ok(refused > 200, `only ${refused} of 400 corruptions were caught`);
  assert.ok(opened > 0);
  assert.deepEqual(tidy(() => tensor([[1, 2], [3, 4]]).matmul(tensor([[1], [1]])).toArray()), [[3], [7]]);
});
