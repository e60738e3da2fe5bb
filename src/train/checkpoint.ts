// Training checkpoints that survive crashes: each is written into a temporary folder (every file
// fsynced), renamed into place in one step, and only then named in `latest` (itself replaced
// atomically). A kill at any moment leaves `latest` pointing at a complete checkpoint.
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { Tensor } from '../tensor/index.js';

export interface TrainState {
  version: 1;
  step: number;
  microStep: number;
  epoch: number;
  loader: unknown;
  optimizerSteps: number;
  bestMetric: number | null;
  bestStep: number | null;
  evalsWithoutImprovement: number;
  /** Adapter methods' state across forwards (PeftModel.runtimeState(): e.g. a per-step rank schedule). */
  adapterRuntime: Record<string, Record<string, unknown>>;
  tokensSeen: number;
  config: unknown;
  /** sha256 of the training examples: resuming over other data is refused (absent in older checkpoints). */
  dataHash?: string;
  /** Processes that trained it (data-parallel); resume needs as many (absent: 1). */
  worldSize?: number;
}

export interface Checkpoint {
  dir: string;
  state: TrainState;
  trainable: Map<string, Tensor>;
  optimizer: Map<string, Tensor>;
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch { /* some filesystems cannot fsync a directory; the rename is still atomic */ }
}

const name = (step: number) => `step-${String(step).padStart(8, '0')}`;

/**
 * Writes a checkpoint under `root` (root/step-XXXXXXXX) and points root/latest at it. `extra` may
 * write more files (e.g. a PEFT adapter folder) into the temporary folder before it is committed.
 */
export function saveCheckpoint(root: string, state: TrainState, trainable: Map<string, Tensor>, optimizer: Map<string, Tensor>, opts: { keep?: number; extra?: (tmpDir: string) => void } = {}): string {
  mkdirSync(root, { recursive: true });
  const tmp = join(root, `.tmp-${process.pid}-${Date.now()}`);
  mkdirSync(tmp);
  try {
    writeSafetensors(join(tmp, 'trainable.safetensors'), trainable);
    writeSafetensors(join(tmp, 'optimizer.safetensors'), optimizer);
    opts.extra?.(tmp);
    writeFileAtomic(join(tmp, 'trainer_state.json'), new TextEncoder().encode(JSON.stringify(state, null, 1)));
    fsyncDir(tmp);
    const final = join(root, name(state.step));
    if (existsSync(final)) rmSync(final, { recursive: true, force: true });
    renameSync(tmp, final);
    fsyncDir(root);
    writeFileAtomic(join(root, 'latest'), new TextEncoder().encode(name(state.step) + '\n'));
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  prune(root, opts.keep ?? 2);
  return join(root, name(state.step));
}

/** Keeps the newest `keep` checkpoints (and whatever `latest` names); removes stale temp folders. */
function prune(root: string, keep: number): void {
  const latest = latestName(root);
  const steps = readdirSync(root).filter((d) => /^step-\d{8}$/.test(d)).sort();
  for (const d of steps.slice(0, Math.max(0, steps.length - keep))) if (d !== latest) rmSync(join(root, d), { recursive: true, force: true });
  for (const d of readdirSync(root)) if (d.startsWith('.tmp-') && !d.includes(`-${process.pid}-`)) rmSync(join(root, d), { recursive: true, force: true });
}

function latestName(root: string): string | null {
  const f = join(root, 'latest');
  if (!existsSync(f)) return null;
  return readFileSync(f, 'utf8').trim() || null;
}

function isComplete(dir: string): boolean {
  return ['trainer_state.json', 'trainable.safetensors', 'optimizer.safetensors'].every((f) => existsSync(join(dir, f)));
}

/**
 * Where a resume starts: the checkpoint `latest` names when it is complete, else the newest
 * complete step-* folder (a kill between the rename and the write of `latest`, or a deleted or
 * damaged `latest`), with a note saying so; null when there is no usable checkpoint at all.
 */
export function findResumeCheckpoint(root: string): { dir: string; note: string | null } | null {
  if (!existsSync(root)) return null;
  let named: string | null = null;
  try { named = latestName(root); } catch { /* unreadable latest: fall back to the folders */ }
  if (named && /^step-\d{8}$/.test(named) && isComplete(join(root, named))) return { dir: join(root, named), note: null };
  const steps = readdirSync(root).filter((d) => /^step-\d{8}$/.test(d)).sort().reverse();
  const newest = steps.find((d) => isComplete(join(root, d)));
  if (!newest) return null;
  const why = named ? `${join(root, 'latest')} names ${named}, which is incomplete or missing` : `${join(root, 'latest')} is missing`;
  return { dir: join(root, newest), note: `${why}; resuming from the newest complete checkpoint, ${newest}` };
}

/** Reads the checkpoint in `dir` (a step-* folder). */
export function loadCheckpoint(dir: string): Checkpoint {
  const state = JSON.parse(readFileSync(join(dir, 'trainer_state.json'), 'utf8')) as TrainState;
  if (state.version !== 1) throw new Error(`${dir}: unsupported trainer_state version ${String(state.version)}`);
  return { dir, state, trainable: readSafetensors(join(dir, 'trainable.safetensors')), optimizer: readSafetensors(join(dir, 'optimizer.safetensors')) };
}

/** The checkpoint `latest` names, or null when there is none. */
export function loadLatestCheckpoint(root: string): Checkpoint | null {
  const n = latestName(root);
  if (!n) return null;
  const dir = join(root, n);
  if (!existsSync(join(dir, 'trainer_state.json'))) throw new Error(`${join(root, 'latest')} names ${n}, which is incomplete or missing`);
  const state = JSON.parse(readFileSync(join(dir, 'trainer_state.json'), 'utf8')) as TrainState;
  if (state.version !== 1) throw new Error(`${dir}: unsupported trainer_state version ${String(state.version)}`);
  return { dir, state, trainable: readSafetensors(join(dir, 'trainable.safetensors')), optimizer: readSafetensors(join(dir, 'optimizer.safetensors')) };
}
