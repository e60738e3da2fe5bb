// The native gathered LoRA product of mixed-adapter decode batches (loraGatherAdd) against the
// same product written row by row with plain tensor ops, and its refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randn, randint, tensor, zeros, noGrad, loraGatherAdd, loadModel, PeftModel } from '../src/index.js';
import { defaultModelDir } from '../src/models/default-model.js';
import { LoraLayer } from '../src/adapters/lora/layer.js';

test('loraGatherAdd equals Bt[k]^T A[k] x + bias[k] row by row, in float32 and onto a bfloat16 result', () => noGrad(() => {
  const K = 5, R = 3, I = 37, O = 11, M = 9;
  const A = randn([K, R, I], { seed: 1 });
  const B = randn([K, O, R], { seed: 2 });
  const Bt = B.transpose(1, 2).contiguous();  // (K, R, O)
  const bias = randn([K, O], { seed: 3 });
  const x = randn([M, I], { seed: 4 });
  const rowsList = [0, 4, 4, 2, 1, 0, 3, 3, 4];
  const rows = tensor(rowsList, { dtype: 'int64' });
  for (const withBias of [false, true]) {
    const base = randn([M, O], { seed: 5 });
    const got = loraGatherAdd(base, x, A, Bt, rows, withBias ? bias : null);
    for (let m = 0; m < M; m++) {
      const k = rowsList[m]!;
      let want = B.select(0, k).matmul(A.select(0, k).matmul(x.select(0, m)));  // (O)
      if (withBias) want = want.add(bias.select(0, k));
      want = want.add(base.select(0, m));
      assert.ok(got.select(0, m).sub(want).abs().max().item() < 1e-4, `row ${m}`);
    }
    const b16 = base.to('bfloat16');
    const g16 = loraGatherAdd(b16, x.to('bfloat16'), A, Bt, rows, withBias ? bias : null);
    assert.equal(g16.dtype, 'bfloat16');
    assert.ok(g16.to('float32').sub(got).abs().max().item() < 0.15);
  }
}));

test('loraGatherAdd refuses bad shapes, dtypes and adapter indices', () => noGrad(() => {
  const A = zeros([2, 2, 4]);
  const B = zeros([2, 2, 3]);  // Bt (K, R, O)
  const x = zeros([2, 4]);
  const r = zeros([2, 3]);
  assert.throws(() => loraGatherAdd(r, x, A, B, tensor([0, 2], { dtype: 'int64' })), /outside \[0, K\)/);
  assert.throws(() => loraGatherAdd(r, x, A, B, tensor([0, -1], { dtype: 'int64' })), /outside \[0, K\)/);
  assert.throws(() => loraGatherAdd(r, zeros([2, 5]), A, B, tensor([0, 1], { dtype: 'int64' })), /x must be \(M, I\)/);
  assert.throws(() => loraGatherAdd(r, x, A.to('bfloat16'), B, tensor([0, 1], { dtype: 'int64' })), /float32 A/);
  assert.throws(() => loraGatherAdd(zeros([3, 3]), x, A, B, tensor([0, 1], { dtype: 'int64' })), /result must be \(M, O\)/);
  assert.throws(() => loraGatherAdd(r, x, A, B, tensor([0, 1], { dtype: 'int32' })), /rows must be int64/);
}));

test('mixed batches through the slot pool: ranks 2/4/8 and no adapter per row equal each alone; a replaced adapter never serves its old weights; training drops the pool', () => {
  const model = loadModel(defaultModelDir(), { dtype: 'float32' });
  const make = (r: number, _seed: number) => ({ r, loraAlpha: 2 * r, initLoraWeights: false as const, targetModules: ['q_proj', 'v_proj'] });
  const peft = PeftModel.create(model, make(2, 1), { adapterName: 'a', seed: 1 });
  peft.addAdapter('b', make(4, 2), { seed: 2 });
  peft.addAdapter('c', make(8, 3), { seed: 3 });
  model.eval();
  const x = randint(0, 4000, [4, 6], { seed: 9 });
  const names = ['a', 'c', '__base__', 'b'];
  const alone = (n: string, row: number) => noGrad(() => {
    const xi = x.narrow(0, row, 1);
    if (n === '__base__') return peft.withAdaptersDisabled(() => peft.forward({ inputIds: xi }).logits);
    peft.setAdapter(n);
    return peft.forward({ inputIds: xi }).logits;
  });
  const check = (label: string) => {
    const mixed = noGrad(() => peft.forward({ inputIds: x, adapterNames: names }).logits);
    names.forEach((n, i) => assert.ok(mixed.narrow(0, i, 1).sub(alone(n, i)).abs().max().item() < 1e-4, `${label}: row ${i} (${n})`));
    // decode-sized rows (T = 1) take the native pass
    const last = x.narrow(1, 5, 1).contiguous();
    const m1 = noGrad(() => peft.forward({ inputIds: last, adapterNames: names }).logits);
    names.forEach((n, i) => {
      const one = noGrad(() => (n === '__base__' ? peft.withAdaptersDisabled(() => peft.forward({ inputIds: last.narrow(0, i, 1) }).logits) : (peft.setAdapter(n), peft.forward({ inputIds: last.narrow(0, i, 1) }).logits)));
      assert.ok(m1.narrow(0, i, 1).sub(one).abs().max().item() < 1e-4, `${label}: decode row ${i} (${n})`);
    });
  };
  check('first');
  // Replace "b" with different weights under the same name: the pool must not serve the old ones.
  peft.deleteAdapter('b');
  peft.addAdapter('b', make(4, 7), { seed: 7 });
  check('after replacing b');
  // A training forward drops the pool; in-place updates after it are seen.
  model.train();
  noGrad(() => peft.forward({ inputIds: x }));
  model.eval();
  noGrad(() => { for (const [, t] of model.namedParameters()) if (t.requiresGrad) t.mul_(1.5); });
  check('after an in-place update');
  peft.dispose();
});

test('prepareMixedBatch writes each LoRA slot at load, so the first mixed step copies nothing and gives the same rows', () => {
  const model = loadModel(defaultModelDir(), { dtype: 'float32' });
  const make = (r: number) => ({ r, loraAlpha: 2 * r, initLoraWeights: false as const, targetModules: ['q_proj', 'v_proj'] });
  const peft = PeftModel.create(model, make(2), { adapterName: 'a', seed: 1 });
  peft.addAdapter('b', make(8), { seed: 2 });
  model.eval();
  const layers = peft.parts().map(([, p]) => p).filter((p): p is LoraLayer => p instanceof LoraLayer);
  assert.equal(layers.length, 8);
  const writes = () => layers.reduce((s, l) => s + (l as unknown as { pool: { writes: number } }).pool.writes, 0);
  assert.equal(writes(), 0);
  peft.prepareMixedBatch('a');
  assert.equal(writes(), 8, 'one slot write per layer');
  peft.prepareMixedBatch('b');  // a larger rank: every layer's pool is rebuilt at rank 8 and b written
  peft.prepareMixedBatch('a');  // a again, at the new rank
  assert.equal(writes(), 24);
  const x = randint(0, 4000, [3, 1], { seed: 4 });
  const names = ['b', 'a', '__base__'];
  const mixed = noGrad(() => peft.forward({ inputIds: x, adapterNames: names }).logits);
  assert.equal(writes(), 24, 'the first mixed step copies nothing');
  noGrad(() => peft.forward({ inputIds: x, adapterNames: ['a', 'a', 'b'] }).logits).dispose();
  assert.equal(writes(), 24, 'nor does another order');
  names.forEach((n, i) => {
    const one = noGrad(() => (n === '__base__' ? peft.withAdaptersDisabled(() => peft.forward({ inputIds: x.narrow(0, i, 1) }).logits) : (peft.setAdapter(n), peft.forward({ inputIds: x.narrow(0, i, 1) }).logits)));
    assert.ok(mixed.narrow(0, i, 1).sub(one).abs().max().item() < 1e-4, `row ${i} (${n})`);
  });
  assert.throws(() => peft.prepareMixedBatch('nope'), /no adapter "nope"/);
  peft.dispose();
});
