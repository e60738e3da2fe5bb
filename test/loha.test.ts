// LoHa (PEFT's tuners/loha): ΔW = (w1_a @ w1_b) ⊙ (w2_a @ w2_b) · alpha / r against plain loops, PEFT's
// init, merge, and PEFT's file keys and JSON fields.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, keep, randint, randn, tensor, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, Linear, type Tensor, type PretrainedModel, type AdapterContext } from '../src/index.js';
import { LohaLayer, resolveLoha } from '../src/adapters/loha/index.js';

const HF = fileURLToPath(new URL('../../test/fixtures/hf-ref/', import.meta.url));
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const logits = (m: PretrainedModel, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const mat = (t: Tensor) => t.toArray() as number[][];

function safetensorShapes(file: string): Record<string, number[]> {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const h = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { shape: number[] }>;
  delete h.__metadata__;
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, v.shape]));
}

test('LoHa ΔW equals (w1a @ w1b) ⊙ (w2a @ w2b) · alpha / r, by hand; forward adds x ΔWᵀ; merge equals unmerged', () => {
  const ctx: AdapterContext = { active: ['a'], disabled: false, rows: null, version: 0, slots: {}, composition: null };
  const layer = new LohaLayer(new Linear(5, 4), ctx);
  noGrad(() => { layer.base_layer.weight.copy_(randn([4, 5], { seed: 1 })); layer.base_layer.bias!.copy_(randn([4], { seed: 2 })); });
  layer.addAdapter('a', resolveLoha({ r: 2, alpha: 3, initWeights: false }), 'x', { seed: 4 });
  const st = layer.adapterState('a');
  assert.deepEqual([...st.keys()].sort(), ['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b']);
  assert.deepEqual(st.get('hada_w1_a')!.shape, [4, 2]);
  assert.deepEqual(st.get('hada_w2_b')!.shape, [2, 5]);
  const [w1a, w1b, w2a, w2b] = ['hada_w1_a', 'hada_w1_b', 'hada_w2_a', 'hada_w2_b'].map((k) => mat(st.get(k)!));
  const want: number[][] = [];
  for (let i = 0; i < 4; i++) {
    want.push([]);
    for (let j = 0; j < 5; j++) {
      let p = 0, q = 0;
      for (let k = 0; k < 2; k++) { p += w1a![i]![k]! * w1b![k]![j]!; q += w2a![i]![k]! * w2b![k]![j]!; }
      want[i]!.push(p * q * (3 / 2));
    }
  }
  const got = mat(layer.deltaWeight('a'));
  for (let i = 0; i < 4; i++) for (let j = 0; j < 5; j++) assert.ok(Math.abs(got[i]![j]! - want[i]![j]!) < 1e-5, `ΔW[${i}][${j}]`);
  layer.eval();
  const x = randn([3, 5], { seed: 9 });
  assert.ok(maxDiff(noGrad(() => layer.forward(x).sub(layer.base_layer.forward(x))), noGrad(() => x.matmul(tensor(want).transpose(0, 1)))) < 1e-5);
  const unmerged = keep(noGrad(() => layer.forward(x)));
  const w0 = keep(layer.base_layer.weight.clone());
  layer.merge(['a']);
  assert.ok(maxDiff(noGrad(() => layer.forward(x)), unmerged) < 1e-5);
  layer.unmerge();
  assert.equal(maxDiff(layer.base_layer.weight, w0), 0);
});

test('LoHa init as PEFT: w2_b zero (the layer starts as the base), the other factors kaiming-uniform', () => {
  const ctx: AdapterContext = { active: ['a'], disabled: false, rows: null, version: 0, slots: {}, composition: null };
  const layer = new LohaLayer(new Linear(16, 8), ctx);
  layer.addAdapter('a', resolveLoha({ r: 4 }), 'x', { seed: 4 });
  const st = layer.adapterState('a');
  assert.equal(tidy(() => st.get('hada_w2_b')!.abs().sum().item()), 0);
  // kaiming_uniform_(a=√5): U(±1/√fan_in), fan_in = dim 1 (r for w1_a / w2_a, in for w1_b)
  const bound = (k: string) => tidy(() => st.get(k)!.abs().max().item());
  assert.ok(bound('hada_w1_a') <= 1 / Math.sqrt(4) && bound('hada_w1_a') > 0.25);
  assert.ok(bound('hada_w1_b') <= 1 / Math.sqrt(16) && bound('hada_w1_b') > 0.1);
  assert.equal(tidy(() => layer.deltaWeight('a').abs().sum().item()), 0);
  assert.throws(() => resolveLoha({ initWeights: 'lycoris' as never }), /init_weights/);
});

test('LoHa on gpt2: PEFT key names and JSON fields, alpha_pattern, save -> load identical, merge equals unmerged', () => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const x = keep(randint(0, 96, [2, 6], { seed: 5 }));
  const peft = PeftModel.create(m, { peftType: 'LOHA', r: 2, alpha: 4, initWeights: false, rankPattern: { 'h.1.attn.c_attn': 3 }, alphaPattern: { 'h.1.attn.c_attn': 1 } }, { seed: 3 });
  m.eval();
  const tuned = keep(logits(m, x));
  const dir = mkdtempSync(join(tmpdir(), 'ak-loha-'));
  savePeftAdapters(peft, dir);
  const json = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(json.peft_type, 'LOHA');
  for (const f of ['r', 'alpha', 'rank_dropout', 'module_dropout', 'use_effective_conv2d', 'init_weights', 'rank_pattern', 'alpha_pattern', 'target_modules']) assert.ok(f in json, f);
  const shapes = safetensorShapes(join(dir, readdirSync(dir).find((f) => f.endsWith('.safetensors'))!));
  // c_attn: in 32, out 96 (GPT-2's Conv1D, wrapped in the [out, in] orientation)
  assert.deepEqual(shapes['base_model.model.transformer.h.0.attn.c_attn.hada_w1_a'], [96, 2]);
  assert.deepEqual(shapes['base_model.model.transformer.h.0.attn.c_attn.hada_w2_b'], [2, 32]);
  assert.deepEqual(shapes['base_model.model.transformer.h.1.attn.c_attn.hada_w1_a'], [96, 3]);
  assert.ok(Object.keys(shapes).every((k) => /\.hada_w[12]_[ab]$/.test(k)));
  const p2 = loadPeftAdapter(loadModel(join(HF, 'gpt2'), { dtype: 'float32' }), dir, { warn: (w) => assert.fail(w) });
  p2.model.eval();
  assert.ok(maxDiff(logits(p2.model, x), tuned) < 1e-5);
  peft.merge();
  assert.ok(maxDiff(logits(m, x), tuned) < 1e-4);
  peft.unmerge();
  assert.ok(maxDiff(logits(m, x), tuned) < 1e-6);
});
