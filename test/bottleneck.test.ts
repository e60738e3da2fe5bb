// Bottleneck adapters (AdapterHub semantics): closed-form forwards on GPT-2 and BERT computed from the
// models' own sublayers with hand-set adapter weights, NICE and its inverse, the Compacter PHM weight
// as an explicit Kronecker sum, identity at init, gradients, and the AdapterHub file both ways.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  tidy, noGrad, tensor, randn, crossEntropy, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors,
  type Tensor, type PretrainedModel, type Module,
} from '../src/index.js';
import { BottleneckSite, InvertibleAdapters, PHMLayer, SharedParameters, type BnAdapter, type BottleneckOptions } from '../src/adapters/bottleneck/index.js';
import { adapterHubJsonText } from '../src/adapters/bottleneck/format.js';
import { attentionAllowed } from '../src/nn/attention.js';
import type { Linear } from '../src/nn/layers.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-bn-'));
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const BN = (o: BottleneckOptions) => ({ peftType: 'BOTTLENECK' as const, ...o });

/** A deterministic (rows, cols) matrix of modest values, written by formula. */
function known(rows: number, cols: number, phase: number, amp = 0.3): Tensor {
  const v: number[][] = [];
  for (let i = 0; i < rows; i++) v.push(Array.from({ length: cols }, (_, j) => amp * Math.sin(1.3 * i + 0.7 * j + phase)));
  return tensor(v);
}

/** Sets the adapter's down/up Linear weights to known values; returns f(z) computed by hand. */
function setKnown(a: BnAdapter, phase: number, act: (t: Tensor) => Tensor, scaling: number): (z: Tensor) => Tensor {
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
  return (z) => act(z.matmul(Wd.transpose(0, 1)).add(bd)).matmul(Wu.transpose(0, 1)).add(bu).mul(scaling);
}

const relu = (t: Tensor) => t.relu();
const swish = (t: Tensor) => t.mul(t.sigmoid());
const site = (m: Module, path: string) => m.getSubmodule(path) as BottleneckSite;

interface GBlock { ln_1: Module & { forward(x: Tensor): Tensor }; ln_2: Module & { forward(x: Tensor): Tensor }; attn: { forward(x: Tensor, a: Tensor, c: null): Tensor }; mlp: { forward(x: Tensor): Tensor }; forward(x: Tensor, a: Tensor, c: null): Tensor }

test('GPT-2: Pfeiffer x + h + f(h + x), Houlsby x + h + f(h), parallel x + h + f(x), from the block\'s own sublayers', () => tidy(() => {
  const x = randn([2, 5, 32], { seed: 3 });
  const allowed = attentionAllowed({ attentionMask: null, batch: 2, queries: 5, keys: 5, causal: true, device: 'cpu' });
  const cases: [string, BottleneckOptions, (b: GBlock, fs: ((z: Tensor) => Tensor)[]) => Tensor, number][] = [
    ['pfeiffer', { reductionFactor: 8 }, (b, [f]) => {
      const a = x.add(b.attn.forward(b.ln_1.forward(x), allowed, null));
      const h = b.mlp.forward(b.ln_2.forward(a));
      return a.add(h).add(f!(h.add(a)));
    }, 1],
    ['houlsby', { reductionFactor: 8 }, (b, [f1, f2]) => {
      const h1 = b.attn.forward(b.ln_1.forward(x), allowed, null);
      const a = x.add(h1).add(f1!(h1));
      const h2 = b.mlp.forward(b.ln_2.forward(a));
      return a.add(h2).add(f2!(h2));
    }, 1],
    ['parallel', {}, (b, [f]) => {
      const a = x.add(b.attn.forward(b.ln_1.forward(x), allowed, null));
      const h = b.mlp.forward(b.ln_2.forward(a));
      return a.add(h).add(f!(a));  // f reads the un-normalised block stream a, scaled by 4
    }, 4],
  ];
  for (const [method, opts, expected, scaling] of cases) {
    const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
    const preset = method === 'pfeiffer' ? {} : method === 'houlsby' ? { mhAdapter: true, nonLinearity: 'swish', originalLnBefore: false } : { isParallel: true, reductionFactor: 2, initWeights: 'mam_adapter' as const, scaling: 4.0, originalLnBefore: false };
    const peft = PeftModel.create(m, BN({ ...preset, ...opts }));
    const act = method === 'houlsby' ? swish : relu;
    const fs: ((z: Tensor) => Tensor)[] = [];
    if (method === 'houlsby') fs.push(setKnown(site(m, 'transformer.h.0.attention_adapters').adapter('default'), 0.1, act, scaling));
    else assert.equal(m.getSubmodule('transformer.h.0').child('attention_adapters'), null);
    fs.push(setKnown(site(m, 'transformer.h.0.output_adapters').adapter('default'), 0.5, act, scaling));
    const block = m.getSubmodule('transformer.h.0') as unknown as GBlock;
    const got = noGrad(() => block.forward(x, allowed, null));
    const want = noGrad(() => expected(block, fs));
    assert.ok(maxDiff(got, want) < 1e-5, `${method}: ${maxDiff(got, want)}`);
    // Disabled: the plain residual block.
    const plain = noGrad(() => peft.withAdaptersDisabled(() => block.forward(x, allowed, null)));
    assert.ok(maxDiff(got, plain) > 1e-3, `${method}: the adapter changes the block`);
    peft.dispose();
  }
}));

interface BLayer {
  attention: { self: { forward(x: Tensor, a: Tensor, p: null): Tensor }; output: { dense: Linear; LayerNorm: { forward(x: Tensor): Tensor } } };
  intermediate: { forward(x: Tensor): Tensor };
  output: { dense: Linear; LayerNorm: { forward(x: Tensor): Tensor } };
  forward(x: Tensor, a: Tensor): Tensor;
}

test('BERT: Pfeiffer LN(h + f(LN(h + x)) + x), Houlsby LN(h + f(h) + x), parallel LN(f(x) + h + x)', () => tidy(() => {
  const x = randn([2, 5, 32], { seed: 4 });
  const allowed = attentionAllowed({ attentionMask: null, batch: 2, queries: 5, keys: 5, causal: false, device: 'cpu' });
  for (const method of ['pfeiffer', 'houlsby', 'parallel']) {
    const m = loadModel(join(HF, 'bert-seqcls'), { dtype: 'float32' }).eval();
    const opts: BottleneckOptions = method === 'pfeiffer' ? { reductionFactor: 8 } : method === 'houlsby' ? { mhAdapter: true, nonLinearity: 'swish', originalLnBefore: false, reductionFactor: 8 } : { isParallel: true, reductionFactor: 2, initWeights: 'mam_adapter', scaling: 4.0, originalLnBefore: false };
    const peft = PeftModel.create(m, BN(opts));
    const act = method === 'houlsby' ? swish : relu;
    const sc = method === 'parallel' ? 4 : 1;
    const L = m.getSubmodule('bert.encoder.layer.1') as unknown as BLayer;
    const f1 = method === 'houlsby' ? setKnown(site(m, 'bert.encoder.layer.1.attention.output.attention_adapters').adapter('default'), 0.2, act, sc) : null;
    const f2 = setKnown(site(m, 'bert.encoder.layer.1.output.output_adapters').adapter('default'), 0.9, act, sc);
    const got = noGrad(() => L.forward(x, allowed));
    const want = noGrad(() => {
      const ln1 = L.attention.output.LayerNorm, ln2 = L.output.LayerNorm;
      const h1 = L.attention.output.dense.forward(L.attention.self.forward(x, allowed, null));
      const a = f1 ? ln1.forward(h1.add(f1(h1)).add(x)) : ln1.forward(h1.add(x));
      const h2 = L.output.dense.forward(L.intermediate.forward(a));
      if (method === 'pfeiffer') return ln2.forward(h2.add(f2(ln2.forward(h2.add(a)))).add(a));
      if (method === 'houlsby') return ln2.forward(h2.add(f2(h2)).add(a));
      return ln2.forward(f2(a).add(h2).add(a));
    });
    assert.ok(maxDiff(got, want) < 1e-5, `${method}: ${maxDiff(got, want)}`);
    peft.dispose();
  }
}));

test('Stack of two adapters: AdapterHub\'s compose_stack (pre_forward of each adapter on the previous output), post_forward of the last', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const peft = PeftModel.create(m, BN({ reductionFactor: 8 }), { adapterName: 'a' });
  peft.addAdapter('b', BN({ reductionFactor: 8 }));
  const s = site(m, 'transformer.h.1.output_adapters');
  const fa = setKnown(s.adapter('a'), 0.3, relu, 1);
  const fb = setKnown(s.adapter('b'), 1.1, relu, 1);
  peft.setAdapter(['a', 'b']);
  const h = randn([2, 3, 32], { seed: 5 }), x = randn([2, 3, 32], { seed: 6 });
  const got = noGrad(() => s.residual(h, x, null));
  // AdapterHub's compose_stack runs pre_block (pre_forward) before every adapter of a Stack. Pfeiffer on
  // GPT-2 (no layer norm): a: pre (h + x, residual h) -> o_a = f_a(h + x) + h; b: pre (o_a + x, residual
  // o_a) -> o_b = f_b(o_a + x) + o_a; post of b: o_b + x.
  const want = noGrad(() => {
    const oa = fa(h.add(x)).add(h);
    return fb(oa.add(x)).add(oa).add(x);
  });
  assert.ok(maxDiff(got, want) < 1e-5);
  // Mixed batch: row 0 uses a, row 1 the base.
  const mixed = noGrad(() => { peft.ctx.rows = { order: ['a'], index: tensor([0, 1], { dtype: 'int64' }), names: ['a', null] }; try { return s.residual(h, x, null); } finally { peft.ctx.rows = null; } });
  const onlyA = noGrad(() => fa(h.add(x)).add(h).add(x));
  assert.ok(maxDiff(mixed.narrow(0, 0, 1), onlyA.narrow(0, 0, 1)) < 1e-5);
  assert.ok(maxDiff(mixed.narrow(0, 1, 1), h.add(x).narrow(0, 1, 1)) < 1e-6);
  peft.dispose();
}));

test('NICE invertible adapter: forward y1 = x1 + F(x2), y2 = x2 + G(y1), exact inverse; hook on the embedding output', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const peft = PeftModel.create(m, BN({ invAdapter: 'nice', invAdapterReductionFactor: 2 }));
  const inv = m.getSubmodule('transformer.invertible_adapters') as InvertibleAdapters;
  const blk = inv.block('default');
  const x = randn([2, 4, 32], { seed: 7 });
  const y = noGrad(() => blk.forward(x));
  const sub = (p: string, z: Tensor) => {
    const l0 = blk.getSubmodule(`${p}.0`) as Linear, l2 = blk.getSubmodule(`${p}.2`) as Linear;
    return z.matmul(l0.weight.transpose(0, 1)).add(l0.bias!).relu().matmul(l2.weight.transpose(0, 1)).add(l2.bias!);
  };
  const want = noGrad(() => {
    const x1 = x.narrow(-1, 0, 16), x2 = x.narrow(-1, 16, 16);
    const y1 = x1.add(sub('F', x2));
    return [y1, x2.add(sub('G', y1))] as const;
  });
  assert.ok(maxDiff(y.narrow(-1, 0, 16), want[0]) < 1e-6);
  assert.ok(maxDiff(y.narrow(-1, 16, 16), want[1]) < 1e-6);
  assert.deepEqual(blk.getSubmodule('F.0').namedParameters().map(([n, t]) => [n, t.shape]), [['weight', [8, 16]], ['bias', [8]]]);
  assert.ok(maxDiff(noGrad(() => blk.forward(y, true)), x) < 1e-5);
  const hook = m.hooks.embeddingOutput!;
  assert.ok(hook() !== null);
  peft.withAdaptersDisabled(() => assert.equal(hook(), null));
  // The model's output changes with the invertible adapter (bert init: small, not zero).
  const on = logits(peft, ids());
  const off = peft.withAdaptersDisabled(() => logits(peft, ids()));
  assert.ok(maxDiff(on, off) > 0);
  peft.deleteAdapter('default');
  assert.equal(m.hooks.embeddingOutput, undefined);
  assert.equal(m.getSubmodule('transformer').child('invertible_adapters'), null);
  peft.dispose();
}));

test('Compacter PHM: H = Σ_k kron(rule_k, W_left_k W_right_k) written out; shared rule; shapes as AdapterHub', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const peft = PeftModel.create(m, BN({ phmLayer: true, reductionFactor: 4, nonLinearity: 'gelu' }));  // compacter++, down 8
  const down = site(m, 'transformer.h.0.output_adapters').adapter('default').adapter_down.child('0') as PHMLayer;
  const shared = m.getSubmodule('transformer.shared_parameters') as SharedParameters;
  const rule = shared.child('default')!.getParameter('phm_rule');
  assert.deepEqual(rule.shape, [4, 4, 4]);
  const WL = down.getParameter('W_left'), WR = down.getParameter('W_right');
  assert.deepEqual([WL.shape, WR.shape, down.getParameter('b').shape], [[4, 8, 1], [4, 1, 2], [8]]);
  const H = noGrad(() => down.weight());
  assert.deepEqual(H.shape, [32, 8]);
  const r = rule.toArray() as number[][][], wl = WL.toArray() as number[][][], wr = WR.toArray() as number[][][];
  const h = H.toArray() as number[][];
  let worst = 0;
  for (let i = 0; i < 32; i++) for (let j = 0; j < 8; j++) {
    let s = 0;
    for (let k = 0; k < 4; k++) {
      const [p, u] = [Math.floor(i / 8), i % 8];
      const [q, v] = [Math.floor(j / 2), j % 2];
      s += r[k]![p]![q]! * wl[k]![u]![0]! * wr[k]![0]![v]!;
    }
    worst = Math.max(worst, Math.abs(s - h[i]![j]!));
  }
  assert.ok(worst < 1e-9, `kron: ${worst}`);
  // y = x H + b
  const x = randn([3, 32], { seed: 8 });
  assert.ok(maxDiff(noGrad(() => down.forward(x)), noGrad(() => x.matmul(H).add(down.getParameter('b')))) < 1e-6);
  // AdapterHub init: xavier_normal on W slices (std sqrt(2/(fan_in+fan_out))), rule N(0, 1e-4).
  assert.ok(tidy(() => rule.abs().max().item()) < 1e-3);
  peft.dispose();
}));

test('initialisation: mam_adapter (parallel) is exactly the base model; bert init is small but not zero', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' }).eval();
  const base = logits(m, ids());
  const peft = PeftModel.create(m, BN({ isParallel: true, reductionFactor: 2, initWeights: 'mam_adapter', scaling: 4.0, originalLnBefore: false }));
  assert.ok(m.getSubmodule('model.layers.1').child('output_adapters') instanceof BottleneckSite);
  assert.equal(maxDiff(logits(peft, ids()), base), 0);
  peft.addAdapter('seq', BN({ mhAdapter: true, leaveOut: [0] }));
  assert.equal(m.getSubmodule('model.layers.0').child('attention_adapters'), null);
  peft.setAdapter('seq');
  const d = maxDiff(logits(peft, ids()), base);
  assert.ok(d > 0 && d < 0.5, `bert init: ${d}`);
  // Gradients reach only the active adapter's tensors.
  m.train();
  const out = peft.forward({ inputIds: ids() }).logits;
  crossEntropy(out.reshape(-1, out.shape[2]!), ids().reshape(-1)).backward();
  for (const [n, t] of m.namedParameters()) {
    const own = n.includes('.adapters.seq.');
    assert.equal(t.grad !== null, own, `${n}: grad ${t.grad !== null}`);
  }
  m.eval();
  assert.throws(() => peft.merge(), /cannot be merged|not mergeable/);
  peft.dispose();
}));

test('AdapterHub file: keys, JSON and a round trip (GPT-2 Houlsby+inv; BERT seq-cls with the head; Compacter)', () => tidy(() => {
  // GPT-2
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const peft = PeftModel.create(m, BN({ mhAdapter: true, nonLinearity: 'swish', originalLnBefore: false, invAdapter: 'nice', invAdapterReductionFactor: 2, lnBefore: true, scaling: 'learned' }), { adapterName: 'a', seed: 3 });
  noGrad(() => { for (const t of peft.parts().flatMap(([, p]) => p.adapterParameters('a'))) t.add_(0.05); });
  const want = logits(peft, ids());
  const dir = tmp();
  savePeftAdapters(peft, dir);
  const out = join(dir, 'a');
  assert.ok(existsSync(join(out, 'adapter.safetensors')) && existsSync(join(out, 'adapter_config.json')));
  const w = readSafetensors(join(out, 'adapter.safetensors'));
  const keys = [...w.keys()].sort();
  for (const k of [
    'transformer.h.0.output_adapters.adapters.a.adapter_down.1.weight', 'transformer.h.0.output_adapters.adapters.a.adapter_down.0.weight',
    'transformer.h.0.output_adapters.adapters.a.adapter_norm_before.weight', 'transformer.h.1.attention_adapters.adapters.a.adapter_up.bias',
    'transformer.h.1.attention_adapters.adapters.a.scaling', 'transformer.invertible_adapters.a.F.0.weight', 'transformer.invertible_adapters.a.G.2.bias',
  ]) assert.ok(keys.includes(k), `missing ${k} in ${keys.join(', ')}`);
  assert.deepEqual(w.get('transformer.h.0.output_adapters.adapters.a.adapter_down.1.weight')!.shape, [2, 32]);
  assert.equal(keys.length, 2 * 2 * 9 + 8);  // per adapter: norm_before (2) + its alias adapter_down.0 (2) + down.1 (2) + up (2) + scaling
  const json = JSON.parse(readFileSync(join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual(Object.keys(json).sort(), ['config', 'hidden_size', 'model_class', 'model_name', 'model_type', 'name', 'version']);
  assert.equal(json.version, 'adapters.1.2.0');
  assert.equal(json.name, 'a');
  assert.equal(json.hidden_size, 32);
  const cfg = json.config as Record<string, unknown>;
  assert.equal(Object.keys(cfg).length, 33);
  assert.equal(cfg.architecture, undefined);
  assert.equal(cfg.non_linearity, 'swish');
  assert.equal(cfg.inv_adapter, 'nice');
  assert.match(adapterHubJsonText({ config: { scaling: 4, dropout: 0 } }), /"scaling": 4\.0,\n {4}"dropout": 0\.0|"dropout": 0\.0,\n {4}"scaling": 4\.0/);
  // Load under another name onto a fresh model: identical logits.
  const m2 = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const p2 = loadPeftAdapter(m2, out, { adapterName: 'other' });
  assert.ok(m2.getSubmodule('transformer.h.0.output_adapters.adapters').child('other'));
  assert.equal(maxDiff(logits(p2, ids()), want), 0);
  peft.dispose();
  p2.dispose();

  // BERT sequence classification: the classifier head is saved with the adapter; keys without the site segment.
  const b = loadModel(join(HF, 'bert-seqcls'), { dtype: 'float32' }).eval();
  const pb = PeftModel.create(b, BN({ taskType: 'SEQ_CLS', mhAdapter: true }));
  noGrad(() => { for (const t of pb.parts().flatMap(([, p]) => p.adapterParameters('default'))) t.add_(0.03); });
  const wantB = logits(pb, ids());
  const dirB = tmp();
  savePeftAdapters(pb, dirB);
  const kb = [...readSafetensors(join(dirB, 'adapter.safetensors')).keys()];
  assert.ok(kb.includes('bert.encoder.layer.0.output.adapters.default.adapter_down.0.weight'), kb.join(', '));
  assert.ok(kb.includes('bert.encoder.layer.1.attention.output.adapters.default.adapter_up.weight'));
  assert.ok(kb.some((k) => k.startsWith('classifier.')), kb.join(', '));
  assert.ok(!kb.some((k) => k.includes('_adapters.')));
  const b2 = loadModel(join(HF, 'bert-seqcls'), { dtype: 'float32' }).eval();
  const pb2 = loadPeftAdapter(b2, dirB);
  assert.equal(maxDiff(logits(pb2, ids()), wantB), 0);
  pb.dispose();
  pb2.dispose();

  // Compacter (houlsby placement) with the shared rule.
  const c = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const pc = PeftModel.create(c, BN({ mhAdapter: true, originalLnBefore: false, phmLayer: true, reductionFactor: 4, nonLinearity: 'gelu' }));
  const wantC = logits(pc, ids());
  const dirC = tmp();
  savePeftAdapters(pc, dirC);
  const kc = [...readSafetensors(join(dirC, 'adapter.safetensors')).keys()];
  for (const k of ['transformer.shared_parameters.default.phm_rule', 'transformer.h.0.attention_adapters.adapters.default.adapter_down.0.W_left', 'transformer.h.0.output_adapters.adapters.default.adapter_up.W_right', 'transformer.h.1.output_adapters.adapters.default.adapter_up.b']) {
    assert.ok(kc.includes(k), `missing ${k}`);
  }
  const c2 = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const pc2 = loadPeftAdapter(c2, dirC);
  assert.equal(maxDiff(logits(pc2, ids()), wantC), 0);
  pc.dispose();
  pc2.dispose();
}));

test('config: presets by name, AdapterHub names as aliases, refusals name the value', async () => {
  const { methodByName } = await import('../src/index.js');
  const h = methodByName('houlsby', true);
  assert.equal(h.method.peftType, 'BOTTLENECK');
  assert.equal(h.preset.mhAdapter, true);
  assert.equal(methodByName('compacter++', true).preset.phmLayer, true);
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }) as PretrainedModel;
  assert.throws(() => PeftModel.create(m, BN({ invAdapter: 'glow' })), /inv_adapter.*GLOW/);
  assert.throws(() => PeftModel.create(m, BN({ reductionFactr: 8 } as never)), /did you mean "reductionFactor"/);
  assert.throws(() => PeftModel.create(m, BN({ leaveOut: [0, 1] })), /leave_out/);
  assert.throws(() => PeftModel.create(m, BN({ phmLayer: true, reductionFactor: 32 })), /phm_dim 4 must divide/);
  m.dispose();
});

test('bf16 base: float32 adapters, activations keep their dtype; mixed batch rows equal single-adapter runs; bare-model keys map', () => tidy(() => {
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'bfloat16' }).eval();
  const peft = PeftModel.create(m, BN({ reductionFactor: 8, invAdapter: 'nice', invAdapterReductionFactor: 2 }), { adapterName: 'a' });
  peft.addAdapter('b', BN({ mhAdapter: true, nonLinearity: 'swish', originalLnBefore: false }), { seed: 1 });
  assert.equal(site(m, 'transformer.h.0.output_adapters').adapter('a').adapter_up.getParameter('weight').dtype, 'float32');
  const x = ids();
  peft.setAdapter('a');
  const la = logits(peft, x);
  assert.equal(la.dtype, 'bfloat16');
  peft.setAdapter('b');
  const lb = logits(peft, x);
  const base = peft.withAdaptersDisabled(() => logits(peft, x));
  const mixed = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['b', '__base__'] }).logits);
  assert.equal(maxDiff(mixed.narrow(0, 0, 1), lb.narrow(0, 0, 1)), 0);
  assert.equal(maxDiff(mixed.narrow(0, 1, 1), base.narrow(0, 1, 1)), 0);
  const mixed2 = noGrad(() => peft.forward({ inputIds: x, adapterNames: ['b', 'a'] }).logits);
  assert.equal(maxDiff(mixed2.narrow(0, 1, 1), la.narrow(0, 1, 1)), 0);
  peft.dispose();
}));

test('file keys: BERT site segment dropped and restored; a bare base model\'s keys get the prefix; legacy names', async () => {
  const { ADAPTERHUB_FORMAT: f } = await import('../src/adapters/bottleneck/format.js');
  const b = loadModel(join(HF, 'bert-seqcls'), { dtype: 'float32' });
  const g = loadModel(join(HF, 'gpt2'), { dtype: 'float32' });
  assert.equal(f.fileKey('bert.encoder.layer.0.attention.output.attention_adapters', 'adapters.x.adapter_up.weight', b), 'bert.encoder.layer.0.attention.output.adapters.x.adapter_up.weight');
  assert.equal(f.fileKey('bert.encoder.layer.0.output.output_adapters', 'adapters.x.adapter_up.weight', b), 'bert.encoder.layer.0.output.adapters.x.adapter_up.weight');
  assert.equal(f.modelKey('encoder.layer.0.attention.output.adapters.x.adapter_up.weight', b), 'bert.encoder.layer.0.attention.output.attention_adapters.adapters.x.adapter_up.weight');
  assert.equal(f.modelKey('bert.encoder.layer.1.output.adapters.x.adapter_up.weight', b), 'bert.encoder.layer.1.output.output_adapters.adapters.x.adapter_up.weight');
  assert.equal(f.modelKey('h.1.output_adapters.adapters.x.adapter_up.weight', g), 'transformer.h.1.output_adapters.adapters.x.adapter_up.weight');
  assert.equal(f.modelKey('transformer.h.1.output_adapters.adapters.x.adapter_up.weight', g), 'transformer.h.1.output_adapters.adapters.x.adapter_up.weight');
  assert.equal(f.modelKey('bert.encoder.layer.0.output.layer_text_task_adapters.x.adapter_up.weight', b), 'bert.encoder.layer.0.output.output_adapters.adapters.x.adapter_up.weight');
  assert.equal(f.modelKey('shared_parameters.x.phm_rule', g), 'transformer.shared_parameters.x.phm_rule');
  assert.equal(f.fileKey('score', 'modules_to_save.weight', g), 'score.modules_to_save.weight');
  assert.equal(f.modelKey('score.modules_to_save.weight', g), 'score.modules_to_save.weight');
  b.dispose();
  g.dispose();
});

test('gating, channel scaling, ln_after, stochastic depth, dropout: train step runs, gate and scaling get gradients; eval is deterministic', () => tidy(() => {
  const m = loadModel(join(HF, 'bert-seqcls'), { dtype: 'float32' });
  const peft = PeftModel.create(m, BN({ useGating: true, scaling: 'channel', lnAfter: true, adapterResidualBeforeLn: true, stochasticDepth: 0.5, dropout: 0.1, nonLinearity: 'LeakyReLU', taskType: 'SEQ_CLS' }));
  m.train();
  const out = peft.forward({ inputIds: ids() }).logits;
  out.square().sum().backward();
  const a = site(m, 'bert.encoder.layer.0.output.output_adapters').adapter('default');
  assert.deepEqual(a.getParameter('scaling').shape, [32]);
  assert.ok(a.getParameter('gate.weight').grad !== null && a.getParameter('scaling').grad !== null);
  assert.ok(a.getParameter('adapter_norm_after.weight').grad !== null);
  m.eval();
  assert.equal(maxDiff(logits(peft, ids()), logits(peft, ids())), 0);
  peft.dispose();
}));

test('KV-cached generation equals recomputing the whole sequence (sites and the invertible adapter act per position)', async () => {
  const { generate } = await import('../src/index.js');
  const m = loadModel(join(HF, 'gpt2'), { dtype: 'float32' }).eval();
  const peft = PeftModel.create(m, BN({ mhAdapter: true, invAdapter: 'nice', invAdapterReductionFactor: 2, nonLinearity: 'swish', originalLnBefore: false }));
  noGrad(() => { for (const t of peft.parts().flatMap(([, p]) => p.adapterParameters('default'))) t.add_(0.2); });
  const x = tensor([[61, 66, 22, 13]], { dtype: 'int64' });
  const cached = await generate(m, x, null, { maxNewTokens: 8 });
  const full = await generate(m, x, null, { maxNewTokens: 8, noCache: true });
  assert.deepEqual(cached, full);
  peft.dispose();
});
