// LoRA on a quantized base (QLoRA) end to end: it trains, merges into a dequantized base with the
// same outputs, merges into the quantized base and unmerges to the exact stored bytes, LoftQ starts
// closer to the full-precision weight than plain quantization, and the CLI's --quantize paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, randint, crossEntropy, type Tensor } from '../src/index.js';
import { loadModel } from '../src/models/load.js';
import { defaultModelDir } from '../src/models/default-model.js';
import { PeftModel } from '../src/adapters/index.js';
import { AdamW, paramGroups } from '../src/train/index.js';
import { dequantizeModel } from '../src/quant/model.js';
import { QuantLinear } from '../src/quant/linear.js';
import { QuantizedWeight } from '../src/quant/weight.js';
import type { Linear } from '../src/nn/layers.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const DIR = defaultModelDir();
const maxDiff = (a: Tensor, b: Tensor) => noGrad(() => a.sub(b).abs().max().item());

for (const format of ['nf4', 'int8', 'int4'] as const) {
  test(`LoRA on a ${format} base: the loss falls, and merging into the dequantized base keeps the outputs`, () => {
    const model = loadModel(DIR, { dtype: 'float32', quantize: format });
    assert.ok(model.getSubmodule('model.layers.0.self_attn.q_proj') instanceof QuantLinear);
    const peft = PeftModel.create(model, { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, { seed: 0 });
    const opt = new AdamW(paramGroups(model.namedParameters().filter(([, t]) => t.requiresGrad)), { lr: 1e-2 });
    const ids = randint(0, 4000, [4, 33], { seed: 3 });
    const x = ids.narrow(1, 0, 32).contiguous();
    const y = ids.narrow(1, 1, 32).contiguous();
    model.train();
    const losses: number[] = [];
    for (let i = 0; i < 12; i++) {
      losses.push(tidy(() => {
        const logits = peft.forward({ inputIds: x }).logits;  // (B, T, V)
        const loss = crossEntropy(logits.reshape(-1, logits.shape[2]!), y.reshape(-1));
        loss.backward();
        opt.step();
        opt.zeroGrad();
        return loss.item();
      }));
    }
    assert.ok(losses.at(-1)! < losses[0]! - 0.5, `loss ${losses[0]} -> ${losses.at(-1)}`);
    model.eval();
    const before = noGrad(() => peft.forward({ inputIds: x }).logits);
    // Merge into the quantized base (requantized, as PEFT), then unmerge: the stored bytes come back.
    const q0 = (model.getSubmodule('model.layers.0.self_attn.q_proj.base_layer') as QuantLinear).spec().data.clone();
    peft.merge();
    const mergedQ = noGrad(() => peft.forward({ inputIds: x }).logits);
    assert.ok(maxDiff(mergedQ, before) < 5, 'a requantized merge stays close');
    peft.unmerge();
    const q1 = (model.getSubmodule('model.layers.0.self_attn.q_proj.base_layer') as QuantLinear).spec().data;
    assert.equal(maxDiff(q0.to('float32'), q1.to('float32')), 0, 'unmerge restores the stored bytes');
    assert.ok(maxDiff(noGrad(() => peft.forward({ inputIds: x }).logits), before) < 1e-5);
    // The exact merge: dequantize the base, then fold the adapters in.
    assert.equal(dequantizeModel(model), 28);
    peft.merge();
    const merged = noGrad(() => peft.forward({ inputIds: x }).logits);
    assert.ok(maxDiff(merged, before) < 1e-3, `merged into the dequantized base: ${maxDiff(merged, before)}`);
    opt.dispose();
    peft.dispose();
  });
}

test('LoftQ starts closer to the full-precision weight than plain NF4, and more so with more iterations', () => {
  const full = loadModel(DIR, { dtype: 'float32' });
  const W = noGrad(() => (full.getSubmodule('model.layers.1.mlp.up_proj') as Linear).weight.clone());
  full.dispose();
  const plain = QuantizedWeight.quantize(W, { format: 'nf4', doubleQuant: false });
  const errPlain = noGrad(() => W.sub(plain.dequantize()).square().sum().sqrt().item());
  const errs: number[] = [];
  for (const iters of [1, 4]) {
    const m = loadModel(DIR, { dtype: 'float32' });
    const peft = PeftModel.create(m, { r: 8, loraAlpha: 32, initLoraWeights: 'loftq', loftqConfig: { loftq_bits: 4, loftq_iter: iters }, targetModules: ['up_proj'] } as never, { seed: 0 });
    const layer = m.getSubmodule('model.layers.1.mlp.up_proj') as unknown as { base_layer: QuantLinear; A(n: string): Tensor; B(n: string): Tensor };
    assert.ok(layer.base_layer instanceof QuantLinear);
    // W_eff = Q + scaling * B A with scaling = 32 / 8
    errs.push(noGrad(() => W.sub(layer.base_layer.weight.add(layer.B('default').matmul(layer.A('default')).mul(4))).square().sum().sqrt().item()));
    peft.dispose();
  }
  assert.ok(errs[0]! < errPlain * 0.97, `LoftQ(1) ${errs[0]} vs plain ${errPlain}`);
  assert.ok(errs[1]! < errs[0]!, `LoftQ(4) ${errs[1]} vs LoftQ(1) ${errs[0]}`);
  const q = loadModel(DIR, { quantize: 'nf4' });
  assert.throws(() => PeftModel.create(q, { initLoraWeights: 'loftq', targetModules: ['up_proj'] }), /LoftQ needs .*full-precision weight/);
  assert.throws(() => PeftModel.create(loadModel(DIR), { initLoraWeights: 'loftq', loftqConfig: { loftq_bits: 3 }, targetModules: ['up_proj'] } as never), /loftq_bits must be 4 or 8/);
});

test('CLI: train --quantize nf4 (plain and LoftQ), info --model --quantize, and the refusals', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ak-qlora-'));
  const data = join(dir, 'train.jsonl');
  writeFileSync(data, Array.from({ length: 64 }, (_, i) => JSON.stringify({ text: `the whale and the ship number ${i} sailed on` })).join('\n'));
  const cli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/adapterkit.js'), ...args], { encoding: 'utf8', env: { ...process.env, CI: '1' } });
  const common = ['train', '--model', DIR, '--data', data, '--max-steps', '4', '--batch-size', '4', '--max-length', '16'];
  const r = cli(...common, '--output', join(dir, 'a'), '--quantize', 'nf4');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout + r.stderr, /quantized 28 layers to nf4/);
  assert.match(r.stdout + r.stderr, /peak RSS \d+ MiB/);
  assert.ok(existsSync(join(dir, 'a', 'final', 'adapter_model.safetensors')));
  const l = cli(...common, '--output', join(dir, 'b'), '--quantize', 'nf4', '--adapter-options', '{"init_lora_weights": "loftq", "loftq_config": {"loftq_iter": 2}}');
  assert.equal(l.status, 0, l.stderr);
  assert.match(l.stdout + l.stderr, /LoftQ: \d+ more layers quantized to nf4/);
  const bad = cli(...common, '--output', join(dir, 'c'), '--quantize', 'nf3');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /unknown quantization "nf3"; expected one of nf4, fp4, int8, int4/);
  const full = cli(...common, '--output', join(dir, 'd'), '--quantize', 'int8', '--method', 'full');
  assert.notEqual(full.status, 0);
  assert.match(full.stderr, /quantize needs an adapter method/);
  const info = cli('info', '--model', DIR, '--quantize', 'int4');
  assert.equal(info.status, 0, info.stderr);
  assert.match(info.stdout, /int4\s+2,899,968\s+[\d.]+ MiB\s+4\.3\d/);
  assert.match(info.stdout, /bfloat16|float32/);
});
