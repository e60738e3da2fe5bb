// `adapterkit train --method NAME` and the YAML `method:` + `adapter:` equivalent for every registered
// adapter method, end to end on a tiny checkpoint: the run trains, saves its adapter in the method's
// format, and the saved adapter loads back as that method. Bad method names and flags a method does
// not take are usage errors that say what is accepted.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initModel } from '../src/models/init-model.js';
import { loadModel, loadPeftAdapter, adapterMethodList } from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/adapterkit.js'), ...args], { encoding: 'utf8', env: { ...process.env, CI: '1' } });
const work = mkdtempSync(join(tmpdir(), 'ak-train-methods-'));
const model = join(work, 'model');
initModel({ arch: 'llama', out: model, layers: 2, hidden: 32, heads: 4, vocab: 300, seed: 1 });
const cls = ['text,label', ...Array.from({ length: 48 }, (_, i) => (i % 2 ? `"good, great ${i}",pos` : `"bad, awful ${i}",neg`))].join('\n');
writeFileSync(join(work, 'cls.csv'), cls + '\n');

/** One name per method, plus the presets that change where or how the method acts. */
function methodNames(): { name: string; peftType: string }[] {
  const extra = new Set(['houlsby', 'parallel', 'compacter', 'compacter++', 'pfeiffer+inv', 'dora']);
  // Poly needs per-row task ids and MixDA existing domain adapters: neither comes from a plain run config.
  const needsSetup = new Set(['POLY', 'MIXDA']);
  return adapterMethodList().filter((m) => !needsSetup.has(m.peftType)).flatMap((m) => [m.names[0]!, ...m.names.filter((n) => extra.has(n))].map((name) => ({ name, peftType: m.peftType })));
}

function checkRun(out: string, peftType: string, stdout: string): void {
  assert.match(stdout, /trainable params: /);
  assert.match(stdout, /done: 3 steps/);
  const m = loadModel(model, { task: 'sequence-classification', numLabels: 2 });
  const peft = loadPeftAdapter(m, join(out, 'final'), { warn: (w) => assert.fail(`unexpected warning: ${w}`) });
  assert.equal(peft.configs.get('default')!.peftType, peftType);
  m.dispose();
}

for (const { name, peftType } of methodNames()) {
  test(`adapterkit train --method ${name}`, () => {
    const out = join(work, `run-${name.replace(/[^a-z0-9]/gi, '_')}`);
    const r = cli('train', '--model', model, '--data', join(work, 'cls.csv'), '--task', 'sequence-classification', '--method', name,
      '--output', out, '--max-steps', '3', '--batch-size', '8', '--lr', '0.01', '--no-progress', ...(name.startsWith('compacter') ? ['--reduction', '4'] : []), ...(name === 'shira' ? ['--adapter-options', '{"r": 2}'] : []));
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, new RegExp(`method ${name.replace(/[+]/g, '\\+')} \\(${peftType}\\)`));
    checkRun(out, peftType, r.stdout);
  });
}

test('the YAML equivalent: method + adapter section, for a wrapped-layer method and an injected one', () => {
  for (const [method, adapter, peftType] of [['ia3', '  targetModules: [k_proj, v_proj, down_proj]\n  feedforwardModules: [down_proj]\n', 'IA3'], ['houlsby', '  reduction_factor: 8\n  non_linearity: relu\n', 'BOTTLENECK'], ['prefix', '  numVirtualTokens: 4\n  prefixProjection: true\n', 'PREFIX_TUNING']] as const) {
    const out = join(work, `yaml-${method}`);
    const yaml = `model: ${model}\ntask: sequence-classification\nmethod: ${method}\noutput: ${out}\ndata:\n  train: ${join(work, 'cls.csv')}\nadapter:\n${adapter}training:\n  maxSteps: 3\n  batchSize: 8\n  lr: 0.01\n  progress: false\n`;
    writeFileSync(join(work, `${method}.yaml`), yaml);
    const r = cli('train', '--config', join(work, `${method}.yaml`));
    assert.equal(r.status, 0, r.stderr + r.stdout);
    checkRun(out, peftType, r.stdout);
  }
});

test('bad method names, flags a method does not take, and misplaced sections are clear errors', () => {
  const base = ['train', '--model', model, '--data', join(work, 'cls.csv'), '--task', 'sequence-classification', '--output', join(work, 'bad')];
  const unknown = cli(...base, '--method', 'lorra');
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /unknown adapter method "lorra" \(known: lora, .*ia3.*prefix/);
  const flag = cli(...base, '--method', 'ia3', '--alpha', '8');
  assert.equal(flag.status, 2);
  assert.match(flag.stderr, /--alpha does not apply to method "ia3"/);
  const badOpt = cli(...base, '--method', 'bottleneck', '--adapter-options', '{"reductionFactr": 8}');
  assert.notEqual(badOpt.status, 0);
  assert.match(badOpt.stderr, /reductionFactr.*did you mean "reductionFactor"/);
  writeFileSync(join(work, 'mixed.yaml'), `model: ${model}\ntask: sequence-classification\nmethod: ia3\noutput: ${join(work, 'bad2')}\ndata:\n  train: ${join(work, 'cls.csv')}\nlora:\n  r: 4\n`);
  const mixed = cli('train', '--config', join(work, 'mixed.yaml'));
  assert.notEqual(mixed.status, 0);
  assert.match(mixed.stderr, /the "lora" section applies to LoRA methods; method "ia3" takes its options in "adapter"/);
  const help = cli('train', '--help');
  for (const m of adapterMethodList()) assert.ok(help.stdout.includes(m.names[0]!) || help.stderr.includes(m.names[0]!), `--help lists ${m.names[0]}`);
});
