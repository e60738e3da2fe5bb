// Issue 8 item 12: trainer details users check against the Python stack. AdamW's bias correction
// per parameter (torch's state["step"]), entity-level F1 with seqeval's rules (hand-worked cases),
// generation_config.json defaults (EOS lists, max_length, sampling) and multi-turn chat training
// (in data.test.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, tensor, noGrad, loadModel, PeftModel } from '../src/index.js';
import { AdamW, SGD, Trainer, entities, entityScores } from '../src/train/index.js';
import { readGenerationConfig, generationDefaults } from '../src/models/generation-config.js';

test('AdamW: a parameter without a gradient on a step keeps its own step count (torch semantics), saved and restored', () => tidy(() => {
  // lr 0.1, no decay, betas (0.9, 0.999), g = 0.5. Parameter "late" has no gradient on step 1.
  // torch: its first update (optimizer step 2) is its step 1: mhat = 0.5, vhat = 0.25 -> w = 1 - 0.1 = 0.9.
  // A global count (t = 2) would give mhat = 0.05/0.19, vhat = 0.00025/0.001999 -> w = 0.92561.
  const early = tensor([1], { requiresGrad: true });
  const late = tensor([1], { requiresGrad: true });
  const adam = new AdamW([{ name: 'early', param: early, decay: false }, { name: 'late', param: late, decay: false }], { lr: 0.1, weightDecay: 0 });
  early.mul(0.5).sum().backward();
  adam.step();
  adam.zeroGrad();
  early.mul(0.5).sum().add(late.mul(0.5).sum()).backward();
  adam.step();
  assert.ok(Math.abs(late.item() - 0.9) < 1e-6, `late: ${late.item()}`);
  assert.ok(Math.abs(early.item() - 0.8) < 1e-6, `early: ${early.item()}`);
  // The per-parameter counts travel with the optimizer state (checkpoints) and come back.
  const state = adam.stateTensors();
  assert.equal(state.get('late::step')!.item(), 1);
  assert.equal(state.get('early::step')!.item(), 2);
  const w2 = tensor([0.9], { requiresGrad: true });
  const again = new AdamW([{ name: 'early', param: tensor([0.8], { requiresGrad: true }), decay: false }, { name: 'late', param: w2, decay: false }], { lr: 0.1, weightDecay: 0 });
  again.loadStateTensors(new Map([...state].map(([k, t]) => [k, t.clone()])), 2);
  w2.mul(0.5).sum().backward();
  again.step();
  adam.zeroGrad();
  late.mul(0.5).sum().backward();
  adam.step();
  assert.ok(Math.abs(w2.item() - late.item()) < 1e-7, `a restored optimizer continues exactly (${w2.item()} vs ${late.item()})`);
  // SGD momentum starts at a parameter's first gradient (torch: buffer is None until then).
  const u = tensor([1], { requiresGrad: true });
  const v = tensor([1], { requiresGrad: true });
  const sgd = new SGD([{ name: 'u', param: u, decay: false }, { name: 'v', param: v, decay: false }], { lr: 0.1, momentum: 0.9 });
  u.mul(2).sum().backward();
  sgd.step();
  sgd.zeroGrad();
  v.mul(2).sum().backward();
  sgd.step();
  assert.ok(Math.abs(v.item() - 0.8) < 1e-6, `v: buffer = g on its first step, w = 1 - 0.1 * 2 (got ${v.item()})`);
}));

test('entity-level F1 with seqeval semantics (hand-worked)', () => {
  // seqeval get_entities: I after O starts an entity; a type change splits; sentences never join.
  assert.deepEqual(entities([['B-PER', 'I-PER', 'O', 'I-LOC', 'I-LOC', 'B-LOC', 'I-ORG']]).map((e) => [e.type, e.start, e.end]),
    [['PER', 0, 1], ['LOC', 3, 4], ['LOC', 5, 5], ['ORG', 6, 6]]);
  assert.deepEqual(entities([['I-PER'], ['I-PER']]).map((e) => [e.type, e.start, e.end]), [['PER', 0, 0], ['PER', 2, 2]]);
  assert.deepEqual(entities([['S-X', 'B-Y', 'E-Y', 'O']]).map((e) => [e.type, e.start, e.end]), [['X', 0, 0], ['Y', 1, 2]]);
  // gold: PER(0-1), LOC(3); pred: PER(0-0) (wrong boundary), LOC(3), MISC(5).
  // tp 1, precision 1/3, recall 1/2, F1 = 2 (1/6) / (5/6) = 0.4. Token accuracy would be 5/6.
  const gold = [['B-PER', 'I-PER', 'O', 'B-LOC', 'O', 'O']];
  const pred = [['B-PER', 'O', 'O', 'B-LOC', 'O', 'B-MISC']];
  const s = entityScores(pred, gold);
  assert.ok(Math.abs(s.precision - 1 / 3) < 1e-12 && Math.abs(s.recall - 0.5) < 1e-12 && Math.abs(s.f1 - 0.4) < 1e-12, JSON.stringify(s));
  assert.deepEqual(entityScores([['O']], [['O']]), { precision: 0, recall: 0, f1: 0 });
  assert.throws(() => entityScores([['O']], [['O', 'O']]), /differ in shape/);
});

test('generation_config.json: every EOS id (Llama 3 lists several), max_length, sampling defaults; explicit options win', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ak-gen-'));
  assert.equal(readGenerationConfig(dir), null);
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({
    bos_token_id: 128000, eos_token_id: [128001, 128008, 128009], do_sample: true, temperature: 0.6, top_p: 0.9, max_length: 40, transformers_version: '4.45.0',
  }));
  const g = readGenerationConfig(dir)!;
  assert.deepEqual(g.eosTokenIds, [128001, 128008, 128009]);
  const d = generationDefaults(g, { maxNewTokens: undefined, temperature: undefined }, 10);
  assert.deepEqual(d.stopIds, [128001, 128008, 128009]);
  assert.equal(d.maxNewTokens, 30, 'max_length counts the prompt (HF): 40 - 10');
  assert.equal(d.doSample, true);
  assert.equal(d.temperature, 0.6);
  assert.equal(d.topP, 0.9);
  const e = generationDefaults(g, { maxNewTokens: 5, temperature: 1.2, doSample: false }, 10);
  assert.equal(e.maxNewTokens, 5);
  assert.equal(e.temperature, 1.2);
  assert.equal(e.doSample, false);
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 2, max_new_tokens: 7, top_k: 'x' }));
  assert.throws(() => readGenerationConfig(dir), /generation_config\.json: top_k must be/);
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 2, max_new_tokens: 7 }));
  const h = generationDefaults(readGenerationConfig(dir)!, {}, 3);
  assert.deepEqual(h.stopIds, [2]);
  assert.equal(h.maxNewTokens, 7);
});

test('token-classification evaluation reports entity-level F1 (seqeval) next to token accuracy, from config id2label', () => {
  const m = loadModel(fileURLToPath(new URL('../../test/fixtures/hf-ref/bert-tokcls', import.meta.url)), { dtype: 'float32' });
  m.config.id2label = { 0: 'O', 1: 'B-PER', 2: 'I-PER', 3: 'B-LOC', 4: 'I-LOC' };
  const rows = [[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]];
  const gold = [[-100, 1, 2, 0, 3, 4, -100], [-100, 3, 0, 1, 1, 0, -100]];
  const ev = rows.map((inputIds, i) => ({ inputIds, labels: gold[i]! }));
  const peft = PeftModel.create(m, { targetModules: ['query'] });
  const tr = new Trainer({ model: m, peft, train: ev, eval: ev, collate: { padId: 0 }, config: { task: 'token-classification', evalBatchSize: 1 }, log: () => {} });
  const r = tr.evaluate();
  // Independently: argmax per token, names from id2label, seqeval rules over the labelled tokens.
  const names = ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC'];
  const predSeqs: string[][] = [];
  const goldSeqs: string[][] = [];
  rows.forEach((ids, i) => {
    const p = noGrad(() => m.forward({ inputIds: tensor([ids], { dtype: 'int64' }) }).logits.argmax(-1).toArray() as number[][])[0]!;
    const keepAt = gold[i]!.map((g, j) => [g, j] as const).filter(([g]) => g !== -100);
    predSeqs.push(keepAt.map(([, j]) => names[p[j]!]!));
    goldSeqs.push(keepAt.map(([g]) => names[g]!));
  });
  assert.ok(r.entityF1 !== undefined && r.entityF1 > 0, "some entities of this fixed model are right");
  assert.ok(Math.abs(r.entityF1 - entityScores(predSeqs, goldSeqs).f1) < 1e-12, `${r.entityF1}`);
  assert.ok(r.accuracy !== undefined);
  m.dispose();
});
