// MixDA-style domain gate: a gate forced one-hot gives exactly that LoRA domain adapter alone;
// per-example gates (softmax rows); gradients reach the gate only; save -> load identical (the gate
// alone is saved, the domain adapters must be present); clear errors; deleting the gate unhooks it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { tidy, noGrad, keep, tensor, randn, crossEntropy, loadModel, PeftModel, savePeftAdapters, loadPeftAdapter, readSafetensors, type Tensor, type PretrainedModel } from '../src/index.js';
import { LoraLayer } from '../src/adapters/lora/layer.js';
import { checkpointedBackward } from '../src/train/checkpointing.js';
const prepare = (p: PeftModel) => p.prepareForward();
import { MixdaGate, GATE_PATH } from '../src/adapters/mixda/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const HF = join(root, 'test/fixtures/hf-ref');
const ids = () => tensor([[61, 66, 22, 13, 70, 33, 71], [5, 9, 17, 33, 2, 8, 90]], { dtype: 'int64' });
const logits = (m: { forward(i: { inputIds: Tensor }): { logits: Tensor } }, x: Tensor) => noGrad(() => m.forward({ inputIds: x }).logits);
const maxDiff = (a: Tensor, b: Tensor) => tidy(() => a.sub(b).abs().max().item());
const tmp = () => mkdtempSync(join(tmpdir(), 'ak-mixda-'));

/** Two LoRA domain adapters on different (overlapping) targets, with non-zero B. */
function withDomains(m: PretrainedModel): PeftModel {
  const peft = PeftModel.create(m, { peftType: 'LORA', r: 2, loraAlpha: 4, targetModules: ['q_proj', 'v_proj'] }, { adapterName: 'law', seed: 1 });
  peft.addAdapter('med', { peftType: 'LORA', r: 4, loraAlpha: 4, targetModules: ['v_proj', 'o_proj', 'down_proj'] }, { seed: 2 });
  noGrad(() => peft.tunerLayers().forEach(([, l], i) => {
    for (const n of ['law', 'med']) if (l.hasAdapter(n)) (l as LoraLayer).B(n).add_(randn((l as LoraLayer).B(n).shape, { seed: 50 + i }).mul(0.5));
  }));
  m.eval();
  return peft;
}

function setGate(peft: PeftModel, bias: number[]): void {
  const g = peft.model.getSubmodule(GATE_PATH) as MixdaGate;
  noGrad(() => {
    g.linear('gate').weight.zero_();
    g.linear('gate').bias!.copy_(tensor(bias));
  });
}

test('a one-hot gate gives exactly that domain adapter alone; gates are per example', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const x = ids();
  const peft = withDomains(m);
  peft.setAdapter('law');
  const law = logits(m, x);
  peft.setAdapter('med');
  const med = logits(m, x);
  const base = peft.withAdaptersDisabled(() => logits(m, x));
  assert.ok(maxDiff(law, med) > 1e-3 && maxDiff(law, base) > 1e-3);
  peft.addAdapter('gate', { peftType: 'MIXDA', domainAdapters: ['law', 'med'] }, { seed: 3 });
  peft.setAdapter('gate');
  setGate(peft, [100, -100]);
  assert.ok(maxDiff(peft.forward({ inputIds: x }).logits, law) < 1e-5, 'gate (1, 0) = law alone');
  setGate(peft, [-100, 100]);
  assert.ok(maxDiff(logits(m, x), med) < 1e-5, 'gate (0, 1) = med alone');
  assert.ok(maxDiff(peft.withAdaptersDisabled(() => logits(m, x)), base) < 1e-6, 'disabled = the base');
  // A random gate: one softmax row per example, different rows for different inputs.
  setGate(peft, [0, 0]);
  noGrad(() => (peft.model.getSubmodule(GATE_PATH) as MixdaGate).linear('gate').weight.copy_(randn([2, 32], { seed: 9 }).mul(30)));
  const mixed = logits(m, x);
  const g = (peft.model.getSubmodule(GATE_PATH) as MixdaGate).gateOf('gate');  // of the last forward
  assert.deepEqual(g.shape, [2, 2]);
  assert.ok(maxDiff(g.sum(-1), tensor([1, 1])) < 1e-6);
  assert.ok(maxDiff(g.narrow(0, 0, 1), g.narrow(0, 1, 1)) > 1e-3, 'per-example gates');
  assert.ok(maxDiff(mixed, law) > 1e-4 && maxDiff(mixed, med) > 1e-4);
  // Refusals.
  peft.setAdapter(['gate', 'law']);
  assert.throws(() => logits(m, x), /active together with its MixDA gate/);
  peft.setAdapter('gate');
  assert.throws(() => peft.forward({ inputIds: x, adapterNames: ['gate', '__base__'] }), /mixed batch/);
  assert.throws(() => peft.merge(), /cannot be merged/);
  assert.throws(() => peft.addAdapter('g2', { peftType: 'MIXDA', domainAdapters: ['law', 'tax'] }), /domain adapter "tax" is not on this PeftModel/);
  assert.throws(() => peft.addAdapter('g3', { peftType: 'MIXDA' }), /needs domain_adapters/);
  // Deleting the gate unhooks the LoRA layers and the embedding hook.
  peft.deleteAdapter('gate');
  assert.equal(m.child(GATE_PATH), null);
  assert.equal(m.hooks.embeddingOutput, undefined);
  assert.ok(peft.tunerLayers().every(([, l]) => !Object.prototype.hasOwnProperty.call(l, 'forward')));
  peft.setAdapter('law');
  assert.ok(maxDiff(logits(m, x), law) < 1e-6);
}));

test('gradients reach the gate only; save -> load identical (gate only in the file); loading needs the domain adapters', () => tidy(() => {
  const m = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const x = ids();
  const peft = withDomains(m);
  peft.addAdapter('gate', { peftType: 'MIXDA', domainAdapters: ['law', 'med'] }, { seed: 3 });
  peft.setAdapter('gate');
  const gate = peft.model.getSubmodule(GATE_PATH) as MixdaGate;
  m.train();
  tidy(() => {
    const lg = peft.forward({ inputIds: x }).logits;
    crossEntropy(lg.narrow(1, 0, 6).reshape(-1, lg.shape[2]!), x.narrow(1, 1, 6).reshape(-1)).backward();
  });
  m.eval();
  const own = new Set(gate.adapterParameters('gate'));
  for (const [n, t] of m.namedParameters()) if (t.grad) assert.ok(own.has(t), `${n} got a gradient but is not the gate's`);
  for (const t of own) assert.ok(t.grad && tidy(() => t.grad!.abs().sum().item()) > 0, 'the gate trains');
  // Gradient checkpointing (blocks recomputed in the backward) gives the gate the same gradient.
  const plain = [...own].map((t) => keep(t.grad!.clone()));
  for (const t of own) t.zeroGrad();
  prepare(peft);
  checkpointedBackward(m.segments({ inputIds: x }), (out) => crossEntropy(out.logits.narrow(1, 0, 6).reshape(-1, out.logits.shape[2]!), x.narrow(1, 1, 6).reshape(-1)), 0);
  [...own].forEach((t, i) => assert.ok(t.grad && maxDiff(t.grad, plain[i]!) < 1e-5, 'checkpointed gradient'));
  plain.forEach((t) => t.dispose());
  noGrad(() => gate.linear('gate').weight.add_(randn([2, 32], { seed: 4 })));
  const tuned = logits(m, x);
  const dir = tmp();
  savePeftAdapters(peft, dir);
  const gdir = join(dir, 'gate');
  assert.deepEqual([...readSafetensors(join(gdir, 'adapter_model.safetensors')).keys()].sort(), [`base_model.model.${GATE_PATH}.bias`, `base_model.model.${GATE_PATH}.weight`]);
  const json = JSON.parse(readFileSync(join(gdir, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(json.peft_type, 'MIXDA');
  assert.deepEqual(json.domain_adapters, ['law', 'med']);
  assert.equal(json.gate_input, 'mean');
  // Onto a bare model: the domain adapters are missing.
  assert.throws(() => loadPeftAdapter(loadModel(join(HF, 'llama'), { dtype: 'float32' }), gdir, { adapterName: 'gate' }), /domain adapter "law" is not on this PeftModel/);
  // Domain adapters first, then the gate.
  const m2 = loadModel(join(HF, 'llama'), { dtype: 'float32' });
  const warn = (w: string) => assert.fail(`unexpected warning: ${w}`);
  const p2 = loadPeftAdapter(m2, join(dir, 'law'), { adapterName: 'law', warn });
  loadPeftAdapter(p2, join(dir, 'med'), { adapterName: 'med', warn });
  loadPeftAdapter(p2, gdir, { adapterName: 'gate', warn });
  p2.setAdapter('gate');
  m2.eval();
  assert.ok(maxDiff(logits(m2, x), tuned) < 1e-6, 'loaded gate gives the same logits');
}));
