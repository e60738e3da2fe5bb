// Poly / MHR (PEFT's POLY): PEFT's shapes, file keys and JSON fields; the router's mixing weights by
// hand (sigmoid, normalisation with EPS; the relaxed Bernoulli in training); n_skills = 1 equals a
// plain LoRA with the same A/B (also split into MHR heads); task ids change the output row by row;
// forwards without task ids are refused; gradients; save -> load; KV-cache generation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, keep, tensor, randn, crossEntropy, loadModel, generate, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, type Tensor } from '../src/index.js';
import { PolyLayer, polyMixingWeights, withTaskIds, POLY_EPS } from '../src/adapters/poly/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-poly-'));
const polyLayers = (p: PeftModel) => p.tunerLayers().filter((e): e is [string, PolyLayer] => e[1] instanceof PolyLayer);

/** Random B and router logits, so that the adapter and the task ids matter. */
function perturb(peft: PeftModel, seed: number): void {
  noGrad(() => polyLayers(peft).forEach(([, l], i) => {
    l.B('default').add_(randn(l.B('default').shape, { seed: seed + i }).mul(0.3));
    l.moduleLogits('default').add_(randn(l.moduleLogits('default').shape, { seed: seed + 100 + i }).mul(2));
  }));
}

test('PEFT shapes, file keys and adapter_config.json fields', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const peft = PeftModel.create(m, { peftType: 'POLY', r: 2, nTasks: 3, nSkills: 4, nSplits: 2, targetModules: ['q_proj', 'v_proj'] });
  const layers = polyLayers(peft);
  assert.equal(layers.length, 4);
  const [path, q] = layers.find(([p]) => p.endsWith('q_proj'))!;
  const [I, O] = [q.inFeatures, q.outFeatures];
  assert.deepEqual(q.A('default').shape, [2, 4, I / 2, 2]);
  assert.deepEqual(q.B('default').shape, [2, 4, 2, O / 2]);
  assert.deepEqual(q.moduleLogits('default').shape, [3, 8]);
  // PEFT's init: B zero, A kaiming-uniform bound 1/√(I/S), logits U(±1e-3).
  assert.equal(tidy(() => q.B('default').abs().max().item()), 0);
  const a = tidy(() => q.A('default').abs().max().item());
  assert.ok(a > 0 && a <= 1 / Math.sqrt(I / 2));
  const l = tidy(() => q.moduleLogits('default').abs().max().item());
  assert.ok(l > 0 && l <= 1e-3);
  // The layer starts as the base (B = 0).
  const x = ids();
  assert.ok(maxDiff(withTaskIds(peft, [0, 2], () => logits(m, x)), peft.withAdaptersDisabled(() => logits(m, x))) < 1e-6);
  const dir = tmp();
  savePeftAdapters(peft, dir);
  const keys = [...readSafetensors(join(dir, 'adapter_model.safetensors')).keys()].sort();
  assert.equal(keys.length, 12);
  assert.ok(keys.includes(`base_model.model.${path}.poly_lora_A`));
  assert.ok(keys.includes(`base_model.model.${path}.poly_lora_B`));
  assert.ok(keys.includes(`base_model.model.${path}.poly_router.module_logits`));
  const json = JSON.parse(readFileSync(join(dir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(json.peft_type, 'POLY');
  for (const [k, v] of Object.entries({ r: 2, n_tasks: 3, n_skills: 4, n_splits: 2, poly_type: 'poly', init_weights: true })) assert.deepEqual(json[k], v, k);
  assert.deepEqual(json.target_modules, ['q_proj', 'v_proj']);
  assert.ok(!('layers_to_transform' in json) && !('layers_pattern' in json), 'PolyConfig has no layers_to_transform');
  assert.throws(() => PeftModel.create(loadModel(join(HF, 'llama'), { dtype: 'float32' }), { peftType: 'POLY', polyType: 'mhr' as never }), /poly_type/);
}));

test('router mixing weights by hand (eval: sigmoid then normalise per split; training: relaxed Bernoulli)', () => tidy(() => {
  // 2 tasks, 2 splits x 3 skills.
  const rows = [[0, Math.log(3), -Math.log(3), 1, 2, -2], [-1, 0, 0.5, 0, 0, 0]];
  const logitsT = tensor(rows);
  const sig = (v: number) => 1 / (1 + Math.exp(-v));
  const w = polyMixingWeights(logitsT, tensor([1, 0, 1], { dtype: 'int64' }), 2, 3, false, 0);
  assert.deepEqual(w.shape, [3, 2, 3]);
  const got = [...w.data()].map(Number);
  const want = [1, 0, 1].flatMap((t) => [0, 1].flatMap((s) => {
    const v = rows[t]!.slice(3 * s, 3 * s + 3).map(sig);
    const sum = v.reduce((a, b) => a + b, 0) + POLY_EPS;
    return v.map((e) => e / sum);
  }));
  got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) < 1e-6, `${got} vs ${want}`));
  // Row 0 of task 0 by hand: sigmoid(0, ln 3, -ln 3) = (1/2, 3/4, 1/4), sum 3/2: (1/3, 1/2, 1/6).
  [1 / 3, 1 / 2, 1 / 6].forEach((v, i) => assert.ok(Math.abs(got[6 + i]! - v) < 1e-6));
  // Training: a relaxed Bernoulli sample per entry, normalised per split; seeded.
  const t1 = polyMixingWeights(logitsT, tensor([0, 1], { dtype: 'int64' }), 2, 3, true, 7);
  const t2 = polyMixingWeights(logitsT, tensor([0, 1], { dtype: 'int64' }), 2, 3, true, 7);
  const t3 = polyMixingWeights(logitsT, tensor([0, 1], { dtype: 'int64' }), 2, 3, true, 8);
  assert.equal(maxDiff(t1, t2), 0);
  assert.ok(maxDiff(t1, t3) > 1e-4);
  assert.ok(maxDiff(t1.sum(-1), tensor([[1, 1], [1, 1]])) < 1e-5);
  assert.ok(t1.min().item() > 0);
  assert.throws(() => polyMixingWeights(logitsT, tensor([2], { dtype: 'int64' }), 2, 3, false, 0), /only 2 tasks available.*task id 2/);
}));

test('n_skills = 1 equals a plain LoRA with the same A and B (one split, and MHR splits); Conv1D too', () => tidy(() => {
  for (const [arch, targets] of [['llama', ['q_proj', 'v_proj']], ['gpt2', ['c_attn']]] as const) {
    for (const nSplits of [1, 2]) {
      const x = ids();
      const m1 = loadModel(join(HF, arch), { dtype: 'float32' });
      const poly = PeftModel.create(m1, { peftType: 'POLY', r: 2, nTasks: 2, nSkills: 1, nSplits, targetModules: [...targets], initWeights: false }, { seed: 4 });
      const m2 = loadModel(join(HF, arch), { dtype: 'float32' });
      // Poly divides by r; a LoRA with alpha 1 scales by alpha / r = 1 / r.
      const lora = PeftModel.create(m2, { peftType: 'LORA', r: 2, loraAlpha: 1, targetModules: [...targets] });
      for (const [path, l] of polyLayers(poly)) {
        const S = nSplits;
        // (S, 1, I/S, R) -> (I, R) -> A (R, I); (S, 1, R, O/S) -> (R, S, O/S) -> (R, O) -> B (O, R).
        const A = l.A('default').reshape(l.inFeatures, 2).transpose(0, 1).contiguous();
        const B = l.B('default').reshape(S, 2, -1).permute(1, 0, 2).reshape(2, l.outFeatures).transpose(0, 1).contiguous();
        (lora.model.getSubmodule(path) as unknown as { loadAdapterState(n: string, s: Map<string, Tensor>, p: string): void })
          .loadAdapterState('default', new Map([['lora_A.weight', A], ['lora_B.weight', B]]), path);
      }
      m1.eval();
      m2.eval();
      const want = logits(m2, x);
      const got = withTaskIds(poly, [1, 0], () => logits(m1, x));
      assert.ok(maxDiff(got, want) < 1e-5, `${arch} n_splits ${nSplits}: ${maxDiff(got, want)}`);
      assert.ok(maxDiff(want, poly.withAdaptersDisabled(() => logits(m1, x))) > 1e-4, 'the adapter changes the output');
      m1.dispose();
      m2.dispose();
    }
  }
}));

test('task ids: per row, required (a clear error naming withTaskIds), checked against the batch and n_tasks', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const peft = PeftModel.create(m, { peftType: 'POLY', r: 2, nTasks: 3, nSkills: 3, targetModules: ['q_proj', 'v_proj'] }, { seed: 1 });
  perturb(peft, 20);
  m.eval();
  const x = ids();
  const t00 = withTaskIds(peft, [0, 0], () => peft.forward({ inputIds: x }).logits);
  const t22 = withTaskIds(peft, tensor([2, 2], { dtype: 'int64' }), () => peft.forward({ inputIds: x }).logits);
  const t02 = withTaskIds(peft, [0, 2], () => peft.forward({ inputIds: x }).logits);
  assert.ok(maxDiff(t00, t22) > 1e-4, 'different tasks give different outputs');
  assert.ok(maxDiff(t02.narrow(0, 0, 1), t00.narrow(0, 0, 1)) < 1e-6, 'row 0 uses task 0');
  assert.ok(maxDiff(t02.narrow(0, 1, 1), t22.narrow(0, 1, 1)) < 1e-6, 'row 1 uses task 2');
  assert.throws(() => peft.forward({ inputIds: x }), /needs a task id per row.*withTaskIds/);
  assert.throws(() => withTaskIds(peft, [0], () => peft.forward({ inputIds: x })), /1 task ids for a batch of 2 rows/);
  assert.throws(() => withTaskIds(peft, [0, 3], () => peft.forward({ inputIds: x })), /only 3 tasks available/);
  assert.throws(() => peft.forward({ inputIds: x, adapterNames: ['default', '__base__'] }), /mixed batch/);
  assert.throws(() => peft.merge(), /cannot be merged/);
  // After withTaskIds the ids are gone again.
  assert.throws(() => peft.forward({ inputIds: x }), /withTaskIds/);
}));

test('gradients reach the skills and the router only; save -> load identical; KV-cache generation', async () => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const x = keep(ids());
  try {
    const peft = PeftModel.create(m, { peftType: 'POLY', r: 2, nTasks: 2, nSkills: 2, nSplits: 2, targetModules: ['q_proj', 'v_proj'] }, { seed: 2 });
    perturb(peft, 30);
    m.train();
    tidy(() => withTaskIds(peft, [0, 1], () => {
      const lg = peft.forward({ inputIds: x }).logits;
      crossEntropy(lg.narrow(1, 0, 6).reshape(-1, lg.shape[2]!), x.narrow(1, 1, 6).reshape(-1)).backward();
    }));
    m.eval();
    const own = new Set(polyLayers(peft).flatMap(([, l]) => l.adapterParameters('default')));
    for (const [n, t] of m.namedParameters()) if (t.grad) assert.ok(own.has(t), `${n} got a gradient`);
    for (const [, l] of polyLayers(peft)) for (const t of l.adapterParameters('default')) assert.ok(t.grad && tidy(() => t.grad!.abs().sum().item()) > 0, 'A, B and the router logits train');
    assert.deepEqual(peft.runtimeState().POLY, { step: 1 });
    const tuned = keep(withTaskIds(peft, [1, 0], () => logits(m, x)));
    const dir = tmp();
    savePeftAdapters(peft, dir);
    const m2 = loadModel(join(HF, 'llama'), { dtype: 'float32' });
    const p2 = loadPeftAdapter(m2, dir, { warn: (w) => assert.fail(`unexpected warning: ${w}`) });
    m2.eval();
    assert.ok(maxDiff(withTaskIds(p2, [1, 0], () => logits(m2, x)), tuned) < 1e-6, 'loaded adapter gives the same logits');
    assert.equal(p2.configs.get('default')!.peftType, 'POLY');
    // Task ids stay fixed for every generated token: cached generation equals recomputation.
    const prompt = x.narrow(1, 0, 4);
    const [cached, full] = await withTaskIds(peft, [1, 0], async () => [await generate(m, prompt, null, { maxNewTokens: 5 }), await generate(m, prompt, null, { maxNewTokens: 5, noCache: true })]);
    assert.deepEqual(cached, full);
    m2.dispose();
  } finally {
    x.dispose();
    m.dispose();
  }
});
