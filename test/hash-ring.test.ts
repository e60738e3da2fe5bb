// The router's hash ring (src/serve/hash-ring.ts): consistent hashing with bounded loads (Mirrokni et
// al. 2018). Checked against the definitions: no replica ever above ceil((1 + eps) * m / n) while m
// requests are placed (and each placement under the bound once requests also finish), even when every request names one adapter; removing a replica moves only the
// keys it owned; adding one takes keys only for itself; and the shares are near 1/n.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HashRing, pickBounded, loadBound } from '../src/serve/hash-ring.js';

const NODES = ['http://10.0.0.1:8000', 'http://10.0.0.2:8000', 'http://10.0.0.3:8000', 'http://10.0.0.4:8000', 'http://10.0.0.5:8000'];
const KEYS = Array.from({ length: 5000 }, (_, i) => `adapter-${i}`);

test('the bound: ceil((1 + eps) * (m + 1) / n), from the paper', () => {
  assert.equal(loadBound(0, 2, 0.25), 1);   // ceil(1.25 * 1 / 2)
  assert.equal(loadBound(1, 2, 0.25), 2);   // ceil(1.25 * 2 / 2) = ceil(1.25)
  assert.equal(loadBound(2, 2, 0.25), 2);   // ceil(1.25 * 3 / 2) = ceil(1.875)
  assert.equal(loadBound(99, 4, 0.25), 32); // ceil(1.25 * 100 / 4) = ceil(31.25)
  assert.equal(loadBound(7, 4, 0), 2);      // eps 0: the plain average
});

for (const eps of [0.25, 0.1, 1]) {
  test(`bounded loads (eps ${eps}): no replica above the bound at any time, skewed and uniform keys`, () => {
    const ring = new HashRing(NODES);
    // Half the requests name one hot adapter, a quarter a second one, the rest spread: the hot keys
    // must walk the ring instead of piling onto their owner.
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
    const load = new Map(NODES.map((n) => [n, 0]));
    const held: { node: string }[] = [];
    let hotOwnerPeak = 0;
    for (let step = 0; step < 4000; step++) {
      // The first 2000 steps only place requests: then no replica may ever hold more than the bound.
      // After that some finish too; a finished request lowers the average under replicas it never
      // left (requests in flight cannot move), so from then on each placement is checked alone.
      if (step >= 2000 && held.length && rand() < 0.3) {
        const gone = held.splice(Math.floor(rand() * held.length), 1)[0]!;
        load.set(gone.node, load.get(gone.node)! - 1);
        continue;
      }
      const u = rand();
      const key = u < 0.5 ? 'hot' : u < 0.75 ? 'warm' : `k${Math.floor(rand() * 1000)}`;
      const m = held.length;
      const node = pickBounded(ring.walk(key), (n) => load.get(n)!, eps)!;
      assert.ok(load.get(node)! + 1 <= loadBound(m, NODES.length, eps), 'the chosen replica is under the bound');
      load.set(node, load.get(node)! + 1);
      held.push({ node });
      const bound = Math.ceil((1 + eps) * held.length / NODES.length);
      if (step < 2000) for (const [n, l] of load) assert.ok(l <= bound, `${n} holds ${l} > ceil((1+${eps}) * ${held.length} / ${NODES.length}) = ${bound}`);
      hotOwnerPeak = Math.max(hotOwnerPeak, load.get(ring.owner('hot')!)!);
    }
    assert.ok(hotOwnerPeak > 1, 'the hot adapter did go to its owner first');
  });
}

test('under the bound a key goes to its owner; the walk visits every replica once', () => {
  const ring = new HashRing(NODES);
  for (const k of KEYS.slice(0, 200)) {
    const walk = ring.walk(k);
    assert.equal(walk.length, NODES.length);
    assert.equal(new Set(walk).size, NODES.length);
    assert.equal(walk[0], ring.owner(k));
    assert.equal(pickBounded(walk, () => 0, 0.25), walk[0]);
    // A resident replica is preferred among those under the bound.
    assert.equal(pickBounded(walk, () => 0, 0.25, (n) => n === walk[3]), walk[3]);
    // The owner full, the next one on the ring takes it.
    assert.equal(pickBounded(walk, (n) => (n === walk[0] ? 5 : 0), 0.25), walk[1]);
  }
});

test('removing a replica moves only its keys; adding one takes keys only for itself', () => {
  const ring = new HashRing(NODES);
  const before = new Map(KEYS.map((k) => [k, ring.owner(k)!]));
  const removed = NODES[2]!;
  ring.remove(removed);
  let moved = 0;
  for (const k of KEYS) {
    const now = ring.owner(k)!;
    assert.notEqual(now, removed);
    if (before.get(k) !== removed) assert.equal(now, before.get(k), `${k} moved though its replica stayed`);
    else moved++;
  }
  const share = moved / KEYS.length;
  assert.ok(share > 0.1 && share < 0.3, `the removed replica owned ${(share * 100).toFixed(1)}% of the keys (1/5 expected)`);
  ring.add(removed);
  for (const k of KEYS) assert.equal(ring.owner(k), before.get(k), 'adding it back restores every owner');
  // Insertion order does not matter.
  const other = new HashRing([...NODES].reverse());
  for (const k of KEYS.slice(0, 500)) assert.equal(other.owner(k), before.get(k));
});

test('shares are near 1/n with 100 virtual points per replica', () => {
  const ring = new HashRing(NODES);
  const count = new Map<string, number>();
  for (const k of KEYS) count.set(ring.owner(k)!, (count.get(ring.owner(k)!) ?? 0) + 1);
  for (const n of NODES) {
    const s = (count.get(n) ?? 0) / KEYS.length;
    assert.ok(s > 0.12 && s < 0.28, `${n}: ${(s * 100).toFixed(1)}%`);
  }
  assert.deepEqual(new HashRing([]).walk('x'), []);
  assert.equal(pickBounded([], () => 0, 0.25), null);
});
