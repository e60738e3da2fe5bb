// MoE-LoRA (MoLA / MeteoRA): a hand-computed top-k forward on a tiny Linear, top_k = E with a uniform
// router = the average of the experts' LoRA updates, the Switch load-balancing loss on a constructed
// routing, experts_per_layer (list and named shapes), gradients to experts and router, the aux loss
// through PeftModel.auxLoss() and the Trainer, a mixed batch of two MoE adapters, save -> load.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, tensor, randn, keep, crossEntropy, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, adapterDir, type Tensor, type AdapterContext } from '../src/index.js';
import { Linear } from '../src/nn/layers.js';
import { Trainer, syntheticTask } from '../src/train/index.js';
import { MoeLoraLayer, resolveMoeLora, route, loadBalancingLoss, expertsForLayer, type MoeLoraSlot } from '../src/adapters/moe-lora/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const LLAMA = join(root, 'test/fixtures/hf-ref/llama');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const ctxOf = (active: string[]): AdapterContext => ({ active, disabled: false, rows: null, version: 0, slots: {}, composition: null });
const near = (t: Tensor, want: number[], tol = 1e-5) => { const got = [...t.data()].map(Number); assert.equal(got.length, want.length); got.forEach((g, i) => assert.ok(Math.abs(g - want[i]!) < tol, `${got} vs ${want}`)); };
const dot = (a: number[], b: number[]) => a.reduce((s, v, i) => s + v * b[i]!, 0);

test('hand-computed top-k forward on a tiny Linear (plain JS reference)', () => tidy(() => {
  // W (2, 3), b; E = 3 experts of rank 1, top_k 2, alpha 2 (scaling 2).
  const W = [[1, 2, 3], [4, 5, 6]];
  const b = [0.5, -1];
  const router = [[1, 0, 0], [0, 1, 0], [0, 0, 1]];  // logits = x: the top-2 are the two largest inputs
  const A = [[[1, 0, 0]], [[0, 1, -1]], [[1, 1, 1]]];  // (E, 1, 3)
  const B = [[[2], [3]], [[-1], [1]], [[0.5], [0]]];  // (E, 2, 1)
  const xs = [[1, 0, -1], [-1, 2, 0.5]];  // token 0 -> experts 0, 1; token 1 -> experts 1, 2
  const base = new Linear(3, 2);
  noGrad(() => { base.setParameter('weight', tensor(W), false); base.setParameter('bias', tensor(b), false); });
  const layer = new MoeLoraLayer(base, ctxOf(['a']));
  layer.addAdapter('a', resolveMoeLora({ peftType: 'MOE_LORA', numExperts: 3, topK: 2, r: 1, loraAlpha: 2 }), 'fc', { seed: 0 });
  const x = tensor(xs);
  near(layer.forward(x), xs.flatMap((v) => W.map((w, o) => dot(w, v) + b[o]!)));  // B = 0: the base
  layer.loadAdapterState('a', new Map([['moe_lora_A', tensor(A)], ['moe_lora_B', tensor(B)], ['moe_router.weight', tensor(router)]]), 'fc');
  const want = xs.flatMap((v) => {
    const lg = router.map((w) => dot(w, v));
    const top = [0, 1, 2].sort((i, j) => lg[j]! - lg[i]!).slice(0, 2);
    const z = top.map((e) => Math.exp(lg[e]!));
    const g = z.map((v2) => v2 / (z[0]! + z[1]!));
    return W.map((w, o) => dot(w, v) + b[o]! + top.reduce((s, e, i) => s + g[i]! * 2 * B[e]![o]![0]! * dot(A[e]![0]!, v), 0));
  });
  // Token 0 by hand: g = (e/(e+1), 1/(e+1)); expert 0: 2·[2, 3]·1, expert 1: 2·[-1, 1]·1.
  const g0 = Math.E / (Math.E + 1);
  assert.ok(Math.abs(want[0]! - (-1.5 + g0 * 4 + (1 - g0) * -2)) < 1e-9);
  near(layer.forward(x), want);
  // A batch of (N, T, I) gives the same per-token values.
  near(layer.forward(x.reshape(1, 2, 3)), want);
  assert.throws(() => layer.merge(['a']), /cannot be merged/);
  assert.throws(() => layer.loadAdapterState('a', new Map([['moe_lora_A', tensor([[[1, 0]]])]]), 'fc'), /fc\.moe_lora_A: the adapter has shape \[1, 1, 2\] but this model needs \[3, 1, 3\]/);
  layer.dispose();
}));

test('top_k = num_experts with a uniform router equals the average of the experts\' LoRA updates', () => tidy(() => {
  const base = new Linear(5, 4);  // Linear starts uninitialised: set its weights
  noGrad(() => { base.setParameter('weight', randn([4, 5], { seed: 1 }), false); base.setParameter('bias', randn([4], { seed: 2 }), false); });
  const layer = new MoeLoraLayer(base, ctxOf(['a']));
  layer.addAdapter('a', resolveMoeLora({ peftType: 'MOE_LORA', numExperts: 4, topK: 4, r: 2, loraAlpha: 4, initLoraWeights: false }), 'fc', { seed: 7 });
  noGrad(() => layer.router('a').zero_());
  const x = tensor([[0.3, -1, 2, 0.5, 1], [1, 1, -0.5, 0, 2], [0, -2, 1, 1, -1]]);
  let want = base.forward(x);
  const A = layer.A('a');
  const B = layer.B('a');
  for (let e = 0; e < 4; e++) want = want.add(x.matmul(A.select(0, e).transpose(0, 1)).matmul(B.select(0, e).transpose(0, 1)).mul(2 / 4));  // s = 4/2, gate 1/4
  assert.ok(maxDiff(layer.forward(x), want) < 1e-5);
  layer.dispose();
}));

test('Switch load-balancing loss on a constructed routing (hand-computed)', () => tidy(() => {
  // 4 tokens, E = 3, k = 1: argmax experts 0, 0, 1, 2.
  const lg = [[2, 0, 0], [1, 0, 0], [0, 3, 1], [0, 0, 1]];
  const soft = (v: number[]) => { const z = v.map(Math.exp); const s = z.reduce((a, c) => a + c, 0); return z.map((c) => c / s); };
  const P = [0, 1, 2].map((e) => lg.reduce((s, v) => s + soft(v)[e]!, 0) / 4);
  const f1 = [2 / 4, 1 / 4, 1 / 4];
  const r1 = route(tensor(lg), 1);
  near(r1.selected, [1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]);
  near(loadBalancingLoss(r1, 1).reshape(1), [3 * dot(f1, P)]);
  // k = 2: top-2 per token {0,1|2 tie broken by topk}, so use logits without ties.
  const lg2 = [[2, 1, 0], [1, 0, 2], [0, 3, 1], [3, 0, 1]];  // top-2: {0,1}, {2,0}, {1,2}, {0,2}
  const P2 = [0, 1, 2].map((e) => lg2.reduce((s, v) => s + soft(v)[e]!, 0) / 4);
  const f2 = [3 / 8, 2 / 8, 3 / 8];
  const r2 = route(tensor(lg2), 2);
  near(loadBalancingLoss(r2, 2).reshape(1), [3 * dot(f2, P2)]);
  // Gates: the softmax over the two selected logits.
  const g = soft([2, 1]);
  near(r2.gates.select(0, 0), [g[0]!, g[1]!, 0]);
  // Perfectly balanced uniform routing gives exactly 1.
  const r3 = route(tensor([[5, 0], [0, 5]]).mul(0), 1);
  assert.ok(Math.abs(loadBalancingLoss(r3, 1).item() - 1) < 1e-6);
}));

test('experts_per_layer: a list by layer index and MoLA\'s named shapes', () => tidy(() => {
  const m = loadModel(LLAMA, { dtype: 'float32' });
  const peft = PeftModel.create(m, { peftType: 'MOE_LORA', r: 2, expertsPerLayer: [2, 3], topK: 2 }, { seed: 1 });
  const E = (p: string) => (m.getSubmodule(p) as MoeLoraLayer).A('default').shape;
  assert.deepEqual(E('model.layers.0.self_attn.q_proj'), [2, 2, 32]);
  assert.deepEqual(E('model.layers.1.self_attn.v_proj'), [3, 2, 32]);
  assert.deepEqual((m.getSubmodule('model.layers.1.self_attn.v_proj') as MoeLoraLayer).B('default').shape, [3, 16, 2]);
  // A named shape over the model's 2 layers (groups 0 and 2 of 4): triangle 8 -> 8, 4.
  peft.addAdapter('tri', { peftType: 'MOE_LORA', r: 2, numExperts: 8, expertsPerLayer: 'triangle' }, { seed: 2 });
  assert.equal((m.getSubmodule('model.layers.0.self_attn.q_proj') as MoeLoraLayer).info('tri')!.E, 8);
  assert.equal((m.getSubmodule('model.layers.1.self_attn.q_proj') as MoeLoraLayer).info('tri')!.E, 4);
  // MoLA's 32-layer allocations with E = 8: 8642, 2468, 8228 per group of 8 layers.
  const c = (s: 'triangle' | 'inverted-triangle' | 'hourglass' | 'uniform') => resolveMoeLora({ peftType: 'MOE_LORA', numExperts: 8, expertsPerLayer: s });
  const per = (s: Parameters<typeof c>[0]) => [0, 8, 16, 24].map((l) => expertsForLayer(c(s), l, 32, 'x'));
  assert.deepEqual(per('triangle'), [8, 6, 4, 2]);
  assert.deepEqual(per('inverted-triangle'), [2, 4, 6, 8]);
  assert.deepEqual(per('hourglass'), [8, 2, 2, 8]);
  assert.deepEqual(per('uniform'), [8, 8, 8, 8]);
  assert.equal(expertsForLayer(c('inverted-triangle'), 31, 32, 'x'), 8);
  // top_k is capped per layer by its expert count.
  const one = PeftModel.create(loadModel(LLAMA, { dtype: 'float32' }), { peftType: 'MOE_LORA', r: 2, expertsPerLayer: [1, 4], topK: 2 });
  assert.equal((one.model.getSubmodule('model.layers.0.self_attn.q_proj') as MoeLoraLayer).info('default')!.k, 1);
  assert.throws(() => PeftModel.create(loadModel(LLAMA, { dtype: 'float32' }), { peftType: 'MOE_LORA', expertsPerLayer: [4] }), /experts_per_layer \[4\] has no entry for layer 1/);
  assert.throws(() => resolveMoeLora({ peftType: 'MOE_LORA', expertsPerLayer: 'diamond' as never }), /experts_per_layer must be null, a list of positive integers/);
  assert.throws(() => resolveMoeLora({ peftType: 'MOE_LORA', numExperts: 2, topK: 3 }), /top_k must be at most num_experts \(2\), got 3/);
  one.dispose();
  peft.dispose();
}));

test('gradients reach every expert\'s A and B and the router; the aux loss through PeftModel.auxLoss()', () => tidy(() => {
  const m = loadModel(LLAMA, { dtype: 'float32' });
  const peft = PeftModel.create(m, { peftType: 'MOE_LORA', r: 2, numExperts: 3, topK: 2, initLoraWeights: false }, { seed: 4 });
  const x = ids();
  m.train();
  const lg = peft.forward({ inputIds: x }).logits;
  const aux = peft.auxLoss();
  assert.ok(aux, 'a training forward leaves an aux loss');
  assert.ok(aux.item() >= 1 * 0.01 - 1e-6, `E Σ f P >= 1 (Cauchy–Schwarz), times coef: ${aux.item()}`);
  assert.equal(peft.auxLoss(), null, 'auxLoss() clears what it returned');
  crossEntropy(lg.narrow(1, 0, 6).reshape(-1, lg.shape[2]!), x.narrow(1, 1, 6).reshape(-1)).backward();
  for (const [path, l] of peft.tunerLayers()) {
    const layer = l as MoeLoraLayer;
    const A = layer.A('default').grad!;
    const B = layer.B('default').grad!;
    for (let e = 0; e < 3; e++) {
      // Every expert is used by some token of 14 with top-2 of 3.
      assert.ok(A.select(0, e).abs().sum().item() > 0 && B.select(0, e).abs().sum().item() > 0, `${path} expert ${e}`);
    }
    assert.ok(layer.router('default').grad!.abs().sum().item() > 0, `${path} router`);
  }
  // The aux loss alone reaches the routers.
  for (const [, l] of peft.tunerLayers()) (l as MoeLoraLayer).router('default').zeroGrad();
  peft.forward({ inputIds: x });
  peft.auxLoss()!.backward();
  for (const [, l] of peft.tunerLayers()) assert.ok((l as MoeLoraLayer).router('default').grad!.abs().sum().item() > 0);
  // Inference forwards collect nothing; a new forward drops an unread aux loss.
  m.eval();
  peft.forward({ inputIds: x });
  assert.equal(peft.auxLoss(), null);
  assert.equal(((peft.ctx.slots.MOE_LORA as MoeLoraSlot).terms.length), 0);
  peft.dispose();
}));

test('the Trainer adds the aux loss: with zero B only the load-balancing loss moves the routers', async () => {
  const run = async (coef: number) => {
    const m = loadModel(LLAMA, { dtype: 'float32' });
    const peft = PeftModel.create(m, { peftType: 'MOE_LORA', r: 2, numExperts: 3, topK: 1, routerAuxLossCoef: coef }, { seed: 5 });
    const routers = () => peft.tunerLayers().map(([, l]) => (l as MoeLoraLayer).router('default'));
    const before = routers().map((t) => keep(t.clone()));
    const { train } = syntheticTask(96, 16, 0, true);
    const tr = new Trainer({ model: m, peft, train, collate: { padId: 0 }, config: { progress: false, logEvery: 1000, lr: 0.5, maxSteps: 1, batchSize: 8, optimizer: 'sgd', weightDecay: 0 }, log: () => {} });
    await tr.train();
    const moved = tidy(() => routers().reduce((s, t, i) => s + t.sub(before[i]!).abs().sum().item(), 0));
    before.forEach((t) => t.dispose());
    m.dispose();
    return moved;
  };
  assert.ok((await run(0.5)) > 0, 'the routers moved: the trainer added the aux loss');
  assert.equal(await run(0), 0, 'without it (and zero B) the routers get no gradient');
});

test('mixed batch of two MoE adapters (different E, k, r) equals each alone; save -> load identical', () => tidy(() => {
  const m = loadModel(LLAMA, { dtype: 'float32' });
  const peft = PeftModel.create(m, { peftType: 'MOE_LORA', r: 2, numExperts: 3, topK: 2, initLoraWeights: false }, { seed: 8, adapterName: 'a' });
  peft.addAdapter('b', { peftType: 'MOE_LORA', r: 4, numExperts: 5, topK: 1, loraAlpha: 3, initLoraWeights: false, expertsPerLayer: [5, 2] }, { seed: 9 });
  const x = ids();
  const [a, b] = ['a', 'b'];
  peft.setActive(a);
  const ya = logits(m, x);
  peft.setActive(b);
  const yb = logits(m, x);
  const base = peft.withAdaptersDisabled(() => logits(m, x));
  assert.ok(maxDiff(ya, yb) > 1e-4 && maxDiff(ya, base) > 1e-4);
  const mixed = noGrad(() => peft.forward({ inputIds: tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' }), adapterNames: [b, a, '__base__'] }).logits);
  assert.ok(maxDiff(mixed.narrow(0, 0, 1), yb.narrow(0, 0, 1)) < 1e-5, 'row with b');
  assert.ok(maxDiff(mixed.narrow(0, 1, 1), ya.narrow(0, 1, 1)) < 1e-5, 'row with a');
  assert.ok(maxDiff(mixed.narrow(0, 2, 1), base.narrow(0, 1, 1)) < 1e-5, 'base row');
  // save -> load: file keys, shapes, config fields; identical logits.
  const dir = mkdtempSync(join(tmpdir(), 'ak-moe-'));
  savePeftAdapters(peft, dir);
  const sub = adapterDir(dir, b);
  const file = readSafetensors(join(sub, 'adapter_model.safetensors'));
  const p = 'base_model.model.model.layers.1.self_attn.v_proj.';
  assert.deepEqual([file.get(p + 'moe_lora_A')?.shape, file.get(p + 'moe_lora_B')?.shape, file.get(p + 'moe_router.weight')?.shape], [[2, 4, 32], [2, 16, 4], [2, 32]]);
  assert.equal(file.size, 12);
  const cfg = JSON.parse(readFileSync(join(sub, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual([cfg.peft_type, cfg.num_experts, cfg.top_k, cfg.r, cfg.lora_alpha, cfg.experts_per_layer, cfg.router_aux_loss_coef, cfg.router_jitter], ['MOE_LORA', 5, 1, 4, 3, [5, 2], 0.01, 0]);
  const m2 = loadModel(LLAMA, { dtype: 'float32' });
  const p2 = loadPeftAdapter(m2, sub, { warn: (w) => assert.fail(`unexpected warning: ${w}`) });
  assert.equal(maxDiff(logits(m2, x), yb), 0);
  p2.dispose();
  peft.dispose();
}));
