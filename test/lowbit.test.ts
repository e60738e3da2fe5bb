// Low-bit LoRA: packing round trips, the quantizers on hand-written rows, the STE gradient, the packed
// file size (1 bit vs float32), and save -> load equal to the training-time fake-quantized forward.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, keep, tensor, randn, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, writeSafetensors, type Tensor, type AdapterContext } from '../src/index.js';
import { Linear } from '../src/nn/layers.js';
import { LowbitLoraLayer, resolveLowbitLora, packCodes, unpackCodes, codesTensor, codesFromTensor, quantize, fakeQuant, steQuant } from '../src/adapters/lowbit/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const ctxOf = (active: string[]): AdapterContext => ({ active, disabled: false, rows: null, version: 0, slots: {}, composition: null });
const arr = (t: Tensor) => [...t.to('float32', 'cpu').data()].map(Number);

test('pack / unpack round trip for every bit width on hand-written codes', () => tidy(() => {
  assert.deepEqual([...packCodes([1, -1, -1, 1, 1, 1, -1, -1, 1], 1)], [0b00111001, 0b1]);
  assert.deepEqual([...packCodes([-1, 0, 1, 1, 0], 2)], [0 | (1 << 2) | (2 << 4) | (2 << 6), 1]);
  assert.deepEqual([...packCodes([-7, 7, 0], 4)], [0 | (14 << 4), 7]);
  const hand: Record<number, number[]> = { 1: [1, -1, -1, 1, 1, 1, -1, -1, 1], 2: [-1, 0, 1, 1, 0], 4: [-7, 7, 0, 3, -2] };
  for (const [b, codes] of Object.entries(hand)) assert.deepEqual([...unpackCodes(packCodes(codes, +b), +b, codes.length)], codes);
  for (let bits = 1; bits <= 8; bits++) {
    const q = bits === 1 ? 1 : 2 ** (bits - 1) - 1;
    const codes = Array.from({ length: 15 }, (_, i) => (bits === 1 ? (i % 3 ? 1 : -1) : ((i * 5) % (2 * q + 1)) - q));
    const t = tensor(codes, { shape: [3, 5] });
    const file = codesTensor(t, bits);
    assert.equal(file.dtype, [1, 2, 4].includes(bits) ? 'uint8' : 'int8', `bits ${bits}`);
    assert.deepEqual(arr(codesFromTensor(file, bits, 3, 5)), codes, `bits ${bits}`);
  }
  assert.throws(() => packCodes([2], 2), /code 2 does not fit 2 bits/);
}));

test('quantizers on hand-written rows', () => tidy(() => {
  // 1 bit: sign * mean|w| = 0.5 * [1, -1, 1, -1]
  assert.deepEqual(arr(fakeQuant(tensor([[0.5, -1, 0.25, -0.25]]), 1)), [0.5, -0.5, 0.5, -0.5]);
  // 4 bits: scale = 1/7; codes round(7 w) half up = [7, -3, 2, 0]
  const { codes, scale } = quantize(tensor([[1, -0.5, 0.25, 0]]), 4);
  assert.deepEqual(arr(codes), [7, -3, 2, 0]);
  assert.ok(Math.abs(arr(scale)[0]! - 1 / 7) < 1e-7);
  // 2 bits: ternary, scale = absmax; an all-zero row stays zero
  assert.deepEqual(arr(fakeQuant(tensor([[2, -0.9, 1.1, 0], [0, 0, 0, 0]]), 2)), [2, 0, 2, 0, 0, 0, 0, 0]);
}));

test('the STE gradient equals the gradient of the unquantized computation at the quantized weights', () => tidy(() => {
  const x = randn([5, 6], { seed: 1 });
  const w = randn([4, 6], { seed: 2 });
  w.requiresGrad = true;
  const q = fakeQuant(w, 2).detach();
  q.requiresGrad = true;
  x.matmul(steQuant(w, 2).transpose(0, 1)).square().sum().backward();
  x.matmul(q.transpose(0, 1)).square().sum().backward();
  assert.ok(maxDiff(w.grad!, q.grad!) < 1e-6);
  assert.ok(tidy(() => w.grad!.abs().sum().item()) > 0);
}));

test('1-bit file is at most 1/25 of the float32 LoRA file for the same r', () => tidy(() => {
  const layer = new LowbitLoraLayer(new Linear(512, 512), ctxOf(['a']));
  layer.addAdapter('a', resolveLowbitLora({ peftType: 'LOWBIT_LORA', r: 128, bits: 1, initLoraWeights: false }), 'fc', { seed: 0 });
  const dir = mkdtempSync(join(tmpdir(), 'lowbit-size-'));
  writeSafetensors(join(dir, 'q.safetensors'), layer.adapterState('a'));
  const { A, B } = layer.weights('a');
  writeSafetensors(join(dir, 'f.safetensors'), new Map([['lora_A.weight', A], ['lora_B.weight', B]]));
  const ratio = statSync(join(dir, 'q.safetensors')).size / statSync(join(dir, 'f.safetensors')).size;
  assert.ok(ratio <= 1 / 25, `ratio ${ratio}`);
  layer.dispose();
}));

test('save -> load computes exactly what training evaluated (layer, every bits), and through a PEFT folder', () => {
  tidy(() => {
    for (const bits of [1, 2, 3, 4, 8]) {
      const mk = () => { const l = new Linear(16, 8); noGrad(() => { l.setParameter('weight', randn([8, 16], { seed: 5 }), false); l.setParameter('bias', randn([8], { seed: 6 }), false); }); return l; };
      const cfg = resolveLowbitLora({ peftType: 'LOWBIT_LORA', r: 4, bits, initLoraWeights: false });
      const layer = new LowbitLoraLayer(mk(), ctxOf(['a']));
      layer.addAdapter('a', cfg, 'fc', { seed: 1 });
      layer.train();
      const x = randn([3, 16], { seed: 7 });
      const yTrain = layer.forward(x);  // STE form, as in training
      const other = new LowbitLoraLayer(mk(), ctxOf(['a']));
      other.addAdapter('a', cfg, 'fc', { seed: 99 });
      other.loadAdapterState('a', layer.adapterState('a'), 'fc');
      other.eval();
      assert.ok(maxDiff(other.forward(x), yTrain) < 1e-6, `bits ${bits}`);
      const { A } = other.weights('a');
      assert.ok(maxDiff(A, fakeQuant(layer.weights('a').A, bits)) === 0, `bits ${bits}: loaded A is code * scale exactly`);
      layer.dispose();
      other.dispose();
    }
  });
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const x = keep(ids());
  try {
    const peft = PeftModel.create(m, { peftType: 'LOWBIT_LORA', r: 4, bits: 1 }, { seed: 3 });
    noGrad(() => peft.parts().forEach(([, l], i) => (l as LowbitLoraLayer).weights('default').B.add_(randn([32, 4], { seed: i }).mul(0.1).narrow(0, 0, (l as LowbitLoraLayer).outFeatures))));
    const tuned = keep(logits(m, x));
    const dir = mkdtempSync(join(tmpdir(), 'lowbit-'));
    savePeftAdapters(peft, dir);
    const m2 = loadModel(join(HF, 'llama'), { dtype: 'float32' });
    const p2 = loadPeftAdapter(m2, dir);
    assert.equal((p2.configs.get('default') as unknown as { bits: number }).bits, 1);
    assert.ok(maxDiff(logits(m2, x), tuned) < 1e-5);
    m2.dispose();
    tuned.dispose();
  } finally {
    x.dispose();
    m.dispose();
  }
});
