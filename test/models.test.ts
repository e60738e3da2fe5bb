// Each model family's forward on tiny checkpoints against an independent reference: fixtures made
// by scripts/make_hf_fixtures.py, which implements HF's math separately in Python/torch. Compared at
// non-padded positions, to 1e-4 (relative to the largest logit). Also: padded batches equal
// unbatched rows, and KV-cache generation equals full recomputation token for token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { readSafetensors } from '../src/io/safetensors.js';
import { loadModel } from '../src/models/load.js';
import { generate } from '../src/models/generate.js';
import { tidy, noGrad, tensor, type Tensor } from '../src/index.js';
import type { Task } from '../src/models/types.js';

const FIX = fileURLToPath(new URL('../../test/fixtures/hf-ref/', import.meta.url));

interface Case { name: string; task?: Task; outputs: [string, 'logits' | 'hidden'][]; decoder: boolean }
const CASES: Case[] = [
  { name: 'gpt2', outputs: [['logits', 'logits']], decoder: true },
  { name: 'gpt2-noprefix-inverse-idx', outputs: [['logits', 'logits']], decoder: true },
  { name: 'llama', outputs: [['logits', 'logits']], decoder: true },
  { name: 'llama3-rope', outputs: [['logits', 'logits']], decoder: true },
  { name: 'llama-linear-rope', outputs: [['logits', 'logits']], decoder: true },
  { name: 'mistral', outputs: [['logits', 'logits']], decoder: true },
  { name: 'qwen2', outputs: [['logits', 'logits']], decoder: true },
  { name: 'bert', outputs: [['mlm_logits', 'logits'], ['last_hidden_state', 'hidden']], decoder: false },
  { name: 'bert-seqcls', outputs: [['logits', 'logits']], decoder: false },
  { name: 'bert-tokcls', outputs: [['logits', 'logits']], decoder: false },
  { name: 'roberta', outputs: [['mlm_logits', 'logits'], ['last_hidden_state', 'hidden']], decoder: false },
  { name: 'roberta-seqcls', outputs: [['logits', 'logits']], decoder: false },
  { name: 'xlm-roberta', outputs: [['mlm_logits', 'logits'], ['last_hidden_state', 'hidden']], decoder: false },
];

/** max |a - b| over positions where mask is 1 (per-token outputs) or everywhere (pooled outputs). */
function maxDiff(a: Tensor, b: Tensor, mask: Tensor): { diff: number; scale: number } {
  return tidy(() => {
    let d = a.sub(b).abs();
    if (d.ndim === 3) d = d.mul(mask.unsqueeze(-1).to('float32'));
    return { diff: d.max().item(), scale: b.abs().max().item() };
  });
}

for (const c of CASES) {
  test(`${c.name}: forward matches the independent reference`, () => noGrad(() => tidy(() => {
    const dir = join(FIX, c.name);
    const exp = readSafetensors(join(dir, 'expected.safetensors'));
    const model = loadModel(dir, { dtype: 'float32', task: c.task });
    const ids = exp.get('input_ids')!;
    const mask = exp.get('attention_mask')!;
    const out = model.forward({
      inputIds: ids,
      attentionMask: mask,
      positionIds: exp.get('position_ids') ?? null,
      tokenTypeIds: exp.get('token_type_ids') ?? null,
    });
    for (const [key, which] of c.outputs) {
      const ref = exp.get(key)!;
      const got = which === 'logits' ? out.logits : out.hiddenStates;
      assert.deepEqual(got.shape, ref.shape, `${c.name} ${key} shape`);
      const { diff, scale } = maxDiff(got, ref, mask);
      assert.ok(scale > 0.1, `${c.name} ${key}: reference is degenerate`);
      assert.ok(diff <= 1e-4 * Math.max(1, scale), `${c.name} ${key}: max diff ${diff} (scale ${scale})`);
    }
    if (c.decoder) {
      // Default position ids (counted from the mask) give the same result as the explicit ones.
      const dflt = model.forward({ inputIds: ids, attentionMask: mask });
      assert.ok(maxDiff(dflt.logits, out.logits, mask).diff < 1e-5);
    }
    // A padded batch equals each row run alone without padding.
    const n = mask.select(0, 1).sum().item();
    const t = ids.shape[1]!;
    const start = c.decoder ? t - n : 0;  // decoders are left-padded, encoders right-padded
    const row = ids.select(0, 1).narrow(0, start, n).unsqueeze(0);
    const types = exp.get('token_type_ids')?.select(0, 1).narrow(0, start, n).unsqueeze(0) ?? null;
    const alone = model.forward({ inputIds: row, tokenTypeIds: types });
    const batched = out.logits.select(0, 1);
    const cmp = alone.logits.ndim === 3 ? batched.narrow(0, start, n).unsqueeze(0) : batched.unsqueeze(0);
    const d = cmp.sub(alone.logits).abs().max().item();
    assert.ok(d < 1e-4, `${c.name}: padded row differs from the unpadded row by ${d}`);
    model.dispose();
  })));
}

for (const name of ['gpt2', 'llama']) {
  test(`${name}: greedy generation matches the reference, with and without the KV cache`, async () => {
    const dir = join(FIX, name);
    const exp = readSafetensors(join(dir, 'expected.safetensors'));
    const model = loadModel(dir, { dtype: 'float32' });
    const want = Array.from(exp.get('greedy_ids')!.data() as BigInt64Array, Number);
    const prompt = want.slice(0, 7);
    const x = tensor([prompt], { dtype: 'int64' });
    const cached = await generate(model, x, null, { maxNewTokens: 5 });
    const full = await generate(model, x, null, { maxNewTokens: 5, noCache: true });
    assert.deepEqual(cached[0], want.slice(7));
    assert.deepEqual(full[0], cached[0]);
    // Sampled, batched, left-padded: the cache path and full recomputation agree token for token.
    const ids = exp.get('input_ids')!;
    const mask = exp.get('attention_mask')!;
    const o = { maxNewTokens: 8, doSample: true, temperature: 0.9, topK: 20, topP: 0.9, repetitionPenalty: 1.3, seed: 3 };
    const a = await generate(model, ids, mask, o);
    const b = await generate(model, ids, mask, { ...o, noCache: true });
    assert.deepEqual(a, b);
    for (const t of [...exp.values(), x]) t.dispose();
    model.dispose();
  });
}
