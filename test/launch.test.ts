// `adapterkit launch --nproc 2 -- train …` on a tiny checkpoint: the same saved adapter as one process
// with twice the batch; a killed process stops the run with a non-zero status, and --resume on the
// same world size finishes exactly like an uninterrupted run (another world size is refused).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initModel } from '../src/models/init-model.js';
import { readSafetensors, distributedAvailable, loadLatestCheckpoint, tidy } from '../src/index.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const bin = join(root, 'bin/adapterkit.js');
const env = { ...process.env, CI: '1', OMP_NUM_THREADS: '1' };
const cli = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env });
const work = mkdtempSync(join(tmpdir(), 'ak-launch-'));
const model = join(work, 'model');
initModel({ arch: 'llama', out: model, layers: 1, hidden: 32, heads: 2, vocab: 300, seed: 1 });
writeFileSync(join(work, 'instr.jsonl'), Array.from({ length: 40 }, (_, i) => JSON.stringify({ prompt: `Add one to ${i}:`, response: ` ${i + 1}` })).join('\n') + '\n');
const skip = distributedAvailable() ? false : 'the addon was built without c10d';

// float32, no dropout: data-parallel equals one process up to float summation order.
const train = (out: string, batch: number, steps: number, ...more: string[]) => [
  'train', '--model', model, '--data', join(work, 'instr.jsonl'), '--task', 'instruction', '--dtype', 'float32', '--r', '4', '--dropout', '0',
  '--targets', 'q_proj,v_proj', '--lr', '0.01', '--seed', '3', '--max-steps', String(steps), '--batch-size', String(batch), '--output', out,
  '--no-progress', '--dist-timeout', '20', ...more,
];
const launch = (...t: string[]) => ['launch', '--nproc', '2', '--threads-per-proc', '1', '--', ...t];

function maxDiff(a: string, b: string): number {
  const x = readSafetensors(join(a, 'adapter_model.safetensors'));
  const y = readSafetensors(join(b, 'adapter_model.safetensors'));
  assert.deepEqual([...x.keys()].sort(), [...y.keys()].sort());
  let d = 0;
  for (const [k, t] of x) d = Math.max(d, tidy(() => t.sub(y.get(k)!).abs().max().item()));
  [...x.values(), ...y.values()].forEach((t) => t.dispose());
  return d;
}
const losses = (out: string) => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { loss?: number }).filter((l) => l.loss !== undefined).map((l) => l.loss!);

test('launch --nproc 2 -- train gives the adapter of one process with twice the batch', { skip }, () => {
  const one = join(work, 'one');
  const two = join(work, 'two');
  const r1 = cli(...train(one, 8, 6, '--save-every', '3'));
  assert.equal(r1.status, 0, r1.stderr);
  const r2 = cli(...launch(...train(two, 4, 6, '--save-every', '3')));
  assert.equal(r2.status, 0, r2.stderr);
  assert.match(r2.stderr, /launch: rank 1 of 2 started \(pid \d+, 1 threads/);
  assert.equal((r2.stdout.match(/^done: 6 steps/gm) ?? []).length, 1, 'only rank 0 prints');
  const d = maxDiff(join(one, 'final'), join(two, 'final'));
  assert.ok(d < 1e-5, `adapters differ by ${d}`);
  // The reported loss is the global batch's, as one process computes it.
  losses(one).forEach((l, i) => assert.ok(Math.abs(l - losses(two)[i]!) < 1e-5, `loss ${l} vs ${losses(two)[i]}`));
  assert.deepEqual(readdirSync(join(two, 'checkpoints')).filter((f) => f.startsWith('step-')).sort(), ['step-00000003', 'step-00000006']);
});

test('a killed process stops the launch; --resume on 2 processes ends like an uninterrupted run, on 1 it is refused', { skip }, async () => {
  const straight = join(work, 'straight');
  const steps = 30;
  const r = cli(...launch(...train(straight, 4, steps)));
  assert.equal(r.status, 0, r.stderr);
  const killed = join(work, 'killed');
  const child = spawn(process.execPath, [bin, ...launch(...train(killed, 4, steps, '--save-every', '1'))], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const code = await new Promise<number | null>((resolve) => {
    const t = setInterval(() => {
      const pid = /rank 1 of 2 started \(pid (\d+)/.exec(err)?.[1];
      if (pid && existsSync(join(killed, 'checkpoints', 'latest'))) {
        clearInterval(t);
        process.kill(Number(pid), 'SIGKILL');
      }
    }, 10);
    child.on('exit', (c) => { clearInterval(t); resolve(c); });
  });
  assert.notEqual(code, 0, err);
  assert.match(err, /launch: rank 1 \(pid \d+\) was killed by SIGKILL; stopping the others/);
  const ck = loadLatestCheckpoint(join(killed, 'checkpoints'));
  assert.ok(ck && ck.state.step > 0 && ck.state.step < steps, `killed mid-run (at step ${ck?.state.step})`);
  ck!.trainable.forEach((t) => t.dispose());
  ck!.optimizer.forEach((t) => t.dispose());
  const other = cli(...train(killed, 8, steps, '--resume'));
  assert.equal(other.status, 1);
  assert.match(other.stderr, /cannot resume from .*: it was trained on 2 process\(es\) and this run has 1/);
  const resumed = cli(...launch(...train(killed, 4, steps, '--save-every', '1', '--resume')));
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.match(resumed.stdout, /resumed from .*step-/);
  const d = maxDiff(join(straight, 'final'), join(killed, 'final'));
  assert.ok(d < 1e-6, `resumed adapter differs by ${d}`);
});

test('Ctrl-C reaches every process: they stop at the same step, rank 0 saves it, the launcher exits 130', { skip }, async () => {
  const out = join(work, 'interrupted');
  const child = spawn(process.execPath, [bin, ...launch(...train(out, 4, 200, '--save-every', '1'))], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
  const code = await new Promise<number | null>((resolve) => {
    const t = setInterval(() => {
      if (existsSync(join(out, 'checkpoints', 'latest'))) {
        clearInterval(t);
        child.kill('SIGINT');
      }
    }, 10);
    child.on('exit', (c) => { clearInterval(t); resolve(c); });
  });
  assert.equal(code, 130, err);
  const ck = loadLatestCheckpoint(join(out, 'checkpoints'));
  assert.ok(ck && ck.state.step < 200, `stopped early (at step ${ck?.state.step})`);
  ck!.trainable.forEach((t) => t.dispose());
  ck!.optimizer.forEach((t) => t.dispose());
  assert.ok(!existsSync(join(out, 'final')), 'an interrupted run writes no final/');
});

test('launch refuses a missing command and a multi-node run without --master', () => {
  assert.match(cli('launch', '--nproc', '2').stderr, /launch needs the command after "--"/);
  assert.match(cli('launch', '--nproc', '2', '--nnodes', '2', '--node-rank', '1', '--', 'train').stderr, /--master ADDR:PORT is required with --nnodes > 1/);
});
