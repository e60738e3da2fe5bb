// Every failure is a TorchError naming the op and its inputs, and the process lives on after it:
// bad shapes, bad dtypes, out-of-range indices, freed tensors, wrong devices, bad arguments.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  TorchError, tensor, zeros, ones, randn, arange, cat, embedding, crossEntropy, dropout, noGrad, tidy,
  linear, fromBytes, cuda, type Tensor,
} from '../src/index.js';
import { N } from '../src/tensor/native.js';

function throwsTorch(f: () => unknown, op: string, pattern: RegExp): void {
  assert.throws(f, (e: unknown) => {
    assert.ok(e instanceof TorchError, `expected a TorchError, got ${String(e)}`);
    assert.equal(e.op, op);
    assert.match(e.message, pattern);
    return true;
  });
}

const f32 = (shape: number[]): Tensor => zeros(shape);

test('bad shapes', () => tidy(() => {
  throwsTorch(() => f32([2, 3]).add(f32([4])), 'add', /size of tensor a \(3\) must match.*\n.*help:/s);
  throwsTorch(() => f32([2, 3]).matmul(f32([2, 3])), 'matmul', /float32\[2, 3\], float32\[2, 3\]/);
  throwsTorch(() => f32([2, 3]).reshape(4, 2), 'reshape', /invalid for input of size 6/);
  throwsTorch(() => f32([2, 3]).transpose(0, 1).view(6), 'view', /view size is not compatible[\s\S]*help: use reshape/);
  throwsTorch(() => cat([f32([2, 3]), f32([2, 4])], 0), 'cat', /Sizes of tensors must match/);
  throwsTorch(() => linear(f32([2, 3]), f32([4, 5])), 'linear', /cannot be multiplied/);
  throwsTorch(() => f32([2]).expand(3), 'expand', /expanded size/);
  throwsTorch(() => tensor([1, 2, 3], { shape: [2, 2] }), 'tensor', /needs 4 values, got 3/);
  throwsTorch(() => tensor([[1, 2], [3]]), 'tensor', /ragged/);
  throwsTorch(() => zeros([2, -1]), 'zeros', /non-negative integers/);
  throwsTorch(() => zeros([1.5]), 'zeros', /non-negative integers/);
  throwsTorch(() => f32([3]).item(), 'item', /exactly one element/);
  throwsTorch(() => fromBytes(new Uint8Array(10), 'float32', [3]), 'fromBytes', /10 bytes but shape and dtype need 12/);
}));

test('bad dtypes', () => tidy(() => {
  throwsTorch(() => f32([2, 2]).matmul(zeros([2, 2], { dtype: 'float64' })), 'matmul', /dtype|scalar type/i);
  throwsTorch(() => f32([3]).indexSelect(0, tensor([0.5])), 'indexSelect', /index/i);
  throwsTorch(() => embedding(f32([3, 2]), tensor([1])), 'embedding', /must be an integer tensor/);
  throwsTorch(() => crossEntropy(f32([2, 3]), tensor([0, 1])), 'crossEntropy', /Float|Long|dtype|scalar type/i);
  assert.throws(() => zeros([2], { dtype: 'float128' as never }), /unknown dtype "float128"/);
  throwsTorch(() => tensor([2 ** 60], { dtype: 'int64' }), 'tensor', /not a safe integer/);
  throwsTorch(() => ones([2], { dtype: 'bool' }).sub(ones([2], { dtype: 'bool' })), 'sub', /bool/i);
}));

test('out-of-range indices and dimensions', () => tidy(() => {
  throwsTorch(() => f32([3]).indexSelect(0, tensor([5], { dtype: 'int64' })), 'indexSelect', /out of range/);
  throwsTorch(() => f32([2, 3]).gather(1, tensor([[3]], { dtype: 'int64' })), 'gather', /out of bounds|out of range/);
  throwsTorch(() => f32([2, 3]).select(0, 2), 'select', /out of range/);
  throwsTorch(() => f32([2, 3]).transpose(0, 2), 'transpose', /out of range/);
  throwsTorch(() => f32([4]).narrow(0, 2, 5), 'narrow', /exceeds dimension size|start \(2\) \+ length \(5\)/);
  throwsTorch(() => f32([2, 3]).sum(3), 'sum', /out of range/);
  throwsTorch(() => f32([2, 3]).size(2), 'size', /out of range/);
  throwsTorch(() => embedding(f32([3, 2]), tensor([3], { dtype: 'int64' })), 'embedding', /out of range/);
  throwsTorch(() => crossEntropy(f32([2, 3]), tensor([0, 7], { dtype: 'int64' })), 'crossEntropy', /out of bounds|out of range/);
}));

test('freed tensors', () => {
  const a = ones([2]);
  const b = ones([2]);
  a.dispose();
  a.dispose();  // disposing twice is harmless
  assert.equal(a.isDisposed, true);
  throwsTorch(() => a.add(1), 'add', /disposed/);
  throwsTorch(() => b.add(a), 'add', /float32\[2\], <disposed tensor>.*disposed/s);
  throwsTorch(() => cat([b, a]), 'cat', /disposed/);
  throwsTorch(() => a.shape, 'metadata', /disposed/);
  throwsTorch(() => a.data(), 'data', /disposed/);
  const kept = tidy(() => ones([1]));
  const inner = { t: null as Tensor | null };
  tidy(() => { inner.t = ones([1]); });
  throwsTorch(() => inner.t!.item(), 'item', /disposed[\s\S]*help: the tensor was freed/);
  assert.equal(kept.item(), 1);
  b.dispose();
  kept.dispose();
});

test('wrong devices and bad native arguments', () => tidy(() => {
  if (!cuda.isAvailable()) throwsTorch(() => ones([2]).to(null, 'cuda'), 'to', /CUDA|cuda/);
  throwsTorch(() => ones([2]).to(null, 'tpu' as never), 'to', /device/i);
  throwsTorch(() => zeros([2], { device: 'cuda:x' as never }), 'zeros', /device/i);
  // The native layer checks every handle's type tag: a foreign object is refused, never dereferenced.
  assert.throws(() => N.add!({}, 1), /argument 0 is not a tensor/);
  assert.throws(() => N.add!(1, 1), /argument 0 is not a tensor/);
  assert.throws(() => N.reshape!(ones([2]).handle, 'x'), /must be an array of integers/);
  assert.throws(() => N.reshape!(ones([2]).handle, [1.5]), /must be an array of integers/);
  assert.throws(() => N.fromBuffer!('nope', 6, [1]), /TypedArray/);
}));

test('autograd misuse and bad parameters', () => tidy(() => {
  throwsTorch(() => ones([2]).sum().backward(), 'backward', /does not require grad/);
  const w = ones([3], { requiresGrad: true });
  throwsTorch(() => w.mul(2).backward(), 'backward', /scalar output/);
  throwsTorch(() => w.add_(1), 'add_', /leaf Variable[\s\S]*help: update parameters inside noGrad/);
  noGrad(() => w.add_(1));  // the fix the hint names works
  assert.deepEqual(w.toArray(), [2, 2, 2]);
  throwsTorch(() => dropout(ones([2]), 1.5), 'dropout', /must be in \[0, 1\]/);
  throwsTorch(() => crossEntropy(randn([2, 3]), arange(2), { labelSmoothing: 2 }), 'crossEntropy', /label smoothing/);
  throwsTorch(() => crossEntropy(randn([2, 3]), arange(2), { reduction: 'avg' as never }), 'crossEntropy', /reduction must be/);
  throwsTorch(() => ones([2]).clamp(), 'clamp', /needs a min, a max, or both/);
  throwsTorch(() => arange(0, 5, 0), 'arange', /step must not be zero/);
  assert.throws(() => tidy(() => Promise.resolve(1) as never), /synchronous/);
}));

test('the engine keeps working after errors', () => tidy(() => {
  for (let i = 0; i < 100; i++) assert.throws(() => f32([2]).matmul(f32([3])));
  assert.deepEqual(ones([2]).add(1).toArray(), [2, 2]);
}));
