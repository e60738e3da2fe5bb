// S2FT: the trained slice is the chosen heads' columns of the attention output projection (hand-checked
// on a 2-head GPT-2-style Conv1D and on the tiny GPT-2) and chosen channels of the down projection;
// merge equals unmerged and unmerge restores exactly; file keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, keep, tensor, randn, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, type Tensor, type AdapterContext } from '../src/index.js';
import { Conv1D, Linear } from '../src/nn/layers.js';
import { S2ftLayer, resolveS2ft, isAttentionOutput } from '../src/adapters/s2ft/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const ctxOf = (active: string[]): AdapterContext => ({ active, disabled: false, rows: null, version: 0, slots: {}, composition: null });
const arr = (t: Tensor) => [...t.to('float32', 'cpu').data()].map(Number);

test('attention output vs feed-forward paths', () => {
  assert.ok(isAttentionOutput('transformer.h.0.attn.c_proj'));
  assert.ok(!isAttentionOutput('transformer.h.0.mlp.c_proj'));
  assert.ok(isAttentionOutput('model.layers.1.self_attn.o_proj'));
  assert.ok(!isAttentionOutput('model.layers.1.mlp.down_proj'));
  assert.ok(isAttentionOutput('bert.encoder.layer.0.attention.output.dense'));
  assert.ok(!isAttentionOutput('bert.encoder.layer.0.output.dense'));
  assert.throws(() => resolveS2ft({ peftType: 'S2FT', headIndices: [1, 1] }), /head_indices must be null or a list of distinct head indices/);
});

test('2 heads, head size 4 (GPT-2 Conv1D): head 1 trains columns 4..7; channels by list; merge writes the slice', () => tidy(() => {
  const base = new Conv1D(8, 3);  // attn.c_proj: in = 2 heads x 4, stored [in, out]
  const W = Array.from({ length: 8 }, (_, i) => [i, 10 + i, 20 + i]);  // [in, out]
  noGrad(() => { base.setParameter('weight', tensor(W), false); base.setParameter('bias', tensor([0, 0, 0]), false); });
  const layer = new S2ftLayer(base, ctxOf(['a']));
  layer.addAdapter('a', resolveS2ft({ peftType: 'S2FT', headIndices: [1] }), 'transformer.h.0.attn.c_proj', { seed: 0, data: { heads: 2 } });
  assert.deepEqual(layer.indices('a'), [4, 5, 6, 7]);
  assert.deepEqual(layer.selectedHeads.get('a'), [1]);
  // The slice (O, 4) is W's columns 4..7 in (out, in) terms: rows 4..7 of the Conv1D weight, transposed.
  assert.deepEqual(arr(layer.block('a')), [0, 1, 2].flatMap((o) => [4, 5, 6, 7].map((i) => W[i]![o]!)));
  layer.addAdapter('r', resolveS2ft({ peftType: 'S2FT', numHeads: 1 }), 'transformer.h.0.attn.c_proj', { seed: 3, data: { heads: 2 } });
  const h = layer.selectedHeads.get('r')![0]!;
  assert.deepEqual(layer.indices('r'), [4 * h, 4 * h + 1, 4 * h + 2, 4 * h + 3]);
  const x = tensor([[1, 2, 3, 4, 5, 6, 7, 8]]);
  noGrad(() => layer.block('a').add_(1));  // every trained weight + 1: y gains x[4..7].sum() = 26 per output
  const want = [0, 1, 2].map((o) => W.reduce((s, row, i) => s + row[o]! * (i + 1), 0) + 26);
  assert.deepEqual(arr(layer.forward(x)), want);
  layer.merge(['a']);
  assert.deepEqual(arr(base.weight), W.flatMap((row, i) => row.map((v) => (i >= 4 ? v + 1 : v))));
  layer.unmerge();
  assert.deepEqual(arr(base.weight), W.flat());
  const ffn = new S2ftLayer(new Linear(6, 2), ctxOf(['a']));
  ffn.addAdapter('a', resolveS2ft({ peftType: 'S2FT', channelIndices: [5, 0] }), 'mlp.down_proj', { seed: 0, data: { heads: null } });
  assert.deepEqual(ffn.indices('a'), [0, 5]);
  assert.throws(() => ffn.addAdapter('b', resolveS2ft({ peftType: 'S2FT', channelIndices: [6] }), 'mlp.down_proj', { seed: 0, data: { heads: null } }), /channel_indices has 6, but mlp.down_proj has 6 channels/);
}));

test('tiny GPT-2 (4 heads of 8): a head block of attn.c_proj and channels of mlp.c_proj; merge = unmerged; save -> load', () => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const x = keep(ids());
  try {
    const peft = PeftModel.create(m, { peftType: 'S2FT', numHeads: 2, numChannels: 5 }, { seed: 2 });
    const parts = peft.parts().map(([p, l]) => [p, l as S2ftLayer] as const);
    assert.deepEqual(parts.map(([p]) => p), ['transformer.h.0.attn.c_proj', 'transformer.h.0.mlp.c_proj', 'transformer.h.1.attn.c_proj', 'transformer.h.1.mlp.c_proj']);
    for (const [p, l] of parts) {
      if (p.endsWith('attn.c_proj')) {
        const heads = l.selectedHeads.get('default')!;
        assert.equal(heads.length, 2);
        assert.deepEqual(l.indices('default'), heads.flatMap((hh) => Array.from({ length: 8 }, (_, j) => 8 * hh + j)));
        assert.deepEqual(l.block('default').shape, [32, 16]);
      } else {
        assert.equal(l.selectedHeads.get('default'), null);
        assert.equal(l.indices('default').length, 5);
        assert.ok(l.indices('default').every((c) => c < 128));
      }
    }
    noGrad(() => parts.forEach(([, l], i) => { const p = l.block('default'); p.add_(randn(p.shape, { seed: i }).mul(0.1)); }));
    const tuned = keep(logits(m, x));
    const w0 = parts.map(([, l]) => keep(l.base_layer.weight.clone()));
    peft.merge();
    assert.ok(maxDiff(logits(m, x), tuned) < 1e-4, 'merged equals unmerged');
    peft.unmerge();
    parts.forEach(([, l], i) => assert.equal(maxDiff(l.base_layer.weight, w0[i]!), 0, 'unmerge restores exactly'));
    const dir = mkdtempSync(join(tmpdir(), 's2ft-'));
    savePeftAdapters(peft, dir);
    const file = readSafetensors(join(dir, 'adapter_model.safetensors'));
    assert.deepEqual(arr(file.get('base_model.model.transformer.h.0.attn.c_proj.s2ft_indices')!), parts[0]![1].indices('default'));
    assert.deepEqual(file.get('base_model.model.transformer.h.0.mlp.c_proj.s2ft_weight')!.shape, [32, 5]);
    const m2 = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
    loadPeftAdapter(m2, dir);
    assert.ok(maxDiff(logits(m2, x), tuned) < 1e-6);
    m2.dispose();
    w0.forEach((t) => t.dispose());
    tuned.dispose();
  } finally {
    x.dispose();
    m.dispose();
  }
});
