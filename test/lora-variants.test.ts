// Behaviour of the LoRA variants: PiSSA and CorDA (base + adapter = the original weight at
// initialisation, and the saved rank-2r conversion works on the untouched base), DoRA (starts as
// the base; the weight norm is detached as in PEFT), DyLoRA (nested ranks; any truncation is a
// valid adapter whose loss degrades gracefully).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  tidy, noGrad, keep, tensor, randint, crossEntropy, linear, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, LoraLayer, setDyloraRank,
  type Tensor, type PretrainedModel,
} from '../src/index.js';

const HF = fileURLToPath(new URL('../../test/fixtures/hf-ref/', import.meta.url));
const x = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const out = (m: PretrainedModel, i: Tensor) => noGrad(() => m.forward({ inputIds: i }).logits);
const diff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());

function perturb(peft: PeftModel, seed: number): void {
  noGrad(() => {
    for (const [, l] of peft.tunerLayers()) {
      const ll = l as LoraLayer;
      ll.A('default').add_(ll.A('default').clone().normal_(0, 0.05, seed));
      ll.B('default').add_(ll.B('default').clone().normal_(0, 0.05, seed + 1));
    }
  });
}

test('PiSSA: base + adapter equals the original at init; the base keeps the residual; saved as rank 2r for the original base', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const ids = x();
  const before = out(m, ids);
  const wq = m.getParameter('model.layers.0.self_attn.q_proj.weight').clone();
  const peft = PeftModel.create(m, { r: 4, loraAlpha: 8, initLoraWeights: 'pissa', targetModules: ['q_proj', 'v_proj'] });
  assert.ok(diff(out(m, ids), before) < 1e-4, 'the model is unchanged at init');
  const layer = m.getSubmodule('model.layers.0.self_attn.q_proj') as LoraLayer;
  const residual = layer.base_layer.weight;
  assert.ok(diff(residual, wq) > 1e-2, 'the principal part left the base');
  assert.ok(diff(residual.add(layer.B('default').matmul(layer.A('default')).mul(2)), wq) < 1e-5);
  // The adapter holds the r principal directions: its singular values are the top of W's.
  perturb(peft, 3);
  const tuned = out(m, ids);
  const dir = mkdtempSync(join(tmpdir(), 'ak-pissa-'));
  savePeftAdapters(peft, dir);
  const fresh = loadModel(join(HF, 'llama'), { dtype: 'float32' });  // the ORIGINAL base
  const p2 = loadPeftAdapter(fresh, dir);
  assert.equal((p2.configs.get('default') as unknown as { r: number }).r, 8, 'rank doubled by the conversion');
  assert.ok(diff(out(fresh, ids), tuned) < 1e-4, 'the converted adapter on the original base equals the PiSSA model');
  m.dispose();
  fresh.dispose();
}));

test('CorDA: covariance from sample data; ipm and kpm both start as the base; ipm holds the larger components', () => tidy(() => {
  const ids = x();
  const samples = [randint(0, 96, [2, 7], { seed: 1 }), randint(0, 96, [2, 7], { seed: 2 })];
  const norms: Record<string, number> = {};
  for (const method of ['ipm', 'kpm'] as const) {
    const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
    const before = out(m, ids);
    PeftModel.create(m, { r: 2, loraAlpha: 4, initLoraWeights: 'corda', cordaMethod: method, targetModules: ['q_proj'] }, { data: samples });
    assert.ok(diff(out(m, ids), before) < 1e-4, `${method}: unchanged at init`);
    const l = m.getSubmodule('model.layers.0.self_attn.q_proj') as LoraLayer;
    norms[method] = l.B('default').matmul(l.A('default')).norm().item();
    m.dispose();
  }
  assert.ok(norms.ipm! > norms.kpm!, `ipm ${norms.ipm} > kpm ${norms.kpm}`);
  assert.throws(() => PeftModel.create(loadModel(join(HF, 'llama'), { dtype: 'float32' }), { initLoraWeights: 'corda' }), /CorDA needs sample data/);
}));

test('DoRA: starts as the base; the magnitude trains; the weight norm is detached as in PEFT', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const ids = x();
  const before = out(m, ids);
  PeftModel.create(m, { r: 2, loraAlpha: 4, useDora: true, initLoraWeights: false, targetModules: ['q_proj'] }, { seed: 5 });
  const l = m.getSubmodule('model.layers.0.self_attn.q_proj') as LoraLayer;
  // init_lora_weights=false gives B != 0, but m = ||W + sBA|| makes the direction change only.
  assert.ok(diff(out(m, ids), before) > 1e-3);
  const magnitude = l.magnitude('default');
  assert.deepEqual(magnitude.shape, [32]);
  // Gradients of the layer against the same formula written here, with and without the detach.
  const xin = keep(tensor(Array.from({ length: 3 * 32 }, (_, i) => Math.sin(i)), { shape: [3, 32] }));
  const gLayer = tidy(() => {
    l.train();
    const y = l.forward(xin);
    y.square().sum().backward();
    return keep(l.A('default').grad!.clone());
  });
  const manual = (detach: boolean) => tidy(() => {
    const A = l.A('default').detach().clone().requiresGrad_();
    const B = l.B('default').detach();
    const W = l.base_layer.weight.detach();
    const s = l.scaling('default');
    const full = W.add(B.matmul(A).mul(s));
    let norm = full.norm(2, 1);
    if (detach) norm = norm.detach();
    const scale = magnitude.detach().div(norm);
    const y = linear(xin, W).mul(scale).add(linear(xin, B.matmul(A)).mul(s).mul(scale));
    y.square().sum().backward();
    return keep(A.grad!.clone());
  });
  assert.ok(diff(gLayer, manual(true)) < 1e-4, 'matches the detached-norm formula');
  assert.ok(diff(gLayer, manual(false)) > 1e-4, 'and differs from the non-detached one');
  assert.ok(magnitude.grad !== null, 'the magnitude receives a gradient');
  m.dispose();
}));

test('DyLoRA: sampled ranks in training; every truncation is a valid adapter; loss degrades gracefully', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const ids = keep(randint(0, 96, [4, 12], { seed: 11 }));
  const lossAt = (peft: PeftModel, rank: number | null): number => noGrad(() => tidy(() => {
    m.eval();
    setDyloraRank(peft, rank);
    const lg = m.forward({ inputIds: ids }).logits;
    return crossEntropy(lg.narrow(1, 0, 11).reshape(-1, 96), ids.narrow(1, 1, 11).reshape(-1)).item();
  }));
  const peft = PeftModel.create(m, { r: 4, loraAlpha: 4, dylora: true, targetModules: ['c_attn', 'c_fc'] }, { seed: 1 });
  const base = lossAt(peft, null);
  const params = peft.trainableParameters();
  const ranks = new Set<number>();
  for (let step = 0; step < 60; step++) {
    tidy(() => {
      m.train();
      const lg = peft.forward({ inputIds: ids }).logits;
      ranks.add((peft.ctx.slots.LORA as { dyloraRank: number }).dyloraRank);
      crossEntropy(lg.narrow(1, 0, 11).reshape(-1, 96), ids.narrow(1, 1, 11).reshape(-1)).backward();
      noGrad(() => params.forEach((p) => { p.sub_(p.grad!.mul(0.05)); p.zeroGrad(); }));
    });
  }
  assert.deepEqual([...ranks].sort(), [1, 2, 3, 4], 'every rank is sampled');
  const losses = [1, 2, 3, 4].map((r) => lossAt(peft, r));
  for (const l of losses) assert.ok(l < base, `each truncated rank beats the base (${losses} vs ${base})`);
  assert.ok(losses[3]! <= losses[0]! + 1e-3, `full rank is at least as good as rank 1 (${losses})`);
  // A truncation is a plain lower-rank LoRA: rank-2 DyLoRA is A[:2], B[:, :2] at the full-rank scaling alpha/r.
  const l0 = m.getSubmodule('transformer.h.0.attn.c_attn') as LoraLayer;
  setDyloraRank(peft, 2);
  const d = l0.deltaWeight('default');
  const want = l0.B('default').narrow(1, 0, 2).matmul(l0.A('default').narrow(0, 0, 2)).mul(4 / 4).transpose(0, 1);
  assert.ok(diff(d, want) < 1e-6);
  // Saved at rank 2, it is an ordinary PEFT LoRA that gives the same model.
  m.eval();
  const at2 = out(m, ids);
  const dir = mkdtempSync(join(tmpdir(), 'ak-dylora-'));
  savePeftAdapters(peft, dir, { dyloraRank: 2 });
  const fresh = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  const p2 = loadPeftAdapter(fresh, dir);
  assert.equal((p2.configs.get('default') as unknown as { r: number; dylora: boolean }).r, 2);
  assert.ok(diff(out(fresh, ids), at2) < 1e-5);
  fresh.dispose();
  m.dispose();
}));
