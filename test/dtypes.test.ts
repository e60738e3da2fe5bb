// Broadcasting, dtype promotion and casts, including float16/bfloat16 round trips, against values
// computed by hand (bf16 keeps 8 significand bits, f16 11; rounding is to nearest even).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, tidy, zeros, ones, arange, full, fromBytes, type DType } from '../src/index.js';

test('broadcasting follows numpy rules from the right', () => tidy(() => {
  const a = tensor([[1], [2], [3]]);        // (3, 1)
  const b = tensor([10, 20]);               // (2,)
  const s = a.add(b);                       // (3, 2)
  assert.deepEqual(s.shape, [3, 2]);
  assert.deepEqual(s.toArray(), [[11, 21], [12, 22], [13, 23]]);
  assert.deepEqual(a.mul(b).toArray(), [[10, 20], [20, 40], [30, 60]]);
  const c = ones([2, 1, 3]).mul(arange(0, 4, 1, { dtype: 'float32' }).reshape(4, 1));  // (2, 4, 3)
  assert.deepEqual(c.shape, [2, 4, 3]);
  assert.equal(c.sum().item(), 2 * 3 * (0 + 1 + 2 + 3));
  assert.deepEqual(tensor([1, 2, 3]).sub(tensor(1)).toArray(), [0, 1, 2]);  // 0-d broadcasts
  assert.deepEqual(tensor([[1, 2]]).div(tensor([[2], [4]])).toArray(), [[0.5, 1], [0.25, 0.5]]);
}));

test('dtype promotion: integer tensors stay integral with integer scalars', () => tidy(() => {
  const i = tensor([1, 2, 3], { dtype: 'int64' });
  assert.equal(i.add(2).dtype, 'int64');
  assert.equal(i.mul(2).dtype, 'int64');
  assert.equal(i.add(0.5).dtype, 'float32');
  assert.deepEqual(i.add(0.5).toArray(), [1.5, 2.5, 3.5]);
  assert.equal(i.div(2).dtype, 'float32');  // true division, as PyTorch
  assert.equal(tensor([1], { dtype: 'int32' }).add(tensor([1], { dtype: 'int64' })).dtype, 'int64');
  assert.equal(tensor([1], { dtype: 'bfloat16' }).add(tensor([1])).dtype, 'float32');
  assert.equal(tensor([1, 2]).gt(1).dtype, 'bool');
}));

test('casts between every pair of dtypes keep small integers exactly', () => tidy(() => {
  const all: DType[] = ['float32', 'float16', 'bfloat16', 'float64', 'int64', 'int32', 'int8', 'uint8'];
  for (const from of all) {
    for (const to of all) {
      const t = tensor([0, 1, 2, 7, 100], { dtype: from }).to(to);
      assert.equal(t.dtype, to);
      assert.deepEqual(t.toArray(), [0, 1, 2, 7, 100], `${from} -> ${to}`);
    }
  }
  assert.deepEqual(tensor([0, 2, -1]).to('bool').toArray(), [false, true, true]);
  assert.deepEqual(tensor([true, false]).to('float32').toArray(), [1, 0]);
  assert.deepEqual(tensor([-1.7, 2.9]).to('int64').toArray(), [-1, 2]);  // truncation toward zero
  assert.deepEqual(tensor([300, -1], { dtype: 'int64' }).to('uint8').toArray(), [44, 255]);  // wraps mod 256
}));

test('bfloat16 and float16 round trips and rounding', () => tidy(() => {
  // 1 + 2^-8 is halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
  // 1 + 3*2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: ties to even (1 + 2^-6).
  const x = tensor([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 3.140625, 65504, 1e-3], { dtype: 'float64' });
  assert.deepEqual(x.to('bfloat16').toArray(), [1, 1, 1 + 2 ** -6, 3.140625, 65536, 0.00099945068359375]);
  // float16: 11 significand bits, max 65504, 1e-3 -> 0.0010004043579101562; 65520 overflows to inf.
  const h = tensor([1, 1 + 2 ** -11, 65504, 1e-3, 65520], { dtype: 'float64' }).to('float16');
  assert.deepEqual(h.toArray(), [1, 1, 65504, 0.0010004043579101562, Infinity]);
  // Exactly representable values survive a round trip through either half type bit for bit.
  const exact = tensor([0.5, -2, 1.5, 0.125, -0.375]);
  for (const d of ['bfloat16', 'float16'] as const) {
    assert.deepEqual(exact.to(d).to('float32').toArray(), [0.5, -2, 1.5, 0.125, -0.375]);
  }
  // Raw bytes: bf16 is the top half of the float32 pattern (1.0f = 0x3F800000 -> 0x3F80).
  assert.deepEqual([...tensor([1, -2]).to('bfloat16').bytes()], [0x80, 0x3f, 0x00, 0xc0]);
  // float16 1.0 = 0x3C00, -2.0 = 0xC000 (little-endian bytes)
  assert.deepEqual([...tensor([1, -2]).to('float16').bytes()], [0x00, 0x3c, 0x00, 0xc0]);
  assert.deepEqual(fromBytes(new Uint8Array([0x80, 0x3f, 0x00, 0xc0]), 'bfloat16', [2]).toArray(), [1, -2]);
}));

test('data() and bytes() give each dtype its natural array', () => tidy(() => {
  assert.ok(tensor([1.5]).data() instanceof Float32Array);
  assert.ok(tensor([1.5], { dtype: 'float64' }).data() instanceof Float64Array);
  assert.ok(tensor([1], { dtype: 'int64' }).data() instanceof BigInt64Array);
  assert.ok(tensor([1], { dtype: 'int32' }).data() instanceof Int32Array);
  assert.ok(tensor([1], { dtype: 'int8' }).data() instanceof Int8Array);
  assert.ok(tensor([1], { dtype: 'uint8' }).data() instanceof Uint8Array);
  assert.ok(tensor([1], { dtype: 'bfloat16' }).data() instanceof Float32Array);
  assert.deepEqual([...tensor([true, false, true]).data()], [1, 0, 1]);
  assert.deepEqual(tensor(new Int32Array([1, 2, 3, 4, 5, 6]), { shape: [2, 3] }).toArray(), [[1, 2, 3], [4, 5, 6]]);
  assert.deepEqual(tensor(new BigInt64Array([5n, -6n])).toArray(), [5, -6]);
  assert.equal(full([2, 2], 7, { dtype: 'int8' }).sum().item(), 28);
  assert.equal(zeros([0, 3]).numel, 0);
  assert.deepEqual(zeros([0, 3]).toArray(), []);
  // Strided views come back in logical order.
  assert.deepEqual(tensor([[1, 2], [3, 4]]).transpose(0, 1).data(), new Float32Array([1, 3, 2, 4]));
  assert.equal(tensor(5).item(), 5);
  assert.deepEqual(tensor(5).shape, []);
}));
