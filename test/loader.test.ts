// Loading checkpoints: both key styles, ignored buffers, tied weights, new heads, saving, and the
// errors for checkpoints that do not fit (missing / unexpected / mis-shaped keys, bad configs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync, readFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadModel, createModel, saveModel, CheckpointMismatchError } from '../src/models/load.js';
import { ConfigError } from '../src/models/config.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { tidy, noGrad, tensor, randn } from '../src/index.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/hf-ref/', import.meta.url));
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-load-'));

test('module paths equal HF state-dict keys, and tied weights share one tensor', () => {
  const m = loadModel(join(FIX, 'gpt2'));
  const names = m.namedParameters().map(([n]) => n);
  assert.ok(names.includes('transformer.h.0.attn.c_attn.weight'));
  assert.ok(names.includes('lm_head.weight'));
  assert.deepEqual(m.getParameter('transformer.h.0.attn.c_attn.weight').shape, [32, 96]);  // Conv1D [in, out]
  assert.equal(m.getParameter('lm_head.weight'), m.getParameter('transformer.wte.weight'));
  assert.equal(m.numParameters(), m.parameters().reduce((s, t) => s + t.numel, 0));
  assert.equal(m.numParameters({ trainableOnly: true }), 0, 'loaded models are frozen');
  assert.equal(m.training, false, 'loaded models are in eval mode');
  m.dispose();
  const bert = loadModel(join(FIX, 'bert'));
  assert.ok(bert.namedParameters().some(([n]) => n === 'bert.encoder.layer.1.attention.self.query.weight'));
  assert.equal(bert.getParameter('cls.predictions.decoder.weight'), bert.getParameter('bert.embeddings.word_embeddings.weight'));
  bert.dispose();
});

test('a base checkpoint loads into a task model with a newly initialised head', () => {
  const notes: string[] = [];
  const m = loadModel(join(FIX, 'llama'), { task: 'sequence-classification', numLabels: 3, log: (s) => notes.push(s) });
  assert.deepEqual(m.getParameter('score.weight').shape, [3, 32]);
  assert.ok(notes.some((n) => /newly initialised.*score\.weight/.test(n)));
  assert.ok(notes.some((n) => /ignored \d+ checkpoint keys/.test(n)), 'lm_head.weight is another head: ignored');
  const out = noGrad(() => tidy(() => m.forward({ inputIds: tensor([[1, 2, 3]], { dtype: 'int64' }) }).logits.shape));
  assert.deepEqual(out, [1, 3]);
  m.dispose();
});

test('save -> load round trip is exact, in float32 and bfloat16', () => {
  const m = createModel(JSON.parse(readFileSync(join(FIX, 'qwen2', 'config.json'), 'utf8')), { seed: 5 });
  const dir = tmp();
  saveModel(m, dir);
  const back = loadModel(dir, { dtype: 'float32' });
  for (const [n, t] of m.namedParameters()) assert.deepEqual(back.getParameter(n).data(), t.data(), n);
  assert.ok(!readSafetensors(join(dir, 'model.safetensors')).has('lm_head.weight'), 'tied lm_head is not stored');
  const dirBf = tmp();
  saveModel(m, dirBf, { dtype: 'bfloat16' });
  const bf = loadModel(dirBf, { dtype: 'bfloat16' });
  assert.equal(bf.getParameter('model.norm.weight').dtype, 'bfloat16');
  assert.deepEqual(bf.getParameter('model.norm.weight').data(), m.getParameter('model.norm.weight').to('bfloat16').data());
  // Sharded: small shards load the same.
  const dirSh = tmp();
  saveModel(m, dirSh, { maxShardBytes: 40_000 });
  const sh = loadModel(dirSh, { dtype: 'float32' });
  assert.deepEqual(sh.getParameter('model.layers.1.mlp.down_proj.weight').data(), m.getParameter('model.layers.1.mlp.down_proj.weight').data());
  for (const x of [m, back, bf, sh]) x.dispose();
});

test('bfloat16 and float16 forwards stay close to float32', () => noGrad(() => tidy(() => {
  const dir = join(FIX, 'llama');
  const exp = readSafetensors(join(dir, 'expected.safetensors'));
  const ids = exp.get('input_ids')!.narrow(0, 0, 1);
  for (const dtype of ['bfloat16', 'float16'] as const) {
    const m = loadModel(dir, { dtype });
    const got = m.forward({ inputIds: ids }).logits.to('float32');
    const ref = exp.get('logits')!.narrow(0, 0, 1);
    const err = got.sub(ref).abs().max().item();
    assert.ok(err < (dtype === 'bfloat16' ? 0.15 : 0.02), `${dtype}: max error ${err}`);
    m.dispose();
  }
})));

function withWeights(src: string, edit: (w: Map<string, ReturnType<typeof randn>>) => void): string {
  const dir = tmp();
  cpSync(join(FIX, src, 'config.json'), join(dir, 'config.json'));
  const w = readSafetensors(join(FIX, src, 'model.safetensors'));
  edit(w);
  writeSafetensors(join(dir, 'model.safetensors'), w);
  return dir;
}

test('checkpoints that do not fit are errors listing every problem', () => {
  const missing = withWeights('llama', (w) => w.delete('model.layers.1.mlp.up_proj.weight'));
  assert.throws(() => loadModel(missing), (e: unknown) => e instanceof CheckpointMismatchError && /missing keys \(1\): model\.layers\.1\.mlp\.up_proj\.weight/.test(e.message));
  const extra = withWeights('llama', (w) => w.set('model.layers.9.foo.weight', randn([2])));
  assert.throws(() => loadModel(extra), /unexpected keys \(1\): model\.layers\.9\.foo\.weight/);
  const shape = withWeights('llama', (w) => w.set('model.norm.weight', randn([31])));
  assert.throws(() => loadModel(shape), /shape mismatches \(1\): model\.norm\.weight: checkpoint \[31\] vs model \[32\]/);
  // A checkpoint of another family: every key is unexpected and every parameter missing.
  const other = tmp();
  cpSync(join(FIX, 'llama', 'config.json'), join(other, 'config.json'));
  cpSync(join(FIX, 'gpt2', 'model.safetensors'), join(other, 'model.safetensors'));
  assert.throws(() => loadModel(other), /missing keys.*\n.*unexpected keys/s);
});

test('configs: unknown model types and unsupported values are named', () => {
  const bad = (patch: Record<string, unknown>, src = 'llama') => {
    const dir = tmp();
    const cfg = { ...JSON.parse(readFileSync(join(FIX, src, 'config.json'), 'utf8')), ...patch };
    writeFileSync(join(dir, 'config.json'), JSON.stringify(cfg));
    cpSync(join(FIX, src, 'model.safetensors'), join(dir, 'model.safetensors'));
    return dir;
  };
  assert.throws(() => loadModel(bad({ model_type: 'mamba' })), (e: unknown) => e instanceof ConfigError && /unsupported model_type "mamba" \(supported: gpt2, llama/.test(e.message));
  assert.throws(() => loadModel(bad({ rope_scaling: { rope_type: 'yarn', factor: 2 } })), /unsupported rope_scaling type "yarn"/);
  assert.throws(() => loadModel(bad({ hidden_act: 'swiglu9' })), /unsupported activation "swiglu9"/);
  assert.throws(() => loadModel(bad({ num_key_value_heads: 3 })), /num_attention_heads \(4\) must be divisible by num_key_value_heads \(3\)/);
  assert.throws(() => loadModel(bad({ hidden_size: 'big' })), /"hidden_size" must be a non-negative integer/);
  assert.throws(() => loadModel(bad({ position_embedding_type: 'relative_key' }, 'bert')), /unsupported position_embedding_type "relative_key"/);
  assert.throws(() => loadModel(bad({ add_cross_attention: true }, 'gpt2')), /add_cross_attention is not supported/);
  const notJson = tmp();
  writeFileSync(join(notJson, 'config.json'), '{ nope');
  assert.throws(() => loadModel(notJson), /config\.json is not valid JSON/);
  assert.throws(() => loadModel(join(FIX, 'bert'), { task: 'causal-lm' }), /bert has no causal-lm head/);
});
