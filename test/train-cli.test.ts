// `adapterkit train` end to end on tiny checkpoints: YAML and JSON configs with flags on top,
// instruction and classification data, outputs (final and best adapters, metrics.jsonl, curve.html),
// and clear errors for bad configs and bad rows.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initModel } from '../src/models/init-model.js';
import { loadModel, loadPeftAdapter } from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const cli = (...args: string[]) => spawnSync(process.execPath, [join(root, 'bin/adapterkit.js'), ...args], { encoding: 'utf8', env: { ...process.env, CI: '1' } });
const work = mkdtempSync(join(tmpdir(), 'ak-train-cli-'));
const model = join(work, 'model');
initModel({ arch: 'llama', out: model, layers: 1, hidden: 32, heads: 2, vocab: 300, seed: 1 });

const instr = Array.from({ length: 40 }, (_, i) => JSON.stringify({ prompt: `Add one to ${i}:`, response: ` ${i + 1}` })).join('\n');
writeFileSync(join(work, 'instr.jsonl'), instr + '\n');
const cls = ['text,label', ...Array.from({ length: 60 }, (_, i) => (i % 2 ? `"good, great ${i}",pos` : `"bad, awful ${i}",neg`))].join('\n');
writeFileSync(join(work, 'cls.csv'), cls + '\n');

test('instruction tuning from a YAML config, flags on top; outputs are usable', () => {
  const out = join(work, 'run-instr');
  writeFileSync(join(work, 'run.yaml'), `model: ${model}\ntask: instruction\noutput: ${out}\ndata:\n  train: ${join(work, 'instr.jsonl')}\n  valFraction: 0.2\nlora:\n  r: 4\n  loraAlpha: 8\n  targetModules: all-linear\ntraining:\n  lr: 0.01\n  batchSize: 8\n  evalEvery: 4\n`);
  const r = cli('train', '--config', join(work, 'run.yaml'), '--max-steps', '8', '--seed', '3');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /trainable params: /);
  assert.match(r.stdout, /done: 8 steps/);
  for (const f of ['final/adapter_config.json', 'final/adapter_model.safetensors', 'best/adapter_model.safetensors', 'metrics.jsonl', 'curve.html', 'run_config.json']) {
    assert.ok(existsSync(join(out, f)), f);
  }
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, number>);
  assert.ok(lines.some((l) => l.eval_loss !== undefined));
  assert.match(readFileSync(join(out, 'curve.html'), 'utf8'), /<svg[\s\S]*polyline/);
  const m = loadModel(model);
  loadPeftAdapter(m, join(out, 'final'));
  m.dispose();
  // The merged adapter is a full checkpoint that generates.
  assert.equal(cli('merge', '--model', model, '--adapter', join(out, 'final'), '--out', join(work, 'merged')).status, 0);
  assert.equal(cli('generate', '--model', join(work, 'merged'), '--prompt', 'Add one to 3:', '--max-new-tokens', '3').status, 0);
});

test('sequence classification from CSV with a JSON config; accuracy is reported', () => {
  const out = join(work, 'run-cls');
  writeFileSync(join(work, 'run.json'), JSON.stringify({ model, task: 'sequence-classification', output: out, data: { train: join(work, 'cls.csv'), valFraction: 0.25 }, training: { lr: 0.02, batchSize: 8, evalEvery: 5, epochs: 2 } }));
  const r = cli('train', '--config', join(work, 'run.json'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /accuracy \d+\.\d%/);
  const cfg = JSON.parse(readFileSync(join(out, 'final', 'adapter_config.json'), 'utf8')) as { modules_to_save: string[]; task_type: string };
  // PEFT's PeftModelForSequenceClassification appends both head names; "classifier" matches nothing on LLaMA.
  assert.deepEqual(cfg.modules_to_save, ['score', 'classifier']);
  assert.equal(cfg.task_type, 'SEQ_CLS');
});

test('bad configs and bad rows are clear errors', () => {
  const noModel = cli('train', '--data', join(work, 'instr.jsonl'), '--output', join(work, 'x'));
  assert.equal(noModel.status, 2);
  assert.match(noModel.stderr, /"model" is required/);
  writeFileSync(join(work, 'bad.yaml'), 'model: [unclosed');
  assert.match(cli('train', '--config', join(work, 'bad.yaml')).stderr, /--config .*bad\.yaml/);
  const badTask = cli('train', '--model', model, '--data', join(work, 'instr.jsonl'), '--output', join(work, 'y'), '--task', 'summarize');
  assert.match(badTask.stderr, /task must be one of causal-lm, instruction/);
  writeFileSync(join(work, 'broken.jsonl'), '{"prompt":"a","response":"b"}\n{"prompt": oops}\n');
  const bad = cli('train', '--model', model, '--data', join(work, 'broken.jsonl'), '--task', 'instruction', '--output', join(work, 'z'), '--max-steps', '1');
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /broken\.jsonl:2/);
  const skipped = cli('train', '--model', model, '--data', join(work, 'broken.jsonl'), '--task', 'instruction', '--output', join(work, 'z'), '--max-steps', '1', '--skip-bad-rows', '--batch-size', '1');
  assert.equal(skipped.status, 0, skipped.stderr);
  assert.match(skipped.stdout, /skipped 1 bad rows/);
});

test('the demo runs on the embedded model and ends with its summary line', () => {
  const r = cli('demo', '--epochs', '0.2', '--output', join(work, 'demo'));
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /base model: .*assets\/default-model/);
  assert.match(r.stdout, /examples \(held out\):/);
  const last = r.stdout.trim().split('\n').pop()!;
  assert.match(last, /^demo: before=0\.\d{3} after=0\.\d{3} majority=0\.\d{3}$/);
  assert.ok(existsSync(join(work, 'demo', 'final', 'adapter_model.safetensors')));
  assert.match(r.stdout, /trainable%: [0-4]\.\d+/, 'the demo trains under 5% of the parameters');
  assert.match(r.stdout, /dtype auto -> (float32|bfloat16) \(/, 'the demo says which dtype auto picked and why');
  // Run again into the same (now non-empty) folder: refused, nothing in it changes.
  const before = readFileSync(join(work, 'demo', 'final', 'adapter_model.safetensors'));
  const again = cli('demo', '--epochs', '0.2', '--output', join(work, 'demo'));
  assert.equal(again.status, 2);
  assert.match(again.stderr, /is not empty; choose a new folder/);
  assert.deepEqual(readFileSync(join(work, 'demo', 'final', 'adapter_model.safetensors')), before);
});

test('Ctrl-C during the demo saves a checkpoint and exits 130', async () => {
  const out = join(work, 'demo-sigint');
  const child = spawn(process.execPath, [join(root, 'bin/adapterkit.js'), 'demo', '--output', out], { env: { ...process.env, CI: '1' } });
  let text = '';
  let sent = false;
  const code = await new Promise<number | null>((resolve) => {
    const look = (d: Buffer) => {
      text += d.toString();
      // Once training has started (the first progress line), interrupt it.
      if (!sent && /train .*\d+\/\d+/.test(text)) { sent = true; child.kill('SIGINT'); }
    };
    child.stdout.on('data', look);
    child.stderr.on('data', look);
    child.on('exit', (c) => resolve(c));
  });
  assert.ok(sent, text.slice(-500));
  assert.equal(code, 130, text.slice(-500));
  assert.match(text, /stopped by SIGINT after \d+ steps/);
  assert.ok(existsSync(join(out, 'checkpoints')));
});

test('a YAML lora: section with a misspelt key is refused with the right name; PEFT spellings work', () => {
  const out = join(work, 'run-lora-keys');
  const yaml = (lora: string) => `model: ${model}\ntask: instruction\noutput: ${out}\ndata:\n  train: ${join(work, 'instr.jsonl')}\n  valFraction: 0\nlora:\n${lora}training:\n  batchSize: 8\n`;
  writeFileSync(join(work, 'lora-typo.yaml'), yaml('  r: 4\n  lora_alhpa: 8\n'));
  const bad = cli('train', '--config', join(work, 'lora-typo.yaml'), '--max-steps', '1');
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /unknown key "lora_alhpa" \(did you mean "loraAlpha"\?\)/);
  writeFileSync(join(work, 'lora-peft.yaml'), yaml('  r: 4\n  lora_alpha: 8\n  target_modules: [q_proj, v_proj]\n'));
  const ok = cli('train', '--config', join(work, 'lora-peft.yaml'), '--max-steps', '1', '--overwrite');
  assert.equal(ok.status, 0, ok.stderr);
  const cfg = JSON.parse(readFileSync(join(out, 'final', 'adapter_config.json'), 'utf8')) as { lora_alpha: number; target_modules: string[] };
  assert.equal(cfg.lora_alpha, 8);
  assert.deepEqual(cfg.target_modules, ['q_proj', 'v_proj']);
});
