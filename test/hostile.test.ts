// Hostile input and data safety (issue 12): a table of commands a careless or unlucky user runs,
// each with the exit code and the one-line message it must give. No case may end by a signal, hang
// (every run has a timeout), or print a JavaScript stack; folders a user owns are checksummed
// before and after and must not change unless a flag says so. Models are tiny: seconds per case.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initModel } from '../src/models/init-model.js';
import { loadModel, PeftModel, savePeftAdapters, readSafetensors, writeSafetensors, full } from '../src/index.js';
import type { Tensor } from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'bin/adapterkit.js');
const work = mkdtempSync(join(tmpdir(), 'ak-hostile-'));
const p = (...xs: string[]) => join(work, ...xs);

interface Run { status: number | null; signal: string | null; stdout: string; stderr: string }

function cli(args: string[], timeoutMs = 60_000): Run {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', timeout: timeoutMs, cwd: work, env: { ...process.env, CI: '1' } });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** sha256 over every file under `dir` (names and contents), or of one file. */
function checksum(path: string): string {
  const h = createHash('sha256');
  const walk = (q: string) => {
    const st = statSync(q);
    if (st.isDirectory()) for (const e of readdirSync(q).sort()) walk(join(q, e));
    else if (st.isFile()) h.update(relative(path, q) + '\0').update(readFileSync(q));
  };
  walk(path);
  return h.digest('hex');
}

// ---- fixtures ---------------------------------------------------------------------------------
const model = p('model');
initModel({ arch: 'llama', out: model, layers: 1, hidden: 32, heads: 2, vocab: 300, seed: 1 });
const short = p('short');  // a 16-position context
initModel({ arch: 'llama', out: short, layers: 1, hidden: 32, heads: 2, vocab: 300, seed: 2, maxPositions: 16 });

function withConfig(name: string, patch: Record<string, unknown>): string {
  const dir = p(name);
  cpSync(model, dir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...cfg, ...patch }));
  return dir;
}
const layers1e9 = withConfig('layers-1e9', { num_hidden_layers: 1_000_000_000 });
const hidden1e6 = withConfig('hidden-1e6', { hidden_size: 1_000_000 });
const vocab1e12 = withConfig('vocab-1e12', { vocab_size: 1e12 });
const inter1e12 = withConfig('inter-1e12', { intermediate_size: 1e12 });
const badTheta = withConfig('rope-theta', { rope_theta: -1 });
const badEps = withConfig('rms-eps', { rms_norm_eps: -1e-6 });

const adapter = p('adapter');
{
  const m = loadModel(model);
  const peft = PeftModel.create(m, { r: 2, loraAlpha: 4, targetModules: ['q_proj', 'v_proj'] }, { seed: 0 });
  savePeftAdapters(peft, adapter);
  m.dispose();
}

/** A copy of a checkpoint file with one tensor's values all NaN. */
function poison(srcDir: string, outDir: string, file: string, pick: (name: string) => boolean): void {
  cpSync(srcDir, outDir, { recursive: true });
  const ts = readSafetensors(join(srcDir, file));
  const name = [...ts.keys()].find(pick)!;
  const bad = full(ts.get(name)!.shape, NaN);
  const out = new Map<string, Tensor>(ts);
  out.set(name, bad);
  writeSafetensors(join(outDir, file), out);
  for (const t of [...ts.values(), bad]) t.dispose();
}
const nanModel = p('nan-model');
poison(model, nanModel, 'model.safetensors', (n) => n.includes('mlp.down_proj'));
const nanAdapter = p('nan-adapter');
poison(adapter, nanAdapter, 'adapter_model.safetensors', (n) => n.includes('lora_B'));
const hugeR = p('huge-r');
cpSync(adapter, hugeR, { recursive: true });
{
  const cfg = JSON.parse(readFileSync(join(hugeR, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(hugeR, 'adapter_config.json'), JSON.stringify({ ...cfg, r: 100_000_000 }));
}

// FIFOs in place of the files each reader opens: a plain open() would wait forever for a writer.
const fifo = (path: string) => { rmSync(path, { force: true }); execFileSync('mkfifo', [path]); };
const fifoWeights = p('fifo-weights');
cpSync(model, fifoWeights, { recursive: true });
fifo(join(fifoWeights, 'model.safetensors'));
const fifoConfig = p('fifo-config');
cpSync(model, fifoConfig, { recursive: true });
fifo(join(fifoConfig, 'config.json'));
const fifoAdapter = p('fifo-adapter');
cpSync(adapter, fifoAdapter, { recursive: true });
fifo(join(fifoAdapter, 'adapter_config.json'));
const fifoGenConfig = p('fifo-genconfig');
cpSync(model, fifoGenConfig, { recursive: true });
fifo(join(fifoGenConfig, 'generation_config.json'));
fifo(p('pipe.safetensors'));
fifo(p('pipe.jsonl'));
fifo(p('pipe.yaml'));

const text = Array.from({ length: 48 }, (_, i) => JSON.stringify({ text: `the quick brown fox ${i} jumps over the lazy dog` })).join('\n') + '\n';
writeFileSync(p('data.jsonl'), text);
writeFileSync(p('other.jsonl'), text.replace(/fox/g, 'cat'));
writeFileSync(p('bad-rows.jsonl'), text + '{"text": oops}\n{"body": "no text field"}\n{"text": 42}\n{"text": ["a"]}\n');
const train = (out: string, ...more: string[]) => ['train', '--model', model, '--data', p('data.jsonl'), '--output', out, '--batch-size', '4', '--no-progress', ...more];

// ---- the table ----------------------------------------------------------------------------------
interface Case {
  name: string;
  args: string[] | (() => string[]);
  status: number;
  /** Must match stderr (errors) or stdout+stderr when status is 0. */
  message: RegExp;
  /** Paths that must be byte-identical afterwards. */
  unchanged?: string[];
  /** Extra checks after the run. */
  after?: (r: Run) => void;
}

const cases: Case[] = [
  // 1. sizes that cannot fit are refused before allocating, with the numbers
  { name: 'num_hidden_layers 1e9', args: ['score', '--model', layers1e9, '--ids', '1,2,3'], status: 1, message: /num_hidden_layers 1000000000.*more than the .* of memory available/ },
  { name: 'hidden_size 1e6', args: ['generate', '--model', hidden1e6, '--prompt', 'hi'], status: 1, message: /hidden_size 1000000.*more than the/ },
  { name: 'vocab_size 1e12', args: ['score', '--model', vocab1e12, '--ids', '1,2'], status: 1, message: /vocab_size 1000000000000.*more than the/ },
  { name: 'intermediate_size 1e12', args: ['score', '--model', inter1e12, '--ids', '1,2'], status: 1, message: /intermediate_size 1000000000000.*more than the/ },
  { name: 'init-model --hidden 1000000', args: ['init-model', '--arch', 'llama', '--out', p('init-huge'), '--hidden', '1000000'], status: 1, message: /hidden_size 1000000.*more than the/, after: () => assert.ok(!existsSync(p('init-huge')), 'nothing written') },
  { name: 'train --r 100000000', args: train(p('run-r'), '--r', '100000000'), status: 1, message: /LORA rank r = 100000000.*use a smaller r/ },
  { name: 'adapter_config.json r 1e8', args: ['score', '--model', model, '--adapter', hugeR, '--ids', '1,2'], status: 1, message: /r = 100000000.*use a smaller r/ },
  // 2. FIFOs and other non-regular files are refused, never waited on
  { name: 'FIFO model.safetensors', args: ['score', '--model', fifoWeights, '--ids', '1,2'], status: 1, message: /model\.safetensors is a named pipe \(FIFO\), not a regular file/ },
  { name: 'FIFO config.json', args: ['score', '--model', fifoConfig, '--ids', '1,2'], status: 1, message: /config\.json is a named pipe \(FIFO\), not a regular file/ },
  { name: 'FIFO adapter_config.json', args: ['score', '--model', model, '--adapter', fifoAdapter, '--ids', '1,2'], status: 1, message: /adapter_config\.json is a named pipe \(FIFO\)/ },
  { name: 'FIFO generation_config.json', args: ['generate', '--model', fifoGenConfig, '--prompt', 'hi'], status: 1, message: /generation_config\.json is a named pipe \(FIFO\)/ },
  { name: 'FIFO inspect target', args: ['inspect', p('pipe.safetensors')], status: 1, message: /pipe\.safetensors is a named pipe \(FIFO\)/ },
  { name: 'FIFO --config', args: ['train', '--config', p('pipe.yaml')], status: 2, message: /--config .*pipe\.yaml is a named pipe \(FIFO\), not a regular file; give a regular file$/m },
  { name: 'FIFO training data', args: train(p('run-fifo'), '--data', p('pipe.jsonl')), status: 1, message: /pipe\.jsonl is a named pipe \(FIFO\)/ },
  // 3. strict number parsing
  { name: '--ids 1,2,', args: ['score', '--model', model, '--ids', '1,2,'], status: 2, message: /--ids must be comma-separated token ids .*item 3 is empty/ },
  { name: '--ids 1,,2', args: ['score', '--model', model, '--ids', '1,,2'], status: 2, message: /item 2 is empty/ },
  { name: '--ids ,', args: ['score', '--model', model, '--ids', ','], status: 2, message: /item 1 is empty/ },
  { name: '--ids 0x10', args: ['score', '--model', model, '--ids', '0x10,2'], status: 2, message: /item 1 is "0x10"/ },
  { name: '--ids 1e2', args: ['score', '--model', model, '--ids', '1e2,3'], status: 2, message: /item 1 is "1e2"/ },
  { name: '--max-new-tokens 0x10', args: ['generate', '--model', model, '--prompt', 'hi', '--max-new-tokens', '0x10'], status: 2, message: /--max-new-tokens must be a decimal integer >= 1, got "0x10"/ },
  { name: '--layers ""', args: ['init-model', '--arch', 'llama', '--out', p('init-empty'), '--layers', ''], status: 2, message: /--layers must be a decimal integer >= 1, got ""/ },
  // 4. non-finite values
  { name: 'train --lr 1e30 stops on NaN', args: train(p('run-nan'), '--lr', '1e30', '--max-steps', '6', '--eval-every', '1'), status: 1, message: /step \d+: the loss is NaN; training stopped before applying it\. Lower the learning rate/, after: () => {
    assert.ok(!existsSync(p('run-nan', 'final')), 'no final/ from a diverged run');
    const best = p('run-nan', 'best', 'adapter_model.safetensors');
    if (existsSync(best)) for (const [n, t] of readSafetensors(best)) assert.ok(t.isfinite().all().item(), `best/ ${n} is finite`);
  } },
  { name: 'train --lr 1e30 --skip-nonfinite counts', args: train(p('run-skip'), '--lr', '1e30', '--max-steps', '6', '--skip-nonfinite'), status: 0, message: /skipped \d+ of 6 steps with a non-finite loss or gradient/, after: () => {
    for (const [n, t] of readSafetensors(p('run-skip', 'final', 'adapter_model.safetensors'))) assert.ok(t.isfinite().all().item(), `final/ ${n} is finite`);
  } },
  { name: 'NaN base weights refused', args: ['score', '--model', nanModel, '--ids', '1,2,3'], status: 1, message: /mlp\.down_proj\.weight holds \d+ NaN .*pass --allow-nonfinite/ },
  { name: 'NaN base weights with --allow-nonfinite', args: ['score', '--model', nanModel, '--ids', '1,2,3', '--allow-nonfinite'], status: 0, message: /nll/ },
  { name: 'train from NaN base weights refused', args: train(p('run-nanbase'), '--model', nanModel), status: 1, message: /nan-model: weight .*mlp\.down_proj\.weight holds \d+ NaN .*Use another checkpoint$/m, after: () => assert.ok(!existsSync(p('run-nanbase', 'final'))) },
  { name: 'NaN adapter refused', args: ['generate', '--model', model, '--adapter', nanAdapter, '--prompt', 'hi'], status: 1, message: /lora_B.* holds \d+ NaN/ },
  { name: 'rope_theta -1', args: ['score', '--model', badTheta, '--ids', '1,2'], status: 1, message: /"rope_theta" must be a number > 0, got -1/ },
  { name: 'rms_norm_eps < 0', args: ['score', '--model', badEps, '--ids', '1,2'], status: 1, message: /"rms_norm_eps" must be a number >= 0/ },
  // 5. unknown keys in train configs
  { name: 'training.learningRate', args: () => { writeFileSync(p('lr.yaml'), `model: ${model}\noutput: ${p('run-k1')}\ndata:\n  train: ${p('data.jsonl')}\ntraining:\n  learningRate: 0.1\n`); return ['train', '--config', p('lr.yaml')]; }, status: 2, message: /unknown key "learningRate" \(did you mean "lr"\?\)/, after: () => assert.ok(!existsSync(p('run-k1'))) },
  { name: 'training.rank', args: () => { writeFileSync(p('rank.json'), JSON.stringify({ model, output: p('run-k2'), data: { train: p('data.jsonl') }, training: { rank: 8 } })); return ['train', '--config', p('rank.json')]; }, status: 2, message: /unknown key "rank" \(did you mean "lora\.r"\?\)/ },
  { name: 'top-level frobnicate', args: () => { writeFileSync(p('frob.json'), JSON.stringify({ model, output: p('run-k3'), data: { train: p('data.jsonl') }, frobnicate: true })); return ['train', '--config', p('frob.json')]; }, status: 2, message: /training config: unknown key "frobnicate"; known keys: model, task/ },
  { name: 'data.valFracton misspelt', args: () => { writeFileSync(p('vf.json'), JSON.stringify({ model, output: p('run-k4'), data: { train: p('data.jsonl'), valFracton: 0 } })); return ['train', '--config', p('vf.json')]; }, status: 2, message: /unknown key "valFracton" \(did you mean "valFraction"\?\)/ },
  // 6. every skipped row counted, by reason
  { name: '--skip-bad-rows counts every reason', args: train(p('run-rows'), '--data', p('bad-rows.jsonl'), '--skip-bad-rows', '--max-steps', '1'), status: 0, message: /skipped 4 bad rows in .*bad-rows\.jsonl: (?=.*1 invalid JSON)(?=.*1 missing field "text")(?=.*2 field "text" must be a string)/ },
  // 7. sampling ranges, empty values, the context limit
  { name: '--top-p 2', args: ['generate', '--model', model, '--prompt', 'hi', '--sample', '--top-p', '2'], status: 2, message: /--top-p must be a decimal number > 0 and <= 1, got "2"/ },
  { name: '--repetition-penalty 0', args: ['generate', '--model', model, '--prompt', 'hi', '--repetition-penalty', '0'], status: 2, message: /--repetition-penalty must be a decimal number > 0, got "0"/ },
  { name: '--temperature 1e-45', args: ['generate', '--model', model, '--prompt', 'hi', '--sample', '--temperature', '1e-45'], status: 2, message: /--temperature must be a decimal number >= 0\.0001, got "1e-45"/ },
  { name: '--stop ""', args: ['generate', '--model', model, '--prompt', 'hi', '--stop', ''], status: 2, message: /--stop must not be empty/ },
  { name: '--adapter ""', args: ['generate', '--model', model, '--prompt', 'hi', '--adapter', ''], status: 2, message: /--adapter must name adapter folders, comma-separated, got ""/ },
  { name: 'score past the context', args: ['score', '--model', short, '--ids', Array.from({ length: 20 }, (_, i) => String(i + 5)).join(',')], status: 1, message: /20 tokens are more than the model's context of 16 positions/ },
  { name: 'generation stops at the context and keeps its text', args: ['generate', '--model', short, '--prompt', 'abc', '--max-new-tokens', '40', '--stop-id', '299'], status: 0, message: /stopped at the model's context limit \(16 positions\)/, after: (r) => assert.ok(r.stdout.trim().length > 0, 'the generated text is printed') },
  // 8. merge and init-model never overwrite what a user has
  { name: 'merge --out the model folder', args: ['merge', '--model', model, '--adapter', adapter, '--out', model], status: 1, message: /--out .* is the --model folder itself.*pick another folder/, unchanged: [model] },
  { name: 'merge --out the model folder, even with --force', args: ['merge', '--model', model, '--adapter', adapter, '--out', model, '--force'], status: 1, message: /is the --model folder itself/, unchanged: [model] },
  { name: 'merge --out a symlink to the model', args: () => { symlinkSync(model, p('model-link')); return ['merge', '--model', model, '--adapter', adapter, '--out', p('model-link'), '--force']; }, status: 1, message: /is the --model folder itself/, unchanged: [model] },
  { name: 'merge --out the adapter folder', args: ['merge', '--model', model, '--adapter', adapter, '--out', adapter, '--force'], status: 1, message: /is the --adapter folder itself/, unchanged: [adapter] },
  { name: 'merge --out a non-empty folder', args: () => { mkdirSync(p('mine')); writeFileSync(p('mine', 'notes.txt'), 'mine'); writeFileSync(p('mine', 'config.json'), '{"mine": true}'); return ['merge', '--model', model, '--adapter', adapter, '--out', p('mine')]; }, status: 1, message: /--out .*mine already exists and is not empty \(config\.json, notes\.txt\); pass --force/, unchanged: [p('mine'), model] },
  { name: 'merge --out a non-empty folder with --force keeps other files', args: ['merge', '--model', model, '--adapter', adapter, '--out', p('mine'), '--force'], status: 0, message: /wrote/, unchanged: [p('mine', 'notes.txt'), model, adapter], after: () => assert.ok(existsSync(p('mine', 'model.safetensors'))) },
  { name: 'init-model --out an existing checkpoint', args: ['init-model', '--arch', 'llama', '--out', model], status: 1, message: /--out .*model already exists and is not empty.*pass --force/, unchanged: [model] },
  { name: 'init-model --force replaces it', args: ['init-model', '--arch', 'gpt2', '--out', p('mine'), '--force', '--layers', '1', '--hidden', '16', '--heads', '2', '--vocab', '300'], status: 0, message: /wrote a random gpt2 checkpoint/, unchanged: [p('mine', 'notes.txt')] },
  // 12. stale temporaries of a killed run are removed
  { name: 'merge removes stale temporaries', args: () => {
    mkdirSync(p('stale'));
    writeFileSync(p('stale', `.model.safetensors.${deadPid()}.0123456789ab.tmp`), Buffer.alloc(1 << 20));
    return ['merge', '--model', model, '--adapter', adapter, '--out', p('stale')];
  }, status: 0, message: /wrote/, after: () => assert.deepEqual(readdirSync(p('stale')).filter((f) => f.endsWith('.tmp')), []) },
];

/** A process id that is not running (for a temporary left by a killed process). */
function deadPid(): number {
  for (let pid = 4_000_000; ; pid--) {
    try {
      process.kill(pid, 0);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ESRCH') return pid;
    }
  }
}

function check(r: Run, c: { status: number; message: RegExp }): void {
  const all = r.stdout + r.stderr;
  assert.equal(r.signal, null, `ended by signal ${r.signal}: ${all}`);
  assert.doesNotMatch(all, /\n\s+at .*(\.js|\.ts):\d+/, 'no JavaScript stack');
  assert.equal(r.status, c.status, all);
  assert.match(c.status === 0 ? all : r.stderr, c.message);
  if (c.status !== 0) assert.equal(r.stderr.trim().split('\n').filter((l) => l.startsWith('adapterkit')).length, 1, `one error line: ${r.stderr}`);
}

for (const c of cases) {
  test(`hostile: ${c.name}`, () => {
    const args = typeof c.args === 'function' ? c.args() : c.args;
    const before = (c.unchanged ?? []).map(checksum);
    const r = cli(args);
    check(r, c);
    (c.unchanged ?? []).forEach((path, i) => assert.equal(checksum(path), before[i], `${path} changed`));
    c.after?.(r);
  });
}

// ---- training runs: 9, 10, 11, 13 -------------------------------------------------------------
const metrics = (dir: string) => readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; loss?: number });

test('9: train into an existing run folder is refused without --overwrite; --overwrite replaces only the run', () => {
  const run = p('run9');
  const first = cli(train(run, '--max-steps', '2'));
  check(first, { status: 0, message: /done: 2 steps/ });
  writeFileSync(join(run, 'my-notes.txt'), 'keep me');
  const sum = checksum(run);
  const again = cli(train(run, '--max-steps', '2'));
  check(again, { status: 1, message: /--output .*run9 already exists and is not empty .*pass --overwrite/ });
  assert.equal(checksum(run), sum, 'the earlier run is untouched');
  const both = cli(train(run, '--resume', '--overwrite'));
  check(both, { status: 1, message: /--resume and --overwrite contradict each other/ });
  const over = cli(train(run, '--max-steps', '3', '--overwrite'));
  check(over, { status: 0, message: /--overwrite: removed the earlier run's checkpoints, final, metrics\.jsonl/ });
  assert.equal(readFileSync(join(run, 'my-notes.txt'), 'utf8'), 'keep me');
  assert.deepEqual(metrics(run).map((m) => m.step), [3], 'one run in metrics.jsonl');
});

test('10: --resume needs a checkpoint, falls back to the newest complete one, and refuses other data', () => {
  const none = cli(train(p('run10-none'), '--resume'));
  check(none, { status: 1, message: /--resume: .*run10-none has no checkpoint to resume from/ });
  const run = p('run10');
  check(cli(train(run, '--max-steps', '4', '--save-every', '2')), { status: 0, message: /done: 4 steps/ });
  rmSync(join(run, 'checkpoints', 'latest'));
  const other = cli(train(run, '--max-steps', '6', '--resume', '--data', p('other.jsonl')));
  check(other, { status: 1, message: /cannot resume from .*step-00000004: the training examples differ from those it was trained on \(other data files, split, seed or tokenization/ });
  const r = cli(train(run, '--max-steps', '6', '--resume'));
  check(r, { status: 0, message: /latest is missing; resuming from the newest complete checkpoint, step-00000004/ });
  assert.match(r.stdout, /resumed from .*step-00000004 at step 4/);
  assert.ok(existsSync(join(run, 'checkpoints', 'step-00000004')), 'older checkpoints kept by rotation, not wiped');
});

test('11: after a kill, resume cuts metrics.jsonl back to the checkpoint: every step once', () => {
  const run = p('run11');
  const cfg = p('run11.json');
  writeFileSync(cfg, JSON.stringify({ model, output: run, data: { train: p('data.jsonl') }, training: { logEvery: 1, saveEvery: 2, maxSteps: 4, batchSize: 4, progress: false } }));
  check(cli(['train', '--config', cfg]), { status: 0, message: /done: 4 steps/ });
  // As if killed after logging steps 3 and 4 but before the step-4 checkpoint was committed.
  rmSync(join(run, 'checkpoints', 'step-00000004'), { recursive: true });
  writeFileSync(join(run, 'checkpoints', 'latest'), 'step-00000002\n');
  writeFileSync(join(run, 'metrics.jsonl'), readFileSync(join(run, 'metrics.jsonl'), 'utf8') + '{"step": 5, "lo');  // a torn last line
  const r = cli(['train', '--config', cfg, '--resume']);
  check(r, { status: 0, message: /resumed from .*step-00000002 at step 2/ });
  assert.deepEqual(metrics(run).filter((m) => m.loss !== undefined).map((m) => m.step), [1, 2, 3, 4]);
});

test('13: Ctrl-C saves a checkpoint and exits 130', async () => {
  const run = p('run13');
  const cfg = p('run13.json');
  writeFileSync(cfg, JSON.stringify({ model, output: run, data: { train: p('data.jsonl') }, training: { logEvery: 1, maxSteps: 1_000_000, batchSize: 4, progress: false } }));
  const child = spawn(process.execPath, [bin, 'train', '--config', cfg], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += String(d); });
  const done = new Promise<{ code: number | null; signal: string | null }>((res) => child.on('exit', (code, signal) => res({ code, signal })));
  // The handlers are in place once the loop has logged a step.
  const t0 = Date.now();
  while (!(existsSync(join(run, 'metrics.jsonl')) && readFileSync(join(run, 'metrics.jsonl'), 'utf8').includes('"step"'))) {
    assert.ok(Date.now() - t0 < 60_000, `training never started: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGINT');
  const { code, signal } = await done;
  assert.equal(signal, null, err);
  assert.equal(code, 130, err);
  assert.ok(existsSync(join(run, 'checkpoints', 'latest')), 'a checkpoint was saved');
});

test.after(() => {
  for (const f of ['pipe.safetensors', 'pipe.jsonl', 'pipe.yaml']) try { unlinkSync(p(f)); } catch { /* gone */ }
  rmSync(work, { recursive: true, force: true });
});
