// Deterministic memory: scopes free what they own, results and kept tensors survive, and a long
// training-like loop holds resident memory flat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { tensor, tidy, scope, keep, ones, randn, noGrad, liveTensors, scopeDepth, setAllocatorCaching, type Tensor } from '../src/index.js';

test('tidy frees temporaries and keeps what it returns', () => {
  const before = liveTensors();
  const r = tidy(() => {
    const a = ones([4]);
    const b = a.mul(3).add(1);
    return { sum: b.sum(), parts: [b, a.neg()] };
  });
  assert.equal(liveTensors() - before, 3);
  assert.equal(r.sum.item(), 16);
  assert.deepEqual(r.parts[1]!.toArray(), [-1, -1, -1, -1]);
  r.sum.dispose();
  r.parts.forEach((t) => t.dispose());
  assert.equal(liveTensors(), before);
});

test('nested tidy moves results to the enclosing scope; errors still free', () => {
  const before = liveTensors();
  const outer = tidy(() => {
    const inner = tidy(() => ones([2]).mul(2));  // now owned by the outer tidy
    ones([3]);
    return inner.add(1);
  });
  assert.equal(liveTensors() - before, 1);
  outer.dispose();
  assert.throws(() => tidy(() => {
    ones([5]);
    throw new Error('boom');
  }), /boom/);
  assert.equal(liveTensors(), before);
  assert.equal(scopeDepth(), 0);
});

test('scope() with using, keep(), and the scope size', () => {
  const before = liveTensors();
  let kept: Tensor;
  {
    using s = scope();
    ones([2]);
    ones([2]);
    kept = s.keep(ones([2]).mul(5));
    assert.equal(s.size, 3);  // ones, ones, ones (the product was taken out by keep)
  }
  assert.equal(liveTensors() - before, 1);
  assert.deepEqual(kept.toArray(), [5, 5]);
  kept.dispose();
  const g = tidy(() => keep(ones([1])));  // keep() inside tidy survives it without being returned
  assert.equal(g.item(), 1);
  g.dispose();
  assert.equal(liveTensors(), before);
});

test('views and gradients stay valid after their source handle is disposed', () => {
  const a = tensor([1, 2, 3, 4]);
  const v = a.view(2, 2);
  a.dispose();
  assert.deepEqual(v.toArray(), [[1, 2], [3, 4]]);  // the storage lives while a view holds it
  v.dispose();
});

function rssMB(): number {
  return process.memoryUsage().rss / 2 ** 20;
}

test('the allocator cache can be turned off and on (the default is on)', () => {
  assert.equal(setAllocatorCaching(false), true);
  assert.equal(tidy(() => randn([512, 512]).matmul(randn([512, 512])).shape.join()), '512,512');
  assert.equal(setAllocatorCaching(true), true);
});

test('10,000 training-like steps keep resident memory flat', () => {
  const before = liveTensors();
  const wTrue = keep(randn([32, 32], { seed: 1 }));
  const w = keep(randn([32, 32], { seed: 2, requiresGrad: true }));
  const b = keep(ones([32], { requiresGrad: true }));
  const step = (i: number): number => tidy(() => {
    const x = randn([16, 32], { seed: i });
    const y = x.matmul(wTrue);
    const pred = x.matmul(w).add(b).tanh().mul(4);
    const loss = pred.sub(y).square().mean();
    loss.backward();
    noGrad(() => {
      w.sub_(w.grad!.mul(1e-3));
      b.sub_(b.grad!.mul(1e-3));
    });
    w.zeroGrad();
    b.zeroGrad();
    return loss.item();
  });
  let rssAt1000 = 0;
  let first = 0;
  let last = 0;
  for (let i = 0; i < 10_000; i++) {
    const l = step(i);
    if (i === 0) first = l;
    if (i === 999) rssAt1000 = rssMB();
    last = l;
  }
  const growth = rssMB() - rssAt1000;
  assert.ok(last < first, `loss should fall (first ${first}, last ${last})`);
  assert.ok(growth < 40, `resident memory grew by ${growth.toFixed(1)} MB over 9,000 steps`);
  assert.equal(liveTensors() - before, 3, 'only the three parameters remain');
  for (const t of [wTrue, w, b]) t.dispose();
});
