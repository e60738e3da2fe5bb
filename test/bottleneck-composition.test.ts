// Bottleneck composition with AdapterHub's semantics (compose_stack / _split / _batch_split / _average /
// _parallel / _fuse) and AdapterFusion (BertFusion, its file): each block against a hand-written
// composition of single-adapter forwards on GPT-2 (hidden 32), with hand-set adapter weights.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, cat, tensor, randn, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, type Tensor } from '../src/index.js';
import { Stack, Fuse, Split, BatchSplit, Parallel, Average } from '../src/adapters/composition.js';
import {
  BottleneckSite, addAdapterFusion, trainAdapterFusion, saveAdapterFusion, loadAdapterFusion, deleteAdapterFusion, fusionRegularizationLoss,
  type BnAdapter, type BottleneckOptions, type BertFusion,
} from '../src/adapters/bottleneck/index.js';
import type { Linear } from '../src/nn/layers.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-bnc-'));
const ids = () => tensor([[61, 66, 22, 13, 70, 33], [5, 9, 17, 33, 2, 8]], { dtype: 'int64' });
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const BN = (o: BottleneckOptions = {}) => ({ peftType: 'BOTTLENECK' as const, reductionFactor: 8, ...o });
const SITE = 'transformer.h.1.output_adapters';

function known(rows: number, cols: number, phase: number, amp = 0.3): Tensor {
  const v: number[][] = [];
  for (let i = 0; i < rows; i++) v.push(Array.from({ length: cols }, (_, j) => amp * Math.sin(1.3 * i + 0.7 * j + phase)));
  return tensor(v);
}

/** Known down/up weights; returns f(z) = up(relu(down(z))) (Pfeiffer: scaling 1, no dropout). */
function setKnown(a: BnAdapter, phase: number): (z: Tensor) => Tensor {
  const down = a.adapter_down.child('0') as Linear;
  const up = a.adapter_up as Linear;
  const [d, c] = down.weight.shape as [number, number];
  const Wd = known(d, c, phase), bd = known(1, d, phase + 1, 0.1).view(d);
  const Wu = known(c, d, phase + 2), bu = known(1, c, phase + 3, 0.1).view(c);
  noGrad(() => {
    down.setParameter('weight', Wd.clone(), true);
    down.setParameter('bias', bd.clone(), true);
    up.setParameter('weight', Wu.clone(), true);
    up.setParameter('bias', bu.clone(), true);
  });
  return (z) => z.matmul(Wd.transpose(0, 1)).add(bd).relu().matmul(Wu.transpose(0, 1)).add(bu);
}

/** GPT-2 with Pfeiffer adapters a, b, c (every layer), known weights at SITE. */
function setup() {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const peft = PeftModel.create(m, BN(), { adapterName: 'a' });
  peft.addAdapter('b', BN(), { seed: 1 });
  peft.addAdapter('c', BN(), { seed: 2 });
  const s = m.getSubmodule(SITE) as unknown as BottleneckSite;
  const f = { a: setKnown(s.adapter('a'), 0.3), b: setKnown(s.adapter('b'), 1.1), c: setKnown(s.adapter('c'), 2.3) };
  // Pfeiffer on GPT-2 (no layer norm at the site): pre (h + x, residual h), adapter o = f(h + x) + h, post o + x.
  const o = (n: 'a' | 'b' | 'c', h: Tensor, x: Tensor) => f[n](h.add(x)).add(h);
  return { m, peft, s, f, o };
}

const h = () => randn([2, 5, 32], { seed: 5 });
const x = () => randn([2, 5, 32], { seed: 6 });

test('site blocks against hand-written compositions (Stack, nested Stack, Split, Average, BatchSplit, Fuse errors)', () => tidy(() => {
  const { peft, s, o } = setup();
  const H = h(), X = x();
  const run = (setupArg: Parameters<PeftModel['setActive']>[0]) => { peft.setActive(setupArg); return noGrad(() => s.residual(H, X, null)); };
  const alone = (n: 'a' | 'b' | 'c') => noGrad(() => o(n, H, X).add(X));
  const cases: [string, Parameters<PeftModel['setActive']>[0], () => Tensor][] = [
    // compose_stack: pre_forward before every adapter, on the previous output.
    ['Stack(a, b)', Stack('a', 'b'), () => { const oa = o('a', H, X); return o('b', oa, X).add(X); }],
    // compose_split: positions [0, 3) through a, [3, 5) through b (the first adapter's pre_forward for both).
    ['Split(a, b, [3, 2])', Split('a', 'b', { splits: [3, 2] }), () => noGrad(() => tensorCat(alone('a').narrow(1, 0, 3), alone('b').narrow(1, 3, 2)))],
    // compose_average: torch.mean(stack(outputs) * w, 0) = Σ w_k o_k / K over the adapter outputs (residual included).
    ['Average(a, b, [0.7, 0.3])', Average('a', 'b', { weights: [0.7, 0.3] }), () => o('a', H, X).mul(0.7).add(o('b', H, X).mul(0.3)).div(2).add(X)],
    ['Average(a, b, c)', Average('a', 'b', 'c'), () => o('a', H, X).add(o('b', H, X)).add(o('c', H, X)).div(3).div(3).add(X)],
    ['Stack(a, Average(b, c))', Stack('a', Average('b', 'c')), () => { const oa = o('a', H, X); return o('b', oa, X).add(o('c', oa, X)).mul(0.5).div(2).add(X); }],
    // Nested BatchSplit: row 0 through b, row 1 through c, after a on both.
    ['Stack(a, BatchSplit(b, c, [1, 1]))', Stack('a', BatchSplit('b', 'c', { batchSizes: [1, 1] })), () => {
      const oa = o('a', H, X);
      return tensorCat(o('b', oa, X).add(X).narrow(0, 0, 1), o('c', oa, X).add(X).narrow(0, 1, 1), 0);
    }],
    // AdapterHub runs pre_forward twice on the Stack's positions: compose_split's pre_block (first() = a:
    // hs = h + x, residual h), then compose_stack's pre_block for a on that (hs = h + 2x, residual h + x).
    ['Split(Stack(a, b), c, [1, 4])', Split(Stack('a', 'b'), 'c', { splits: [1, 4] }), () => {
      const ab = o('b', o('a', H.add(X), X), X).add(X);
      return tensorCat(ab.narrow(1, 0, 1), alone('c').narrow(1, 1, 4));
    }],
  ];
  for (const [name, su, want] of cases) {
    const got = run(su);
    const d = maxDiff(got, noGrad(want));
    assert.ok(d < 1e-5, `${name}: ${d}`);
  }
  // A Split's sizes must add up to the sequence length; a Fuse needs its fusion layer.
  peft.setActive(Split('a', 'b', { splits: [2, 2] }));
  assert.throws(() => s.residual(H, X, null), /sequence length 5, which is not the sum of the splits \(4\)/);
  peft.setActive(Fuse('a', 'b'));
  assert.throws(() => s.residual(H, X, null), /no AdapterFusion "a,b".*addAdapterFusion/);
  // Nesting errors are clear, at setActive (the site repeats AdapterHub's check_composition_valid).
  assert.throws(() => peft.setActive(Fuse('a', Fuse('b', 'c'))), /Fuse cannot contain Fuse/);
  assert.throws(() => peft.setActive(Stack('a', Stack('b', 'c'))), /Stack cannot contain Stack/);  // AdapterHub's ALLOWED_NESTINGS
  assert.throws(() => peft.setActive(Split('a', Split('b', Average('a', 'c'), { splits: 1 }), { splits: 1 })), /too deep/);
  assert.throws(() => peft.setActive(Stack('a', Parallel('b', 'c'))), /does not support Parallel/);
  assert.throws(() => peft.setActive(Average('a', Fuse('b', 'c'))), /Average cannot contain Fuse/);
  peft.dispose();
}));

function tensorCat(a: Tensor, b: Tensor, dim = 1): Tensor {
  return noGrad(() => cat([a, b], dim));
}

test('top-level Parallel and BatchSplit (mixed batches): each output equals its adapter alone', () => tidy(() => {
  const { peft } = setup();
  const one = (n: string) => { peft.setAdapter(n); return noGrad(() => peft.forward({ inputIds: ids() }).logits); };
  const A = one('a'), B = one('b');
  peft.setActive(Parallel('a', 'b'));
  const par = noGrad(() => peft.forward({ inputIds: ids() }).logits);
  assert.equal(par.shape[0], 4);
  assert.ok(maxDiff(par.narrow(0, 0, 2), A) < 1e-5);
  assert.ok(maxDiff(par.narrow(0, 2, 2), B) < 1e-5);
  peft.setActive(BatchSplit('a', 'b', { batchSizes: [1, 1] }));
  const bs = noGrad(() => peft.forward({ inputIds: ids() }).logits);
  assert.ok(maxDiff(bs.narrow(0, 0, 1), A.narrow(0, 0, 1)) < 1e-5);
  assert.ok(maxDiff(bs.narrow(0, 1, 1), B.narrow(0, 1, 1)) < 1e-5);
  peft.dispose();
}));

test('Fuse: uniform attention (query/key zero) gives the mean of the up-projections through the value matrix', () => tidy(() => {
  const { m, peft, s, f } = setup();
  addAdapterFusion(peft, Fuse('a', 'b'));
  const fl = s.fusion('a,b')!;
  assert.ok(fl.query && fl.key && fl.value && !fl.value.bias && !fl.dense);
  // value_initialized: 1 on the diagonal, 1e-6 elsewhere.
  const V = fl.value.weight;
  assert.equal(noGrad(() => V.narrow(0, 3, 1).narrow(1, 3, 1).item()), 1);
  assert.ok(Math.abs(noGrad(() => V.narrow(0, 3, 1).narrow(1, 4, 1).item()) - 1e-6) < 1e-12);
  const zero = (l: Linear) => noGrad(() => { l.weight.zero_(); l.bias?.zero_(); });
  zero(fl.query!); zero(fl.key!);
  const H = h(), X = x();
  peft.setActive(Fuse('a', 'b'));
  const got = noGrad(() => s.residual(H, X, null));
  // Scores all 0 -> p = 1/2 each; context = V·(u_a + u_b)/2 with V = (1 - 1e-6) I + 1e-6 J, then + residual h, post + x.
  const want = noGrad(() => {
    const u = f.a(H.add(X)).add(f.b(H.add(X))).div(2);
    return u.mul(1 - 1e-6).add(u.sum(-1, true).mul(1e-6)).add(H).add(X);
  });
  assert.ok(maxDiff(got, want) < 1e-5, `value_initialized: ${maxDiff(got, want)}`);
  // An exact identity value: the plain mean of the adapters' up-projections.
  noGrad(() => { V.zero_(); for (let i = 0; i < 32; i++) V.narrow(0, i, 1).narrow(1, i, 1).fill_(1); });
  const got2 = noGrad(() => s.residual(H, X, null));
  const want2 = noGrad(() => f.a(H.add(X)).add(f.b(H.add(X))).div(2).add(H).add(X));
  assert.ok(maxDiff(got2, want2) < 1e-5);
  // Static fusion: no value matrix; same uniform mean.
  addAdapterFusion(peft, Fuse('a', 'c'), 'static');
  const st = s.fusion('a,c')!;
  assert.ok(!st.value && st.query && st.key);
  zero(st.query!); zero(st.key!);
  peft.setActive(Fuse('a', 'c'));
  assert.ok(maxDiff(noGrad(() => s.residual(H, X, null)), noGrad(() => f.a(H.add(X)).add(f.c(H.add(X))).div(2).add(H).add(X))) < 1e-5);
  // A real attention (bert-initialised query/key): softmax over the adapters, written out.
  const fq = setKnownFusion(fl);
  peft.setActive(Fuse('a', 'b'));
  const got3 = noGrad(() => s.residual(H, X, null));
  const want3 = noGrad(() => {
    const z = H.add(X);
    const ua = f.a(z), ub = f.b(z);
    const q = fq.q(z), ka = fq.k(ua), kb = fq.k(ub);
    const sa = q.mul(ka).sum(-1, true), sb = q.mul(kb).sum(-1, true);
    const mx = sa.maximum(sb);
    const ea = sa.sub(mx).exp(), eb = sb.sub(mx).exp();
    const pa = ea.div(ea.add(eb)), pb = eb.div(ea.add(eb));
    return pa.mul(fq.v(ua)).add(pb.mul(fq.v(ub))).add(H).add(X);
  });
  assert.ok(maxDiff(got3, want3) < 1e-5, `attention: ${maxDiff(got3, want3)}`);
  deleteAdapterFusion(peft, 'a,c');
  assert.equal(s.fusion('a,c'), null);
  void m;
  peft.dispose();
}));

function setKnownFusion(fl: BertFusion) {
  const W = (p: number) => known(32, 32, p, 0.2);
  const Wq = W(0.1), bq = known(1, 32, 0.5, 0.1).view(32), Wk = W(0.9), bk = known(1, 32, 1.5, 0.1).view(32), Wv = W(1.7);
  noGrad(() => {
    fl.query!.setParameter('weight', Wq.clone(), false); fl.query!.setParameter('bias', bq.clone(), false);
    fl.key!.setParameter('weight', Wk.clone(), false); fl.key!.setParameter('bias', bk.clone(), false);
    fl.value!.setParameter('weight', Wv.clone(), false);
  });
  return { q: (t: Tensor) => t.matmul(Wq.transpose(0, 1)).add(bq), k: (t: Tensor) => t.matmul(Wk.transpose(0, 1)).add(bk), v: (t: Tensor) => t.matmul(Wv.transpose(0, 1)) };
}

test('trainAdapterFusion: only the fusion trains; gradients reach only it; regularisation; save -> load identical, AdapterHub names', () => tidy(() => {
  const { m, peft } = setup();
  addAdapterFusion(peft, Fuse('a', 'b'));
  assert.ok(peft.trainableParameters().every((t) => !fusionTensors(m, 'a,b').includes(t)), 'a new fusion starts frozen');
  trainAdapterFusion(peft, Fuse('a', 'b'));
  assert.equal(m.training, true);
  const fusion = fusionTensors(m, 'a,b');
  const trainable = peft.trainableParameters();
  assert.equal(trainable.length, fusion.length);
  assert.ok(trainable.every((t) => fusion.includes(t)));
  assert.equal(fusion.length, m.numLayers * 5);  // output sites only (Pfeiffer): query w/b, key w/b, value w
  const loss = peft.forward({ inputIds: ids() }).logits.pow(2).mean();
  const reg = fusionRegularizationLoss(peft);
  assert.ok(reg !== null);
  loss.add(reg!).backward();
  for (const t of fusion) assert.ok(t.grad !== null, 'every fusion tensor gets a gradient');
  for (const [, part] of peft.parts()) for (const n of ['a', 'b', 'c']) for (const t of part.adapterParameters(n)) assert.equal(t.grad, null);
  // Perturb, save, load onto a fresh model with the same adapters: identical outputs.
  noGrad(() => { for (const t of fusion) t.add_(randn(t.shape, { seed: 11 }).mul(0.05)); });
  m.eval();
  const want = noGrad(() => peft.forward({ inputIds: ids() }).logits);
  const dir = tmp(), fdir = join(dir, 'fusion');
  savePeftAdapters(peft, dir, { adapters: ['a', 'b'] });
  saveAdapterFusion(peft, 'a,b', fdir);
  assert.ok(existsSync(join(fdir, 'adapter_fusion_config.json')) && existsSync(join(fdir, 'model_adapter_fusion.safetensors')));
  const json = JSON.parse(readFileSync(join(fdir, 'adapter_fusion_config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(Object.keys(json), ['adapter_names', 'config', 'hidden_size', 'model_class', 'model_name', 'model_type', 'name', 'version']);
  assert.deepEqual(json.adapter_names, ['a', 'b']);
  assert.equal(json.name, 'a,b');
  assert.deepEqual(json.config, { dropout_prob: null, key: true, query: true, query_before_ln: false, regularization: true, residual_before: false, temperature: false, value: true, value_before_softmax: true, value_initialized: true });
  const keys = [...readSafetensors(join(fdir, 'model_adapter_fusion.safetensors')).keys()].sort();
  assert.deepEqual(keys.filter((k) => k.startsWith('transformer.h.0.')), [
    'transformer.h.0.output_adapters.adapter_fusion_layer.a,b.key.bias', 'transformer.h.0.output_adapters.adapter_fusion_layer.a,b.key.weight',
    'transformer.h.0.output_adapters.adapter_fusion_layer.a,b.query.bias', 'transformer.h.0.output_adapters.adapter_fusion_layer.a,b.query.weight',
    'transformer.h.0.output_adapters.adapter_fusion_layer.a,b.value.weight',
  ]);
  const m2 = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const p2 = loadPeftAdapter(m2, join(dir, 'a'), { adapterName: 'a' });
  loadPeftAdapter(p2, join(dir, 'b'), { adapterName: 'b' });
  assert.equal(loadAdapterFusion(p2, fdir), 'a,b');
  assert.equal(maxDiff(noGrad(() => p2.forward({ inputIds: ids() }).logits), want), 0);
  // A file for another fusion name loads under load_as.
  peft.dispose();
  p2.dispose();
}));

function fusionTensors(m: { namedModules(): [string, unknown][] }, name: string): Tensor[] {
  const out: Tensor[] = [];
  for (const [, mod] of m.namedModules()) if (mod instanceof BottleneckSite && mod.fusion(name)) out.push(...mod.fusion(name)!.tensors());
  return out;
}
