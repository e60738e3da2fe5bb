// Composition blocks: the text form and AdapterHub's nesting rules; LoRA under Stack / Average
// against hand-written combinations of single-adapter updates; top-level Parallel and BatchSplit
// against each adapter alone; refusals; the CLI's --setup and a training config's compose: section.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  tidy, noGrad, keep, randint, randn, crossEntropy, loadModel, PeftModel, savePeftAdapters, LoraLayer,
  Stack, Fuse, Split, BatchSplit, Parallel, Average, parseSetup, validateSetup, describeSetup, leaves, setupToDict,
  type Tensor,
} from '../src/index.js';
import { initModel } from '../src/models/init-model.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-compose-'));
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());

test('text form: parse, describe, AdapterHub nesting rules and depth', () => {
  const s = parseSetup('Stack(lang_sw, Fuse(nli, qa))');
  assert.deepEqual(s, Stack('lang_sw', Fuse('nli', 'qa')));
  assert.equal(describeSetup(s), 'Stack(lang_sw, Fuse(nli, qa))');
  assert.deepEqual(parseSetup('a,b'), Stack('a', 'b'));
  assert.deepEqual(parseSetup('Split(a, b, splits=[3, 4])'), Split('a', 'b', { splits: [3, 4] }));
  assert.deepEqual(parseSetup('BatchSplit(a, b, batch_sizes=2)'), BatchSplit('a', 'b', { batchSizes: [2, 2] }));
  // Average normalises its weights (AdapterHub's default).
  assert.deepEqual((parseSetup('Average(a, b, weights=[3, 1])') as unknown as { weights: number[] }).weights, [0.75, 0.25]);
  assert.deepEqual(Average('a', 'b').weights, [0.5, 0.5]);
  assert.deepEqual(leaves(Stack('a', Fuse('b', Stack('c', 'a')))), ['a', 'b', 'c']);
  assert.deepEqual(setupToDict(Average('a', 'b', { weights: [1, 3] })), { type: 'Average', children: [{ type: 'single', children: ['a'] }, { type: 'single', children: ['b'] }], kwargs: { weights: [0.25, 0.75] } });
  // AdapterHub's ALLOWED_NESTINGS and the depth limit.
  assert.throws(() => validateSetup(Fuse(Fuse('a', 'b'), 'c')), /Fuse cannot contain Fuse/);
  validateSetup(Stack('a', Parallel('b', 'c'), Fuse('d', 'e')));  // allowed by AdapterHub
  assert.throws(() => validateSetup(Stack(Split('a', Average('b', 'c'), { splits: [1, 1] }))), /too deep/);
  assert.throws(() => parseSetup('Stack(a, Mix(b))'), /unknown block "Mix"/);
  assert.throws(() => parseSetup('Split(a, b)'), /Split needs splits/);
});

/** Two LoRA adapters with non-zero B on every layer of a tiny LLaMA. */
function twoAdapters(): PeftModel {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const peft = PeftModel.create(m, { r: 2, loraAlpha: 4, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, { seed: 1, adapterName: 'a' });
  peft.addAdapter('b', { r: 4, loraAlpha: 4, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, { seed: 2 });
  noGrad(() => peft.parts().forEach(([, p]) => ['a', 'b'].forEach((n) => p.adapterParameters(n).forEach((t, i) => t.add_(randn(t.shape, { seed: 40 + i + (n === 'b' ? 100 : 0) }).mul(0.2))))));
  m.eval();
  return peft;
}

test('LoRA: Average weights each update; Stack sums them (PEFT\'s several active adapters); layer values by hand', () => tidy(() => {
  const peft = twoAdapters();
  const layer = peft.model.getSubmodule('model.layers.0.self_attn.q_proj') as LoraLayer;
  const x = randn([3, 32], { seed: 9 });
  const W = layer.base_layer.weight;
  // By hand: base + w_a * s_a B_a A_a x + w_b * s_b B_b A_b x.
  const delta = (n: string) => x.matmul(layer.A(n).transpose(0, 1)).matmul(layer.B(n).transpose(0, 1)).mul(layer.scaling(n));
  const base = x.matmul(W.transpose(0, 1));
  peft.setActive(Average('a', 'b', { weights: [0.7, 0.3] }));
  const got = noGrad(() => layer.forward(x));
  assert.ok(maxDiff(got, base.add(delta('a').mul(0.7)).add(delta('b').mul(0.3))) < 1e-5, 'Average(a, b, [0.7, 0.3])');
  peft.setActive(Stack('a', 'b'));
  assert.ok(maxDiff(noGrad(() => layer.forward(x)), base.add(delta('a')).add(delta('b'))) < 1e-5, 'Stack(a, b)');
  peft.setActive(Stack('a', Average('a', 'b', { weights: [0.5, 0.5] })));
  assert.ok(maxDiff(noGrad(() => layer.forward(x)), base.add(delta('a').mul(1.5)).add(delta('b').mul(0.5))) < 1e-5, 'Stack(a, Average(a, b))');
  // Model level: Average(a, a) is a alone; both adapters get gradients under Average.
  const ids = randint(0, 96, [2, 6], { seed: 3 });
  peft.setAdapter('a');
  const alone = noGrad(() => peft.forward({ inputIds: ids }).logits);
  peft.setActive(Average('a', 'a'));
  assert.ok(maxDiff(noGrad(() => peft.forward({ inputIds: ids }).logits), alone) < 1e-5);
  peft.setActive(Average('a', 'b'));
  peft.model.train();
  crossEntropy(peft.forward({ inputIds: ids }).logits.reshape(-1, 96), ids.reshape(-1)).backward();
  for (const n of ['a', 'b']) assert.ok(peft.parts().some(([, p]) => p.adapterParameters(n).some((t) => t.grad && tidy(() => t.grad!.abs().sum().item()) > 0)), `${n} gets gradients`);
  peft.model.eval();
  peft.dispose();
}));

test('Parallel: one output per adapter (the batch replicated); BatchSplit: rows per adapter; both equal each adapter alone', () => tidy(() => {
  const peft = twoAdapters();
  const ids = randint(0, 96, [2, 6], { seed: 4 });
  const alone = (n: string) => { peft.setAdapter(n); return keep(noGrad(() => peft.forward({ inputIds: ids }).logits)); };
  const a = alone('a');
  const b = alone('b');
  peft.setActive(Parallel('a', 'b'));
  const par = noGrad(() => peft.forward({ inputIds: ids }).logits);
  assert.deepEqual(par.shape, [4, 6, 96]);
  assert.ok(maxDiff(par.narrow(0, 0, 2), a) < 1e-5 && maxDiff(par.narrow(0, 2, 2), b) < 1e-5);
  peft.setActive(BatchSplit('a', 'b', { batchSizes: [1, 1] }));
  const split = noGrad(() => peft.forward({ inputIds: ids }).logits);
  assert.ok(maxDiff(split.narrow(0, 0, 1), a.narrow(0, 0, 1)) < 1e-5 && maxDiff(split.narrow(0, 1, 1), b.narrow(0, 1, 1)) < 1e-5);
  assert.throws(() => peft.forward({ inputIds: randint(0, 96, [3, 6], { seed: 1 }) }), /batch sizes add up to 2 but the batch has 3 rows/);
  peft.model.train();
  assert.throws(() => peft.forward({ inputIds: ids }), /mixed batch, which is for inference/);
  peft.model.eval();
  // Blocks a method does not apply are refused when activated, never ignored.
  assert.throws(() => peft.setActive(Fuse('a', 'b')), /does not support Fuse/);
  assert.throws(() => peft.setActive(Split('a', 'b', { splits: [3, 3] })), /does not support Split/);
  assert.throws(() => peft.setActive(Stack('a', 'nope')), /no adapter "nope"/);
  peft.dispose();
}));

test('CLI --setup composes adapter folders by name; a training config composes a new adapter with frozen ones', () => {
  const cli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/adapterkit.js'), ...args], { encoding: 'utf8', env: { ...process.env, CI: '1' } });
  const work = tmp();
  const model = join(work, 'model');
  initModel({ arch: 'llama', out: model, layers: 1, hidden: 32, heads: 2, vocab: 300, seed: 1 });
  for (const name of ['lang', 'task']) {
    const m = loadModel(model, { dtype: 'float32' });
    const p = PeftModel.create(m, { r: 2, targetModules: ['q_proj', 'v_proj'] }, { seed: name === 'lang' ? 1 : 2 });
    noGrad(() => p.parts().forEach(([, part]) => part.adapterParameters('default').forEach((t, i) => t.add_(randn(t.shape, { seed: i + (name === 'lang' ? 0 : 50) })))));
    savePeftAdapters(p, join(work, name));
    m.dispose();
  }
  const gen = (...extra: string[]) => cli('score', '--model', model, '--ids', '5,6,7,8', '--json', ...extra);
  const stacked = gen('--adapter', `${join(work, 'lang')},${join(work, 'task')}`, '--setup', 'Stack(lang, task)');
  assert.equal(stacked.status, 0, stacked.stderr);
  const avg = gen('--adapter', `${join(work, 'lang')},${join(work, 'task')}`, '--setup', 'Average(lang, task, weights=[0.5, 0.5])');
  assert.equal(avg.status, 0, avg.stderr);
  const lang = gen('--adapter', join(work, 'lang'));
  // Average(lang, lang) scores exactly as lang alone; the Stack and the Average differ from it.
  const same = gen('--adapter', `${join(work, 'lang')},${join(work, 'task')}`, '--setup', 'Average(lang, lang)');
  assert.deepEqual(JSON.parse(same.stdout).logprobs, JSON.parse(lang.stdout).logprobs);
  assert.notDeepEqual(JSON.parse(stacked.stdout).logprobs, JSON.parse(avg.stdout).logprobs);
  const bad = gen('--adapter', `${join(work, 'lang')},${join(work, 'task')}`, '--setup', 'Stack(lang, other)');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /no adapter "other".*adapters here: lang, task/);
  // MAD-X style training: a new task adapter under a frozen language adapter.
  const cls = ['text,label', ...Array.from({ length: 32 }, (_, i) => (i % 2 ? `"good ${i}",pos` : `"bad ${i}",neg`))].join('\n');
  writeFileSync(join(work, 'cls.csv'), cls + '\n');
  const out = join(work, 'run');
  writeFileSync(join(work, 'run.yaml'), `model: ${model}\ntask: sequence-classification\noutput: ${out}\ndata:\n  train: ${join(work, 'cls.csv')}\ncompose:\n  adapters:\n    lang: ${join(work, 'lang')}\n  setup: Stack(lang, default)\nadapter:\n  r: 2\n  targetModules: [q_proj, v_proj]\ntraining:\n  maxSteps: 2\n  batchSize: 8\n  progress: false\n`);
  const r = cli('train', '--config', join(work, 'run.yaml'));
  assert.equal(r.status, 0, r.stderr + r.stdout);
  assert.match(r.stdout, /composition Stack\(lang, default\): lang frozen, default trains/);
  assert.ok(existsSync(join(out, 'final', 'adapter_model.safetensors')) && existsSync(join(out, 'final', 'lang', 'adapter_model.safetensors')));
});
