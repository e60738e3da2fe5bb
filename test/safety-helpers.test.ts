// The helpers behind the hostile-input table, against hand-made cases: key suggestions, output
// folder checks and stale temporaries, metrics truncation, the resume point, regular files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { editDistance, rejectUnknownKeys, suggestKey } from '../src/io/config-keys.js';
import { prepareOutputDir, removeStaleTemporaries } from '../src/io/output-dir.js';
import { readRegularFile, NotRegularFileError } from '../src/io/files.js';
import { truncateMetrics } from '../src/train/metrics-file.js';
import { findResumeCheckpoint } from '../src/train/checkpoint.js';

const work = mkdtempSync(join(tmpdir(), 'ak-safety-'));

test('key suggestions: case, "_" and "-" ignored, edit distance bounded, aliases, none when far', () => {
  assert.equal(editDistance('kitten', 'sitting'), 3);
  assert.equal(suggestKey('batch_size', ['batchSize', 'lr']), 'batchSize');
  assert.equal(suggestKey('BATCHSIZE', ['batchSize', 'lr']), 'batchSize');
  assert.equal(suggestKey('epocs', ['epochs', 'lr']), 'epochs');
  assert.equal(suggestKey('learningRate', ['lr'], { learningrate: 'lr' }), 'lr');
  assert.equal(suggestKey('frobnicate', ['lr', 'epochs']), null);
  assert.throws(() => rejectUnknownKeys({ lr: 1, epocs: 2 }, ['lr', 'epochs'], 'cfg'), /^Error: cfg: unknown key "epocs" \(did you mean "epochs"\?\)$/);
  assert.throws(() => rejectUnknownKeys({ zzz: 1 }, ['lr', 'epochs'], 'cfg'), /cfg: unknown key "zzz"; known keys: lr, epochs/);
  assert.doesNotThrow(() => rejectUnknownKeys({ lr: 1 }, ['lr'], 'cfg'));
});

test('output folders: inputs refused, non-empty needs force, only dead writers\' temporaries removed', () => {
  const dir = join(work, 'out');
  assert.equal(prepareOutputDir(dir, { flag: '--out' }), false);
  assert.ok(!existsSync(dir), 'a check creates nothing');
  mkdirSync(dir);
  assert.throws(() => prepareOutputDir(dir, { flag: '--out', inputs: [{ flag: '--model', path: join(dir, '.') }], force: true }), /is the --model folder itself/);
  const dead = `.model.safetensors.${4_194_000}.0123456789ab.tmp`;
  const live = `.model.safetensors.${process.pid}.0123456789ab.tmp`;
  writeFileSync(join(dir, dead), 'x');
  writeFileSync(join(dir, live), 'x');
  writeFileSync(join(dir, 'user.txt'), 'x');
  let pidAlive = true;
  try { process.kill(4_194_000, 0); } catch { pidAlive = false; }
  assert.deepEqual(removeStaleTemporaries(dir), pidAlive ? [] : [dead]);
  assert.ok(existsSync(join(dir, live)) && existsSync(join(dir, 'user.txt')));
  assert.throws(() => prepareOutputDir(dir, { flag: '--out', forceFlag: '--force' }), /already exists and is not empty .*pass --force/);
  assert.equal(prepareOutputDir(dir, { flag: '--out', force: true }), true);
  writeFileSync(join(work, 'file'), 'x');
  assert.throws(() => prepareOutputDir(join(work, 'file'), { flag: '--out', force: true }), /is a file, not a folder/);
});

test('metrics.jsonl is cut back to a step, torn lines dropped', () => {
  const f = join(work, 'metrics.jsonl');
  writeFileSync(f, '{"step":1,"loss":2}\n{"step":2,"loss":1}\n{"step":2,"eval_loss":1}\n{"step":3,"loss":0.5}\n{"step":4,"lo');
  assert.equal(truncateMetrics(f, 2), 2);
  assert.equal(readFileSync(f, 'utf8'), '{"step":1,"loss":2}\n{"step":2,"loss":1}\n{"step":2,"eval_loss":1}\n');
  assert.equal(truncateMetrics(f, 2), 0);
  assert.equal(truncateMetrics(join(work, 'none.jsonl'), 2), 0);
});

test('resume point: latest when complete, else the newest complete step folder, else none', () => {
  const root = join(work, 'checkpoints');
  assert.equal(findResumeCheckpoint(root), null);
  const make = (name: string, complete: boolean) => {
    mkdirSync(join(root, name), { recursive: true });
    for (const f of complete ? ['trainer_state.json', 'trainable.safetensors', 'optimizer.safetensors'] : ['trainer_state.json']) writeFileSync(join(root, name, f), '{}');
  };
  make('step-00000002', true);
  make('step-00000004', true);
  make('step-00000006', false);  // killed while being written
  assert.deepEqual(findResumeCheckpoint(root), { dir: join(root, 'step-00000004'), note: `${join(root, 'latest')} is missing; resuming from the newest complete checkpoint, step-00000004` });
  writeFileSync(join(root, 'latest'), 'step-00000002\n');
  assert.deepEqual(findResumeCheckpoint(root), { dir: join(root, 'step-00000002'), note: null });
  writeFileSync(join(root, 'latest'), 'step-00000006\n');
  assert.match(findResumeCheckpoint(root)!.note!, /names step-00000006, which is incomplete or missing; resuming from .* step-00000004/);
});

test('regular files only: a FIFO is refused at once, a folder too', () => {
  const fifo = join(work, 'fifo');
  execFileSync('mkfifo', [fifo]);
  assert.throws(() => readRegularFile(fifo, 'data file'), (e: Error) => e instanceof NotRegularFileError && /data file .*fifo is a named pipe \(FIFO\)/.test(e.message));
  assert.throws(() => readRegularFile(work, 'config'), /is a folder, not a regular file/);
  writeFileSync(join(work, 'ok.txt'), 'hello');
  assert.equal(readRegularFile(join(work, 'ok.txt'), 'x', 'utf8'), 'hello');
});

test.after(() => rmSync(work, { recursive: true, force: true }));
