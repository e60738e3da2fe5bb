// safetensors read/write, sharded checkpoints and atomic writes. References are independent of
// the code under test: files composed byte by byte here (F32 1.0 = 00 00 80 3f, BF16 1.0 = 80 3f,
// F16 1.0 = 00 3c), and the byte vectors of the safetensors crate's own serializer tests.
// The malformed-file corpus lives in safetensors-malformed.test.ts.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, openSync, writeSync, closeSync, unlinkSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tensor, tidy, zeros, arange, liveTensors, type Tensor } from '../src/index.js';
import { SafetensorsFile, SafetensorsError, readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { CheckpointReader, writeSharded } from '../src/io/checkpoint.js';
import { writeFileAtomic } from '../src/io/atomic.js';

const root = mkdtempSync(join(tmpdir(), 'adapterkit-st-'));
after(() => rmSync(root, { recursive: true, force: true }));
let counter = 0;
const tmp = (name = 'f.safetensors'): string => join(root, `${counter++}-${name}`);
const tmpDir = (): string => { const d = tmp('dir'); mkdirSync(d); return d; };

/** A file composed by hand: 8-byte LE header length, header text padded with spaces to 8, data. */
function stFile(header: string, data: readonly number[] = []): Buffer {
  let h = Buffer.from(header, 'utf8');
  h = Buffer.concat([h, Buffer.alloc((8 - (h.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(h.length));
  return Buffer.concat([len, h, Buffer.from(data)]);
}

function throwsCode(fn: () => unknown, code: string, file?: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof SafetensorsError, `expected a SafetensorsError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (file !== undefined) {
      assert.equal(e.file, file);
      assert.ok(e.message.includes(file), e.message);
    }
    return true;
  });
}

test('every dtype round-trips with exact values and bytes, including a view, a 0-d and an empty tensor', () => tidy(() => {
  const src = new Map<string, Tensor>([
    ['f32', tensor([[1.5, -2.25, 3e-8], [Infinity, -0, 65504]])],
    ['f64', tensor([Math.PI, -1e300, 5e-324], { dtype: 'float64' })],
    ['f16', tensor([1, -2, 0.5, 65504, 2 ** -24], { dtype: 'float16' })],
    ['bf16', tensor([1, -2, 3.140625, 2 ** -133], { dtype: 'bfloat16' })],
    ['i64', tensor(new BigInt64Array([2n ** 62n + 1n, -(2n ** 63n), 7n]))],
    ['i32', tensor(new Int32Array([2147483647, -2147483648, 0]))],
    ['i8', tensor(new Int8Array([-128, 127, 0]))],
    ['u8', tensor(new Uint8Array([0, 255, 7]))],
    ['bool', tensor([true, false, true])],
    ['scalar', tensor(2.5)],
    ['empty', zeros([0, 3], { dtype: 'bfloat16' })],
    ['view', arange(0, 6, 1, { dtype: 'float32' }).reshape(2, 3).transpose(0, 1)],  // (3, 2), strided
  ]);
  assert.equal(src.get('view')!.isContiguous(), false);
  const p = tmp();
  writeSafetensors(p, src);
  const back = readSafetensors(p);
  assert.deepEqual([...back.keys()].sort(), [...src.keys()].sort());
  for (const [name, t] of src) {
    const r = back.get(name)!;
    assert.equal(r.dtype, t.dtype, name);
    assert.deepEqual(r.shape, t.shape, name);
    assert.deepEqual(r.bytes(), t.bytes(), name);
    assert.deepEqual(r.toArray(), t.toArray(), name);
  }
  // Against literal values rather than the source tensors:
  assert.deepEqual(back.get('view')!.toArray(), [[0, 3], [1, 4], [2, 5]]);  // logical order, not storage order
  assert.deepEqual([...(back.get('i64')!.data() as BigInt64Array)], [2n ** 62n + 1n, -(2n ** 63n), 7n]);
  assert.deepEqual(back.get('scalar')!.shape, []);
  assert.equal(back.get('scalar')!.item(), 2.5);
  assert.deepEqual(back.get('bool')!.toArray(), [true, false, true]);
  assert.deepEqual(back.get('f16')!.toArray(), [1, -2, 0.5, 65504, 2 ** -24]);
  assert.deepEqual(back.get('bf16')!.toArray(), [1, -2, 3.140625, 2 ** -133]);
  using f = SafetensorsFile.open(p);
  assert.equal(f.info('empty').byteLength, 0);
  assert.equal(f.info('i64').byteLength, 24);
}));

test('a file composed byte by byte reads back to the expected values', () => tidy(() => {
  // Unsorted names, an I64 at a 2-byte (misaligned) offset: legal, and the reader must cope.
  const header = '{"__metadata__":{"format":"pt"},' +
    '"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},' +
    '"i":{"dtype":"I64","shape":[1],"data_offsets":[22,30]},"m":{"dtype":"BOOL","shape":[2],"data_offsets":[30,32]},' +
    '"h":{"dtype":"F16","shape":[2],"data_offsets":[32,36]}}';
  const data = [
    0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x00, 0x00, 0x3f, 0x00, 0x00, 0x40, 0x40,  // F32 1, -2, 0.5, 3
    0x80, 0x3f, 0x00, 0xc0, 0x49, 0x40,                                                              // BF16 1, -2, 3.140625
    0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,                                                  // I64 -2
    0x01, 0x00,                                                                                      // BOOL true, false
    0x00, 0x3c, 0x00, 0xb8,                                                                          // F16 1, -0.5
  ];
  const p = tmp();
  const bytes = stFile(header, data);
  writeFileSync(p, bytes);
  using f = SafetensorsFile.open(p);
  assert.deepEqual(f.names(), ['w', 'b', 'i', 'm', 'h']);  // data order
  assert.deepEqual(f.metadata, { format: 'pt' });
  assert.deepEqual(f.read('w').toArray(), [[1, -2], [0.5, 3]]);
  assert.deepEqual(f.read('b').toArray(), [1, -2, 3.140625]);
  assert.equal(f.read('b').dtype, 'bfloat16');
  assert.deepEqual(f.read('i').toArray(), [-2]);
  assert.deepEqual(f.read('m').toArray(), [true, false]);
  assert.deepEqual(f.read('h').toArray(), [1, -0.5]);
  const dataStart = bytes.length - data.length;
  assert.deepEqual(f.info('i'), { name: 'i', dtype: 'int64', shape: [1], byteOffset: dataStart + 22, byteLength: 8, file: p });
}));

test('the writer matches the safetensors crate byte for byte', () => tidy(() => {
  // The crate's test_serialization: {"attn.0": F32 [1, 2, 3] = 0..5}; the header is exactly 64 bytes.
  const header = '{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}';
  assert.equal(header.length, 64);
  const floats = [0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0, 0, 0x40, 0x40, 0, 0, 0x80, 0x40, 0, 0, 0xa0, 0x40];
  const p = tmp();
  writeSafetensors(p, { 'attn.0': arange(0, 6, 1, { dtype: 'float32' }).reshape(1, 2, 3) });
  assert.deepEqual(readFileSync(p), Buffer.from([64, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from(header), ...floats]));
  // test_empty: no tensors is "{}" padded to 8; with metadata, "__metadata__" comes first.
  writeSafetensors(p, {});
  assert.deepEqual(readFileSync(p), Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from('{}      ')]));
  writeSafetensors(p, {}, { framework: 'pt' });
  assert.deepEqual(readFileSync(p), Buffer.from([40, 0, 0, 0, 0, 0, 0, 0, ...Buffer.from('{"__metadata__":{"framework":"pt"}}     ')]));
}));

test('the writer orders by dtype alignment then name, so every tensor is aligned, and keeps integer-like names in order', () => tidy(() => {
  const p = tmp();
  writeSafetensors(p, {
    a: tensor(new Uint8Array([1])), b: tensor([1]), c: tensor([1], { dtype: 'int64' }),
    d: tensor([1], { dtype: 'bfloat16' }), e: tensor([2]), 10: tensor([3]), 9: tensor([4]),
  });
  using f = SafetensorsFile.open(p);
  assert.deepEqual(f.names(), ['c', '10', '9', 'b', 'e', 'd', 'a']);
  for (const n of f.names()) {
    const i = f.info(n);
    assert.equal(i.byteOffset % (i.byteLength || 1), 0, `${n} at ${i.byteOffset}`);
  }
  const text = readFileSync(p).subarray(8).toString('utf8');
  assert.ok(text.indexOf('"10"') < text.indexOf('"9"') && text.indexOf('"9"') < text.indexOf('"b"'));
}));

test('metadata round-trips; absent metadata reads as {}; non-string values are rejected', () => tidy(() => {
  const p = tmp();
  const meta = { format: 'pt', 'lora.rank': '8', note: 'ünïcode "quoted"' };
  writeSafetensors(p, { x: tensor([1]) }, meta);
  using f = SafetensorsFile.open(p);
  assert.deepEqual(f.metadata, meta);
  const q = tmp();
  writeSafetensors(q, { x: tensor([1]) });
  using g = SafetensorsFile.open(q);
  assert.deepEqual(g.metadata, {});
  const r = tmp();
  throwsCode(() => writeSafetensors(r, { x: tensor([1]) }, { rank: 8 } as unknown as Record<string, string>), 'BAD_METADATA', r);
  assert.throws(() => readFileSync(r));  // nothing written
}));

test('read() casts on request (bf16 <-> float32) and frees the intermediate', () => tidy(() => {
  const p = tmp();
  writeSafetensors(p, {
    h: tensor([1, -2, 3.140625], { dtype: 'bfloat16' }),
    f: tensor([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.14159274]),
  });
  using file = SafetensorsFile.open(p);
  const before = liveTensors();
  const up = file.read('h', { dtype: 'float32' });
  assert.equal(liveTensors(), before + 1);
  assert.equal(up.dtype, 'float32');
  assert.deepEqual(up.toArray(), [1, -2, 3.140625]);
  // Round to nearest even at bf16's 8 significand bits: 1+2^-8 -> 1, 1+3*2^-8 -> 1+2^-6, pi -> 3.140625.
  const down = file.read('f', { dtype: 'bfloat16' });
  assert.equal(down.dtype, 'bfloat16');
  assert.deepEqual(down.toArray(), [1, 1, 1 + 2 ** -6, 3.140625]);
  assert.equal(file.read('f', { dtype: 'float32' }).dtype, 'float32');  // same dtype: no cast
}));

test('read() goes to the tensor\'s own bytes on disk at read time', () => tidy(() => {
  const p = tmp();
  writeSafetensors(p, { a: tensor([1, 2]), b: tensor([3, 4]) });
  using f = SafetensorsFile.open(p);
  const ib = f.info('b');
  assert.deepEqual(readFileSync(p).subarray(ib.byteOffset, ib.byteOffset + ib.byteLength), Buffer.from(tensor([3, 4]).bytes()));
  const fd = openSync(p, 'r+');
  writeSync(fd, Buffer.from([0x00, 0x00, 0x20, 0x41]), 0, 4, ib.byteOffset);  // b[0] := 10.0f
  closeSync(fd);
  assert.deepEqual(f.read('b').toArray(), [10, 4]);
  assert.deepEqual(f.read('a').toArray(), [1, 2]);
}));

test('unknown names suggest close ones; a closed file refuses reads; unsupported dtypes fail on read only', () => tidy(() => {
  const p = tmp();
  writeSafetensors(p, { 'layers.0.weight': tensor([1]), 'layers.0.bias': tensor([2]), 'head.weight': tensor([3]) });
  const f = SafetensorsFile.open(p);
  assert.throws(() => f.read('layers.0.weigth'), (e: unknown) =>
    e instanceof SafetensorsError && e.code === 'UNKNOWN_TENSOR' && e.message.includes('did you mean "layers.0.weight"') && e.message.includes(p));
  throwsCode(() => f.info('nope'), 'UNKNOWN_TENSOR', p);
  assert.equal(f.has('head.weight'), true);
  assert.equal(f.has('nope'), false);
  f.close();
  f.close();
  assert.equal(f.closed, true);
  throwsCode(() => f.read('head.weight'), 'CLOSED', p);
  let escaped: SafetensorsFile | undefined;
  {
    using g = SafetensorsFile.open(p);
    assert.equal(g.closed, false);
    escaped = g;
  }
  assert.equal(escaped.closed, true);  // `using` closed it
  // I16 is a safetensors dtype adapterkit cannot hold: the file opens, the F32 tensor reads.
  const q = tmp();
  writeFileSync(q, stFile('{"s":{"dtype":"I16","shape":[2],"data_offsets":[0,4]},"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
    [1, 0, 2, 0, 0x00, 0x00, 0x80, 0x3f]));
  using h = SafetensorsFile.open(q);
  assert.deepEqual(h.read('x').toArray(), [1]);
  throwsCode(() => h.read('s'), 'UNSUPPORTED_DTYPE', q);
}));

test('the writer rejects empty, reserved and repeated names and disposed tensors, writing nothing', () => tidy(() => {
  const p = tmp();
  throwsCode(() => writeSafetensors(p, { '': tensor([1]) }), 'INVALID_NAME', p);
  throwsCode(() => writeSafetensors(p, { __metadata__: tensor([1]) }), 'INVALID_NAME', p);
  throwsCode(() => writeSafetensors(p, [['a', tensor([1])], ['a', tensor([2])]]), 'DUPLICATE_NAME', p);
  const gone = tensor([1]);
  gone.dispose();
  throwsCode(() => writeSafetensors(p, new Map([['x', gone]])), 'INVALID_TENSOR', p);
  assert.throws(() => readFileSync(p));
}));

test('sharded write: HF names and index, lazy shards, and a rewrite removes stale files', () => tidy(() => {
  const dir = tmpDir();
  const src = new Map<string, Tensor>([['embed', arange(0, 64, 1, { dtype: 'float32' })]]);  // 256 B: a shard alone
  for (let i = 0; i < 5; i++) src.set(`layers.${i}.w`, arange(i, i + 16, 1, { dtype: 'float32' }));  // 64 B each
  const res = writeSharded(dir, src, { maxShardBytes: 130 });
  const shard = (i: number): string => `model-0000${i}-of-00004.safetensors`;
  assert.deepEqual(readdirSync(dir).sort(), [shard(1), shard(2), shard(3), shard(4), 'model.safetensors.index.json']);
  assert.equal(res.totalSize, 256 + 5 * 64);
  // The index as transformers writes it: json.dumps(index, indent=2, sort_keys=True) + "\n".
  assert.equal(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'), `{
  "metadata": {
    "total_size": 576
  },
  "weight_map": {
    "embed": "${shard(1)}",
    "layers.0.w": "${shard(2)}",
    "layers.1.w": "${shard(2)}",
    "layers.2.w": "${shard(3)}",
    "layers.3.w": "${shard(3)}",
    "layers.4.w": "${shard(4)}"
  }
}
`);
  using one = SafetensorsFile.open(join(dir, shard(2)));
  assert.deepEqual(one.metadata, { format: 'pt' });
  const ckpt = CheckpointReader.open(dir);
  assert.deepEqual(ckpt.names(), [...src.keys()]);
  assert.equal(ckpt.files.length, 4);
  assert.deepEqual(ckpt.indexMetadata, { total_size: 576 });
  for (const [name, t] of src) assert.deepEqual(ckpt.read(name).bytes(), t.bytes(), name);
  assert.equal(ckpt.info('layers.4.w').file, join(dir, shard(4)));
  // Shards open on first use and stay open: a read shard survives deletion, an unread one does not.
  const c2 = CheckpointReader.open(join(dir, 'model.safetensors.index.json'));
  assert.deepEqual(c2.read('embed').toArray(), src.get('embed')!.toArray());
  unlinkSync(join(dir, shard(1)));
  unlinkSync(join(dir, shard(4)));
  assert.deepEqual(c2.read('embed').toArray(), src.get('embed')!.toArray());
  throwsCode(() => c2.read('layers.4.w'), 'IO_ERROR', join(dir, shard(4)));
  c2.close();
  throwsCode(() => c2.read('embed'), 'CLOSED');
  ckpt.close();
  // Everything fits: one model.safetensors, and the old shards and index are gone.
  const single = writeSharded(dir, src, { maxShardBytes: 1 << 20 });
  assert.deepEqual(readdirSync(dir), ['model.safetensors']);
  assert.equal(single.indexPath, null);
  using c3 = CheckpointReader.open(dir);
  assert.deepEqual(c3.read('layers.3.w').toArray(), src.get('layers.3.w')!.toArray());
  writeSharded(dir, src, { maxShardBytes: 300 });
  assert.ok(!readdirSync(dir).includes('model.safetensors'));
}));

test('broken sharded checkpoints are refused with specific codes', () => tidy(() => {
  const dir = tmpDir();
  writeSharded(dir, { a: tensor([1, 2]), b: tensor([3, 4]), c: tensor([5, 6]) }, { maxShardBytes: 8 });
  const idx = join(dir, 'model.safetensors.index.json');
  const s = (i: number): string => `model-0000${i}-of-00003.safetensors`;
  const index = (wm: string): string => `{"metadata":{"total_size":24},"weight_map":{${wm}}}`;
  const valid = `"a":"${s(1)}","b":"${s(2)}","c":"${s(3)}"`;
  const cases: [string, string, string][] = [
    ['missing shard', index(`${valid},"d":"model-00009-of-00009.safetensors"`), 'MISSING_SHARD'],
    ['name missing from its shard', index(`${valid},"ghost":"${s(1)}"`), 'NAME_NOT_IN_SHARD'],
    ['name listed for two shards', index(`${valid},"a":"${s(2)}"`), 'NAME_IN_TWO_SHARDS'],
    ['name listed twice', index(`${valid},"a":"${s(1)}"`), 'DUPLICATE_NAME'],
    ['shard outside the folder', index(`"a":"../${s(1)}"`), 'BAD_SHARD_PATH'],
    ['not JSON', '{"weight_map": {', 'INDEX_NOT_JSON'],
    ['weight_map an array', '{"weight_map": []}', 'BAD_INDEX'],
    ['shard name a number', index('"a":1'), 'BAD_INDEX'],
  ];
  writeFileSync(idx, index(valid));
  CheckpointReader.open(dir).close();  // the baseline is valid
  for (const [what, text, code] of cases) {
    writeFileSync(idx, text);
    throwsCode(() => CheckpointReader.open(dir), code, idx);
    assert.ok(what);
  }
  // A tensor physically in two shards: shard 2 also holds "a", which the index maps to shard 1.
  writeSafetensors(join(dir, s(2)), { a: tensor([9, 9]), b: tensor([3, 4]) });
  writeFileSync(idx, index(valid));
  throwsCode(() => CheckpointReader.open(dir), 'NAME_IN_TWO_SHARDS', idx);
  throwsCode(() => CheckpointReader.open(tmpDir()), 'NO_CHECKPOINT');
}));

test('writeFileAtomic replaces whole files, and a failed write leaves the old file and no temp file', () => {
  const dir = tmpDir();
  const p = join(dir, 'x.bin');
  writeFileAtomic(p, [Buffer.from('hello '), Buffer.from('world')]);
  assert.equal(readFileSync(p, 'utf8'), 'hello world');
  writeFileAtomic(p, Buffer.from('v2'));
  assert.equal(readFileSync(p, 'utf8'), 'v2');
  const boom = new Error('disk full (simulated)');
  function* failing(): Generator<Uint8Array> {
    yield Buffer.from('partial data that must never be seen');
    throw boom;
  }
  assert.throws(() => writeFileAtomic(p, failing()), (e) => e === boom);
  assert.equal(readFileSync(p, 'utf8'), 'v2');
  assert.deepEqual(readdirSync(dir), ['x.bin']);
  // The rename itself fails: the target is a non-empty folder.
  const target = join(dir, 'sub');
  mkdirSync(target);
  writeFileSync(join(target, 'keep'), 'k');
  assert.throws(() => writeFileAtomic(target, Buffer.from('x')), (e) => (e as NodeJS.ErrnoException).syscall === 'rename');
  assert.deepEqual(readdirSync(dir).sort(), ['sub', 'x.bin']);
  assert.equal(readFileSync(join(target, 'keep'), 'utf8'), 'k');
  // Not a Uint8Array: refused before anything replaces the target.
  assert.throws(() => writeFileAtomic(p, ['text' as unknown as Uint8Array]), TypeError);
  assert.equal(readFileSync(p, 'utf8'), 'v2');
  assert.deepEqual(readdirSync(dir).sort(), ['sub', 'x.bin']);
});
