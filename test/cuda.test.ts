// CUDA end to end, run where libtorch has CUDA and a GPU is visible (reported as skipped elsewhere):
// forward parity CPU vs GPU, a seeded draw on the device, LoRA training on the GPU whose loss falls,
// save and reload of the GPU-trained adapter on the CPU, and a mixed batch on the GPU. The machine
// check script (scripts/device-check.sh) runs this file on a GPU host.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { cuda, noGrad, tidy, tensor, manualSeed, randn, multinomial, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, autoDtype } from '../src/index.js';
import { Trainer, syntheticTask } from '../src/train/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const LLAMA = join(root, 'test/fixtures/hf-ref/llama');
const skip = cuda.isAvailable() ? false : 'no CUDA device (libtorch without CUDA, or no GPU visible)';

const maxDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

test('cuda: auto dtype is bfloat16 or float16 on the GPU, never an emulated one', { skip }, () => {
  const d = autoDtype('cuda');
  assert.ok(['bfloat16', 'float16'].includes(d.dtype), d.reason);
});

test('cuda: model forward on the GPU matches the CPU (float32)', { skip }, () => noGrad(() => {
  const cpu = loadModel(LLAMA, { dtype: 'float32' });
  const gpu = loadModel(LLAMA, { dtype: 'float32', device: 'cuda' });
  assert.equal(gpu.device, 'cuda:0');
  const ids = [[1, 5, 9, 14, 3, 7], [2, 8, 4, 4, 11, 6]];
  const mask = [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]];
  const a = tidy(() => cpu.forward({ inputIds: tensor(ids, { dtype: 'int64' }), attentionMask: tensor(mask, { dtype: 'int64' }) }).logits.view(-1).toArray() as number[]);
  const b = tidy(() => gpu.forward({ inputIds: tensor(ids, { dtype: 'int64', device: 'cuda' }), attentionMask: tensor(mask, { dtype: 'int64', device: 'cuda' }) }).logits.to('float32', 'cpu').view(-1).toArray() as number[]);
  assert.ok(maxDiff(a, b) < 1e-3, `max |cpu - gpu| = ${maxDiff(a, b)}`);
  cpu.dispose();
  gpu.dispose();
}));

test('cuda: seeded draws on the device repeat; manualSeed seeds the GPU generator', { skip }, () => tidy(() => {
  const p = tensor([[0.1, 0.2, 0.3, 0.4]], { device: 'cuda' });
  const a = multinomial(p, 8, { replacement: true, seed: 7 }).toArray();
  const b = multinomial(p, 8, { replacement: true, seed: 7 }).toArray();
  assert.deepEqual(a, b);
  manualSeed(3);
  const x = randn([4], { device: 'cuda' }).toArray();
  manualSeed(3);
  assert.deepEqual(randn([4], { device: 'cuda' }).toArray(), x);
}));

test('cuda: LoRA trains on the GPU (loss falls), saves, and reloads on the CPU with the same outputs', { skip }, async () => {
  const model = loadModel(LLAMA, { dtype: 'float32', device: 'cuda' });
  const peft = PeftModel.create(model, { r: 4, loraAlpha: 8, targetModules: ['q_proj', 'v_proj'] }, { seed: 0 });
  const task = syntheticTask(96, 64, 16);
  const trainer = new Trainer({ model, peft, train: task.train, eval: task.eval, collate: { padId: 0 }, config: { task: 'causal-lm', lr: 5e-3, maxSteps: 30, batchSize: 8, progress: false, logEvery: 1000 } });
  const before = trainer.evaluate().loss;
  await trainer.train();
  const after = trainer.evaluate().loss;
  assert.ok(after < before, `loss ${before} -> ${after}`);
  const dir = join(mkdtempSync(join(tmpdir(), 'ak-cuda-')), 'adapter');
  savePeftAdapters(peft, dir);
  const ids = [[1, 5, 9, 14, 3, 7]];
  const gpuOut = noGrad(() => tidy(() => peft.forward({ inputIds: tensor(ids, { dtype: 'int64', device: 'cuda' }) }).logits.to('float32', 'cpu').view(-1).toArray() as number[]));
  const cpuModel = loadModel(LLAMA, { dtype: 'float32' });
  const cpuPeft = loadPeftAdapter(cpuModel, dir);
  const cpuOut = noGrad(() => tidy(() => cpuPeft.forward({ inputIds: tensor(ids, { dtype: 'int64' }) }).logits.view(-1).toArray() as number[]));
  assert.ok(maxDiff(gpuOut, cpuOut) < 1e-3, `max |gpu - cpu| = ${maxDiff(gpuOut, cpuOut)}`);
  trainer.dispose();
  peft.dispose();
  cpuPeft.dispose();
});

test('cuda: a mixed batch on the GPU equals each row run alone', { skip }, () => noGrad(() => {
  const model = loadModel(LLAMA, { dtype: 'float32', device: 'cuda' });
  const peft = PeftModel.create(model, { r: 4, targetModules: ['q_proj'], initLoraWeights: false }, { seed: 0, adapterName: 'a' });
  peft.addAdapter('b', { r: 2, targetModules: ['q_proj'], initLoraWeights: false }, { seed: 1 });
  const ids = [[1, 5, 9, 14], [2, 8, 4, 11]];
  const mixed = tidy(() => peft.forward({ inputIds: tensor(ids, { dtype: 'int64', device: 'cuda' }), adapterNames: ['a', 'b'] }).logits.to('float32', 'cpu').toArray() as number[][][]);
  for (const [r, name] of ['a', 'b'].entries()) {
    peft.setAdapter(name);
    const alone = tidy(() => peft.forward({ inputIds: tensor([ids[r]!], { dtype: 'int64', device: 'cuda' }) }).logits.to('float32', 'cpu').toArray() as number[][][]);
    assert.ok(maxDiff(mixed[r]!.flat(), alone[0]!.flat()) < 1e-4, name);
  }
  peft.dispose();
}));
