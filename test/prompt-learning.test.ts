// Prompt learning (prompt tuning, P-tuning, prefix tuning) against references that do not use the
// code under test: a TEXT-initialised prompt is the base model on [prompt ids, x]; a prefix equal to
// the base model's own cached keys/values of u is the base model continuing from that cache; cached
// generation equals recomputation; files carry PEFT's JSON fields and `prompt_embeddings` shapes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  tidy, noGrad, tensor, cat, ones, loadModel, generate, KVCache, PeftModel, savePeftAdapters, loadPeftAdapter,
  readSafetensors, type Tensor, type PretrainedModel,
} from '../src/index.js';
import { PromptEncoderPart } from '../src/adapters/prompt/index.js';
import { checkpointedBackward } from '../src/train/checkpointing.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-prompt-'));
const load = (name: string) => loadModel(join(HF, name), { dtype: 'float32' }).eval() as PretrainedModel;
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const json = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>;
const X = () => tensor([[61, 66, 22, 13, 70], [5, 9, 17, 33, 2]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor; attentionMask?: Tensor | null; tokenTypeIds?: Tensor | null }): { logits: Tensor } }, x: Tensor, mask: Tensor | null = null) =>
  noGrad(() => m.forward({ inputIds: x, attentionMask: mask }).logits);
const part = (p: PeftModel) => p.model.getSubmodule('prompt_encoder') as PromptEncoderPart;

test('prompt tuning from TEXT ids = the base model on [prompt ids, x] (last T positions); padding and repetition as PEFT', () => tidy(() => {
  for (const name of ['gpt2', 'llama']) {
    const m = load(name);
    const plain = logits(m, X());
    const ids = [7, 42, 3, 88];
    const peft = PeftModel.create(m, { peftType: 'PROMPT_TUNING', numVirtualTokens: 4, promptTuningInit: 'TEXT', promptTuningInitText: 'four tokens', promptTuningInitIds: ids });
    const x = X();
    // Row 1 left-padded by 2 (decoders): pads after the virtual tokens, masked out.
    const mask = tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], { dtype: 'int64' });
    const got = logits(peft, x, mask);  // (B, T, V)
    assert.deepEqual(got.shape, [2, 5, 96]);
    const full = cat([tensor([ids, ids], { dtype: 'int64' }), x], 1);  // (B, P + T)
    const fullMask = cat([ones([2, 4], { dtype: 'int64' }), mask], 1);
    const ref = peft.withAdaptersDisabled(() => logits(m, full, fullMask)).narrow(1, 4, 5);
    assert.ok(maxDiff(got.select(0, 0), ref.select(0, 0)) < 1e-5, `${name} row 0: ${maxDiff(got.select(0, 0), ref.select(0, 0))}`);
    assert.ok(maxDiff(got.select(0, 1).narrow(0, 2, 3), ref.select(0, 1).narrow(0, 2, 3)) < 1e-5, `${name} row 1`);
    // Without a mask too.
    const ref2 = peft.withAdaptersDisabled(() => logits(m, full)).narrow(1, 4, 5);
    assert.ok(maxDiff(logits(peft, x), ref2) < 1e-5);
    // Disabled: the base model exactly.
    const base = peft.withAdaptersDisabled(() => logits(peft, x));
    assert.equal(maxDiff(base, plain), 0);
    assert.ok(maxDiff(base, got) > 1e-3);
  }
  // PEFT's repetition: 2 ids for 5 virtual tokens -> a b a b a; 6 ids for 3 -> the first 3.
  const m = load('gpt2');
  const wte = m.getParameter('transformer.wte.weight');
  const p1 = PeftModel.create(m, { peftType: 'PROMPT_TUNING', numVirtualTokens: 5, promptTuningInit: 'TEXT', promptTuningInitText: 'ab', promptTuningInitIds: [10, 20] });
  const emb = m.getParameter('prompt_encoder.default.embedding.weight');
  assert.deepEqual(emb.shape, [5, 32]);
  assert.equal(maxDiff(emb, wte.indexSelect(0, tensor([10, 20, 10, 20, 10], { dtype: 'int64' }))), 0);
  p1.addAdapter('short', { peftType: 'PROMPT_TUNING', numVirtualTokens: 3, promptTuningInit: 'TEXT', promptTuningInitText: 'x', promptTuningInitIds: [1, 2, 3, 4, 5, 6] });
  assert.equal(maxDiff(m.getParameter('prompt_encoder.short.embedding.weight'), wte.indexSelect(0, tensor([1, 2, 3], { dtype: 'int64' }))), 0);
  p1.addAdapter('vocab', { peftType: 'PROMPT_TUNING', numVirtualTokens: 6, promptTuningInit: 'SAMPLE_VOCAB' }, { seed: 3 });
  // SAMPLE_VOCAB: every row is a row of the vocabulary.
  const rows = m.getParameter('prompt_encoder.vocab.embedding.weight');
  const d = tidy(() => rows.unsqueeze(1).sub(wte.unsqueeze(0)).abs().sum(-1).minDim(1).values);  // (P)
  assert.equal(d.max().item(), 0);
  assert.throws(() => p1.addAdapter('noids', { peftType: 'PROMPT_TUNING', promptTuningInit: 'TEXT', promptTuningInitText: 'hi' }), /promptTuningInitIds|token ids/);
  assert.throws(() => p1.addAdapter('notext', { peftType: 'PROMPT_TUNING', promptTuningInit: 'TEXT' }), /prompt_tuning_init_text/);
  // Two prompt adapters active at once: PEFT applies one.
  p1.setAdapter(['default', 'short']);
  assert.throws(() => logits(p1, X()), /active at once/);
  p1.setAdapter('default');
  assert.throws(() => p1.merge(), /merge/);
}));

/** The base model's cached keys and values of u, as a prefix-encoder embedding (P, L * 2 * Hkv * D). */
function prefixFromCache(m: PretrainedModel, u: Tensor): Tensor {
  const cache = new KVCache(m.numLayers);
  noGrad(() => m.forward({ inputIds: u, cache }));
  const c = cache as unknown as { k: Tensor[]; v: Tensor[] };
  // Row 0 of layer l: (Hkv, P, D) -> (P, Hkv * D); PEFT's layout is [k_0, v_0, k_1, v_1, ...].
  const flat = (t: Tensor) => t.select(0, 0).permute(1, 0, 2).reshape(u.shape[1]!, -1);
  const w = cat(Array.from({ length: m.numLayers }, (_, l) => [flat(c.k[l]!), flat(c.v[l]!)]).flat(), 1);
  cache.dispose();
  return w;
}

test('prefix tuning with the base model\'s own cached keys/values of u = the base continuing from that cache (positions, mask, layer order, GQA)', () => tidy(() => {
  for (const name of ['gpt2', 'llama']) {
    const m = load(name);
    const u = tensor([[12, 40, 7], [12, 40, 7]], { dtype: 'int64' });
    const w = prefixFromCache(m, u);  // (3, L * 2 * Hkv * D)
    const peft = PeftModel.create(m, { peftType: 'PREFIX_TUNING', numVirtualTokens: 3 });
    const c = peft.configs.get('default') as unknown as Record<string, number>;
    // llama: 2 kv heads of 8 (GQA, 4 query heads): token_dim 16, num_attention_heads 2 (PEFT's rule).
    assert.deepEqual([c.numLayers, c.tokenDim, c.numAttentionHeads], name === 'llama' ? [2, 16, 2] : [2, 32, 4]);
    const emb = m.getParameter('prompt_encoder.default.embedding.weight');
    assert.deepEqual(emb.shape, w.shape);
    noGrad(() => m.setParameter('prompt_encoder.default.embedding.weight', w.clone(), true));
    const x = X();
    const got = logits(peft, x);
    const cache = new KVCache(m.numLayers);
    noGrad(() => peft.withAdaptersDisabled(() => m.forward({ inputIds: u, cache })));
    const ref = peft.withAdaptersDisabled(() => noGrad(() => m.forward({ inputIds: x, cache }).logits));
    cache.dispose();
    assert.ok(maxDiff(got, ref) < 1e-5, `${name}: ${maxDiff(got, ref)}`);
    // With a mask over the caller's positions (row 1 left-padded): the prefix stays visible.
    const mask = tensor([[1, 1, 1, 1, 1], [0, 1, 1, 1, 1]], { dtype: 'int64' });
    const cache2 = new KVCache(m.numLayers);
    noGrad(() => peft.withAdaptersDisabled(() => m.forward({ inputIds: u, cache: cache2 })));
    const ref2 = peft.withAdaptersDisabled(() => noGrad(() => m.forward({ inputIds: x, attentionMask: cat([ones([2, 3], { dtype: 'int64' }), mask], 1), cache: cache2 }).logits));
    cache2.dispose();
    const got2 = logits(peft, x, mask);
    assert.ok(maxDiff(got2.select(0, 0), ref2.select(0, 0)) < 1e-5);
    assert.ok(maxDiff(got2.select(0, 1).narrow(0, 1, 4), ref2.select(0, 1).narrow(0, 1, 4)) < 1e-5);
  }
}));

test('KV-cache greedy generation = recomputation, for prompt, P-tuning and prefix tuning on gpt2 and llama', async () => {
  for (const name of ['gpt2', 'llama']) {
    for (const cfg of [
      { peftType: 'PROMPT_TUNING', numVirtualTokens: 4 },
      { peftType: 'P_TUNING', numVirtualTokens: 3, encoderHiddenSize: 16 },
      { peftType: 'PREFIX_TUNING', numVirtualTokens: 4, prefixProjection: true, encoderHiddenSize: 24 },
    ] as const) {
      const m = load(name);
      PeftModel.create(m, cfg, { seed: 5 });
      const x = tensor([[61, 66, 22, 13, 70], [0, 0, 17, 33, 2]], { dtype: 'int64' });
      const mask = tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]], { dtype: 'int64' });
      const cached = await generate(m, x, mask, { maxNewTokens: 6 });
      const recomputed = await generate(m, x, mask, { maxNewTokens: 6, noCache: true });
      assert.deepEqual(cached, recomputed, `${name} ${cfg.peftType}`);
      assert.ok((m.getSubmodule('prompt_encoder') as PromptEncoderPart).hasAdapter('default'));
      x.dispose();
      mask.dispose();
      m.dispose();
    }
  }
});

test('gradients reach only the prompt encoder; P-tuning MLP and prefix projection shapes and names as PEFT', () => tidy(() => {
  const m = load('llama');
  const peft = PeftModel.create(m, { peftType: 'P_TUNING', numVirtualTokens: 3, encoderHiddenSize: 24 });
  const shapes = Object.fromEntries(m.namedParameters().filter(([n]) => n.startsWith('prompt_encoder.')).map(([n, t]) => [n, t.shape]));
  assert.deepEqual(shapes, {
    'prompt_encoder.default.embedding.weight': [3, 32],
    'prompt_encoder.default.mlp_head.0.weight': [24, 32], 'prompt_encoder.default.mlp_head.0.bias': [24],
    'prompt_encoder.default.mlp_head.2.weight': [24, 24], 'prompt_encoder.default.mlp_head.2.bias': [24],
    'prompt_encoder.default.mlp_head.4.weight': [32, 24], 'prompt_encoder.default.mlp_head.4.bias': [32],
  });
  const trainable = m.namedParameters().filter(([, t]) => t.requiresGrad).map(([n]) => n);
  assert.deepEqual(trainable.sort(), Object.keys(shapes).sort());
  m.train();
  const out = peft.forward({ inputIds: X() }).logits;
  out.square().mean().backward();
  for (const [n, t] of m.namedParameters()) {
    if (n.startsWith('prompt_encoder.')) assert.ok(t.grad !== null && t.grad.abs().sum().item() > 0, `no gradient on ${n}`);
    else assert.equal(t.grad, null, `gradient on base parameter ${n}`);
  }
  m.eval();
  // Prefix with projection (llama, GQA): embedding (P, C) -> transform.0 (E, C) -> tanh -> transform.2 (L*2*Hkv*D, E).
  const m2 = load('llama');
  PeftModel.create(m2, { peftType: 'PREFIX_TUNING', numVirtualTokens: 3, prefixProjection: true, encoderHiddenSize: 20 });
  const s2 = Object.fromEntries(m2.namedParameters().filter(([n]) => n.startsWith('prompt_encoder.')).map(([n, t]) => [n, t.shape]));
  assert.deepEqual(s2, {
    'prompt_encoder.default.embedding.weight': [3, 16],
    'prompt_encoder.default.transform.0.weight': [20, 16], 'prompt_encoder.default.transform.0.bias': [20],
    'prompt_encoder.default.transform.2.weight': [64, 20], 'prompt_encoder.default.transform.2.bias': [64],
  });
  // LSTM is refused by name.
  assert.throws(() => PeftModel.create(load('gpt2'), { peftType: 'P_TUNING', encoderReparameterizationType: 'LSTM' }), /LSTM/);
  // One prompt-learning method per model (PEFT); zero init makes the prefix exactly zero.
  const m3 = load('gpt2');
  const p3 = PeftModel.create(m3, { peftType: 'PREFIX_TUNING', numVirtualTokens: 2, initWeights: 'zero' });
  assert.equal(m3.getParameter('prompt_encoder.default.embedding.weight').abs().max().item(), 0);
  assert.throws(() => p3.addAdapter('p', { peftType: 'PROMPT_TUNING' }), /one prompt-learning method/);
  p3.deleteAdapter('default');
  assert.equal(m3.child('prompt_encoder'), null);
  assert.equal(m3.hooks.prefix, undefined);
  p3.addAdapter('p', { peftType: 'PROMPT_TUNING', numVirtualTokens: 2 });
  p3.setAdapter('p');
  assert.deepEqual(logits(p3, X()).shape, [2, 5, 96]);
}));

const PEFT_KEYS: Record<string, string[]> = {
  PROMPT_TUNING: ['auto_mapping', 'base_model_name_or_path', 'inference_mode', 'modules_to_save', 'num_attention_heads', 'num_layers', 'num_transformer_submodules',
    'num_virtual_tokens', 'peft_type', 'peft_version', 'prompt_tuning_init', 'prompt_tuning_init_text', 'revision', 'task_type', 'token_dim', 'tokenizer_kwargs', 'tokenizer_name_or_path'],
  P_TUNING: ['auto_mapping', 'base_model_name_or_path', 'encoder_dropout', 'encoder_hidden_size', 'encoder_num_layers', 'encoder_reparameterization_type', 'inference_mode',
    'modules_to_save', 'num_attention_heads', 'num_layers', 'num_transformer_submodules', 'num_virtual_tokens', 'peft_type', 'peft_version', 'revision', 'task_type', 'token_dim'],
  PREFIX_TUNING: ['auto_mapping', 'base_model_name_or_path', 'encoder_hidden_size', 'inference_mode', 'init_weights', 'modules_to_save', 'num_attention_heads', 'num_layers',
    'num_transformer_submodules', 'num_virtual_tokens', 'peft_type', 'peft_version', 'prefix_projection', 'revision', 'task_type', 'token_dim'],
};

test('save -> load: PEFT JSON fields and derived values, bare prompt_embeddings of PEFT\'s shape, identical logits (inference mode: no MLP)', () => tidy(() => {
  const cases = [
    { model: 'llama', cfg: { peftType: 'PROMPT_TUNING', numVirtualTokens: 4 }, shape: [4, 32], derived: { num_layers: 2, token_dim: 32, num_attention_heads: 4 } },
    { model: 'gpt2', cfg: { peftType: 'P_TUNING', numVirtualTokens: 3 }, shape: [3, 32], derived: { num_layers: 2, token_dim: 32, num_attention_heads: 4, encoder_hidden_size: 32 } },
    { model: 'llama', cfg: { peftType: 'PREFIX_TUNING', numVirtualTokens: 5, prefixProjection: true }, shape: [5, 64], derived: { num_layers: 2, token_dim: 16, num_attention_heads: 2, encoder_hidden_size: 16 } },
    { model: 'gpt2', cfg: { peftType: 'PREFIX_TUNING', numVirtualTokens: 2 }, shape: [2, 128], derived: { num_layers: 2, token_dim: 32, num_attention_heads: 4, encoder_hidden_size: 32 } },
  ] as const;
  for (const c of cases) {
    const m = load(c.model);
    const peft = PeftModel.create(m, c.cfg, { seed: 1 });
    const x = X();
    const before = logits(peft, x);
    const dir = tmp();
    savePeftAdapters(peft, dir);
    const j = json(join(dir, 'adapter_config.json'));
    assert.deepEqual(Object.keys(j).sort(), PEFT_KEYS[c.cfg.peftType], c.cfg.peftType);
    for (const [k, v] of Object.entries(c.derived)) assert.equal(j[k], v, `${c.cfg.peftType} ${k}`);
    assert.equal(j.num_transformer_submodules, 1);
    assert.equal(j.inference_mode, true);
    assert.equal(j.peft_type, c.cfg.peftType);
    const w = readSafetensors(join(dir, 'adapter_model.safetensors'));
    assert.deepEqual([...w.keys()], ['prompt_embeddings']);
    assert.deepEqual(w.get('prompt_embeddings')!.shape, c.shape);
    // The saved tensor is the encoder's output (projected when prefix_projection / P-tuning's MLP).
    const enc = part(peft).encoder('default');
    assert.equal(maxDiff(w.get('prompt_embeddings')!, noGrad(() => enc.output())), 0);
    // By hand, from the parameters: P-tuning relu(relu(E W0' + b0) W2' + b2) W4' + b4; prefix W2'(tanh(E W0' + b0)) + b2.
    const P = (n: string) => m.getParameter(`prompt_encoder.default.${n}`);
    const lin = (x: Tensor, l: string) => x.matmul(P(`${l}.weight`).transpose(0, 1)).add(P(`${l}.bias`));
    const E = P('embedding.weight');
    const hand = c.cfg.peftType === 'P_TUNING' ? lin(lin(lin(E, 'mlp_head.0').relu(), 'mlp_head.2').relu(), 'mlp_head.4')
      : 'prefixProjection' in c.cfg ? lin(lin(E, 'transform.0').tanh(), 'transform.2') : E;
    assert.ok(maxDiff(w.get('prompt_embeddings')!, noGrad(() => hand)) < 1e-6);
    w.forEach((t) => t.dispose());
    const m2 = load(c.model);
    const loaded = loadPeftAdapter(m2, dir, { warn: () => {} });
    assert.ok(maxDiff(logits(loaded, x), before) < 1e-6, `${c.cfg.peftType}: ${maxDiff(logits(loaded, x), before)}`);
    // Inference mode, as PEFT: only the embedding holding the computed prompt.
    assert.deepEqual(m2.namedParameters().filter(([n]) => n.startsWith('prompt_encoder.')).map(([n, t]) => [n, t.shape]), [['prompt_encoder.default.embedding.weight', c.shape]]);
    assert.equal(m2.namedParameters().filter(([, t]) => t.requiresGrad).length, 0);
    // A file made for another base model is refused by the mismatching size.
    if (c.cfg.peftType === 'PREFIX_TUNING' && c.model === 'llama') assert.throws(() => loadPeftAdapter(load('gpt2'), dir, { warn: () => {} }), /token_dim is 16 but this gpt2 model needs 32/);
  }
}));

test('BERT sequence classification with prompt and prefix tuning: runs, heads saved as base_model.classifier.*, logits change only through the adapter', () => tidy(() => {
  for (const peftType of ['PROMPT_TUNING', 'PREFIX_TUNING'] as const) {
    const m = load('bert-seqcls');
    const x = tensor([[2, 61, 66, 22, 13, 3], [2, 5, 9, 3, 0, 0]], { dtype: 'int64' });
    const mask = tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], { dtype: 'int64' });
    const types = tensor([[0, 0, 0, 1, 1, 1], [0, 0, 0, 0, 0, 0]], { dtype: 'int64' });
    const run = (mm: { forward(i: object): { logits: Tensor } }) => noGrad(() => mm.forward({ inputIds: x, attentionMask: mask, tokenTypeIds: types }).logits);
    const base = run(m);
    const peft = PeftModel.create(m, { peftType, numVirtualTokens: 3, taskType: 'SEQ_CLS' }, { seed: 2 });
    const withAdapter = run(peft);
    assert.deepEqual(withAdapter.shape, [2, 3]);
    assert.ok(maxDiff(withAdapter, base) > 1e-4, `${peftType} changed nothing`);
    assert.equal(maxDiff(peft.withAdaptersDisabled(() => run(peft)), base), 0);
    // Only the adapter and the classifier copy (PEFT's SEQ_CLS modules_to_save) train.
    const trainable = m.namedParameters().filter(([, t]) => t.requiresGrad).map(([n]) => n).sort();
    assert.ok(trainable.every((n) => n.startsWith('prompt_encoder.') || n.startsWith('classifier.modules_to_save.default.')), trainable.join());
    const dir = tmp();
    savePeftAdapters(peft, dir);
    const w = readSafetensors(join(dir, 'adapter_model.safetensors'));
    assert.deepEqual([...w.keys()].sort(), ['base_model.classifier.bias', 'base_model.classifier.weight', 'prompt_embeddings']);
    w.forEach((t) => t.dispose());
    assert.deepEqual(json(join(dir, 'adapter_config.json')).modules_to_save, ['classifier', 'score']);
    const loaded = loadPeftAdapter(load('bert-seqcls'), dir, { warn: () => {} });
    assert.ok(maxDiff(run(loaded), withAdapter) < 1e-6);
  }
}));

test('gradient checkpointing gives the same encoder gradients; a bfloat16 model keeps float32 encoders and casts in the hooks', () => tidy(() => {
  for (const cfg of [
    { peftType: 'P_TUNING', numVirtualTokens: 3, encoderHiddenSize: 16 },
    { peftType: 'PREFIX_TUNING', numVirtualTokens: 3, prefixProjection: true, encoderHiddenSize: 16 },
  ] as const) {
    const grads: Tensor[][] = [];
    for (const ckpt of [false, true]) {
      const m = load('llama');
      const peft = PeftModel.create(m, cfg, { seed: 4 });
      m.train();
      const input = { inputIds: X() };
      const loss = (o: { logits: Tensor }) => o.logits.square().mean();
      if (ckpt) checkpointedBackward(m.segments(input), loss, 0);
      else loss(peft.forward(input)).backward();
      grads.push(part(peft).adapterParameters('default').map((t) => t.grad!.clone()));
    }
    grads[0]!.forEach((g, i) => assert.ok(maxDiff(g, grads[1]![i]!) < 1e-6, `${cfg.peftType} grad ${i}`));
  }
  for (const peftType of ['PROMPT_TUNING', 'PREFIX_TUNING'] as const) {
    const m = loadModel(join(HF, 'llama'), { dtype: 'bfloat16' }).eval() as PretrainedModel;
    const peft = PeftModel.create(m, { peftType, numVirtualTokens: 3 });
    for (const t of part(peft).adapterParameters('default')) assert.equal(t.dtype, 'float32');
    const out = peft.forward({ inputIds: X() }).logits;
    assert.equal(out.dtype, 'bfloat16');
    out.to('float32').square().mean().backward();
    for (const t of part(peft).adapterParameters('default')) assert.ok(t.grad !== null && t.grad.dtype === 'float32' && Number.isFinite(t.grad.abs().sum().item()));
  }
}));
