// LoRA on an embedding (PEFT's lora.Embedding): the forward against a hand-computed
// E[ids] + A^T[ids] B^T * alpha/r, identity at init, merge/unmerge, gradients to A and B only,
// PEFT's keys on disk and an exact round trip, mixed batches, and the refusals.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, tensor, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, LoraEmbedding, addWeightedAdapter } from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const LLAMA = join(root, 'test/fixtures/hf-ref/llama');  // vocab 96, hidden 32
const IDS = [[3, 17, 95, 0, 42], [8, 8, 1, 60, 2]];
const maxDiff = (a: number[], b: number[]) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
const embedOut = (p: PeftModel, ids = IDS) => noGrad(() => tidy(() => (p.model.getSubmodule('model.embed_tokens') as LoraEmbedding).forward(tensor(ids, { dtype: 'int64' })).toArray() as number[][][]));

function make(init: boolean | 'gaussian' = false, r = 3, alpha = 6) {
  const model = loadModel(LLAMA, { dtype: 'float32' });
  const peft = PeftModel.create(model, { r, loraAlpha: alpha, targetModules: ['embed_tokens', 'q_proj'], initLoraWeights: init }, { seed: 4 });
  return { model, peft, layer: model.getSubmodule('model.embed_tokens') as LoraEmbedding };
}

test('embedding LoRA: y = E[ids] + A^T[ids] B^T * alpha/r, checked entry by entry in plain JS', () => {
  const { peft, layer } = make(false, 3, 6);
  const E = layer.base_layer.weight.toArray() as number[][];  // (V, C)
  const A = layer.A('default').toArray() as number[][];  // (R, V)
  const B = layer.B('default').toArray() as number[][];  // (C, R)
  assert.deepEqual([A.length, A[0]!.length, B.length, B[0]!.length], [3, 96, 32, 3]);
  const y = embedOut(peft);
  let worst = 0;
  IDS.forEach((row, n) => row.forEach((id, t) => {
    for (let c = 0; c < 32; c++) {
      let d = 0;
      for (let k = 0; k < 3; k++) d += A[k]![id]! * B[c]![k]!;
      worst = Math.max(worst, Math.abs(y[n]![t]![c]! - (E[id]![c]! + d * (6 / 3))));
    }
  }));
  assert.ok(worst < 1e-4, `max error ${worst}`);
  peft.dispose();
});

test('embedding LoRA: init true starts at the base exactly (A = 0, B ~ N(0, 1)), as PEFT', () => {
  const { peft, layer } = make(true);
  assert.ok((layer.A('default').abs().sum().item() as number) === 0);
  assert.ok((layer.B('default').abs().sum().item() as number) > 0);
  const base = noGrad(() => tidy(() => layer.base_layer.forward(tensor(IDS, { dtype: 'int64' })).toArray() as number[][][]));
  assert.deepEqual(embedOut(peft), base);
  peft.dispose();
});

test('embedding LoRA: merge equals the unmerged forward; unmerge restores the table bit for bit', () => {
  const { peft, layer } = make(false);
  const before = layer.base_layer.weight.toArray() as number[][];
  const unmerged = embedOut(peft).flat(2);
  peft.merge();
  assert.ok(maxDiff(embedOut(peft).flat(2), unmerged) < 1e-5);
  peft.unmerge();
  assert.deepEqual(layer.base_layer.weight.toArray(), before);
  peft.dispose();
});

test('embedding LoRA: gradients reach A and B only; A learns even from a zero start', () => {
  const { model, peft, layer } = make(true);
  tidy(() => model.forward({ inputIds: tensor(IDS, { dtype: 'int64' }) }).logits.pow(2).mean().backward());
  assert.ok((layer.A('default').grad!.abs().sum().item() as number) > 0, 'A gets a gradient through B');
  assert.ok(layer.B('default').grad !== null);
  assert.equal(layer.base_layer.weight.grad, null);
  peft.dispose();
});

test('embedding LoRA: saved under PEFT keys (…embed_tokens.lora_embedding_A/B) and reloaded exactly', () => {
  const { peft } = make(false);
  const dir = mkdtempSync(join(tmpdir(), 'ak-emb-'));
  savePeftAdapters(peft, dir);
  const keys = [...readSafetensors(join(dir, 'adapter_model.safetensors')).keys()].filter((k) => k.includes('embed_tokens'));
  assert.deepEqual(keys.sort(), ['base_model.model.model.embed_tokens.lora_embedding_A', 'base_model.model.model.embed_tokens.lora_embedding_B']);
  const want = embedOut(peft);
  const back = loadPeftAdapter(loadModel(LLAMA, { dtype: 'float32' }), dir);
  assert.deepEqual(embedOut(back), want);
  // A file whose tensors do not fit the config (rank 3 on disk, r = 2 in adapter_config.json) is refused.
  const cfgPath = join(dir, 'adapter_config.json');
  writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, 'utf8')), r: 2 }));
  assert.throws(() => loadPeftAdapter(loadModel(LLAMA, { dtype: 'float32' }), dir), /shape \[3, 96\] but this model needs \[2, 96\]/);
  peft.dispose();
  back.dispose();
});

test('embedding LoRA: a mixed batch equals each row run alone', () => {
  const model = loadModel(LLAMA, { dtype: 'float32' });
  const peft = PeftModel.create(model, { r: 3, targetModules: ['embed_tokens'], initLoraWeights: false }, { seed: 1, adapterName: 'a' });
  peft.addAdapter('b', { r: 2, targetModules: ['embed_tokens'], initLoraWeights: false }, { seed: 2 });
  const mixed = noGrad(() => tidy(() => peft.forward({ inputIds: tensor(IDS, { dtype: 'int64' }), adapterNames: ['a', 'b'] }).logits.toArray() as number[][][]));
  for (const [r, name] of ['a', 'b'].entries()) {
    peft.setAdapter(name);
    const alone = noGrad(() => tidy(() => peft.forward({ inputIds: tensor([IDS[r]!], { dtype: 'int64' }) }).logits.toArray() as number[][][]));
    assert.ok(maxDiff(mixed[r]!.flat(), alone[0]!.flat()) < 1e-5, name);
  }
  peft.dispose();
});

test('embedding LoRA: DoRA and lora_bias on an embedding are refused by name', () => {
  const model = loadModel(LLAMA, { dtype: 'float32' });
  assert.throws(() => PeftModel.create(model, { r: 2, targetModules: ['embed_tokens'], useDora: true }), /DoRA on an embedding/);
  assert.throws(() => PeftModel.create(model, { r: 2, targetModules: ['embed_tokens'], loraBias: true }), /lora_bias on an embedding/);
  model.dispose();
});

test('embedding LoRA: a weighted combination refuses it rather than silently dropping it', () => {
  const model = loadModel(LLAMA, { dtype: 'float32' });
  const peft = PeftModel.create(model, { r: 2, targetModules: ['embed_tokens', 'q_proj'] }, { seed: 1, adapterName: 'a' });
  peft.addAdapter('b', { r: 2, targetModules: ['embed_tokens', 'q_proj'] }, { seed: 2 });
  assert.throws(() => addWeightedAdapter(peft, ['a', 'b'], [0.5, 0.5], 'ab', { combination: 'cat' }), /embedding/);
  peft.dispose();
});
