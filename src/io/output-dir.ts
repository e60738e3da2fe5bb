// Output folders that never destroy what a user has. A command that writes a folder (merge,
// init-model, train) first checks it here: the output may never be one of its own inputs (merging
// into the base folder would overwrite the base), an existing non-empty folder is refused unless
// the caller passes the command's override flag, and temporaries that a killed run of this tool
// left behind (hidden, hundreds of MB) are removed, as long as the process that wrote them is gone.
import { existsSync, readdirSync, realpathSync, rmSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

export class OutputDirError extends Error {
  override readonly name = 'OutputDirError';
}

export interface OutputDirOptions {
  /** The flag that names the folder, for messages: "--out", "--output". */
  flag: string;
  /** Allow writing into an existing non-empty folder. */
  force?: boolean;
  /** The override flag, for messages: "--force", "--overwrite". */
  forceFlag?: string;
  /** Folders the command reads from: the output may be none of them, whatever the flags say. */
  inputs?: { flag: string; path: string }[];
}

const real = (p: string): string => {
  try {
    return realpathSync(p);
  } catch {
    return resolve(p);
  }
};

/**
 * Checks `dir` as an output folder (without creating it: a run that fails early leaves nothing
 * behind) and removes stale temporaries in it. Returns true when the folder already had content
 * (only possible with `force`).
 */
export function prepareOutputDir(dir: string, o: OutputDirOptions): boolean {
  const target = real(dir);
  for (const input of o.inputs ?? []) {
    const src = real(input.path);
    if (src === target) {
      throw new OutputDirError(`${o.flag} ${dir} is the ${input.flag} folder itself (${src}); writing there would overwrite it: pick another folder`);
    }
  }
  if (!existsSync(dir)) return false;
  if (!statSync(dir).isDirectory()) throw new OutputDirError(`${o.flag} ${dir} is a file, not a folder: pick a folder path`);
  removeStaleTemporaries(dir);
  const entries = readdirSync(dir);
  if (entries.length && !o.force) {
    const shown = entries.slice(0, 4).join(', ') + (entries.length > 4 ? `, … (${entries.length} entries)` : '');
    throw new OutputDirError(`${o.flag} ${dir} already exists and is not empty (${shown}); pass ${o.forceFlag ?? '--force'} to write into it, or pick a new folder`);
  }
  return entries.length > 0;
}

function alive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';  // exists, owned by someone else
  }
}

// The temporary names this tool writes: writeFileAtomic's ".<name>.<pid>.<hex>.tmp", checkpoint
// staging folders ".tmp-<pid>-<time>" and the best-model staging folder ".best-tmp-<pid>".
const TEMP_PATTERNS = [/^\..+\.(\d+)\.[0-9a-f]{12}\.tmp$/, /^\.tmp-(\d+)-\d+$/, /^\.best-tmp-(\d+)$/];

/** Removes this tool's temporaries in `dir` whose writing process no longer runs; returns their names. */
export function removeStaleTemporaries(dir: string): string[] {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const name of entries) {
    for (const re of TEMP_PATTERNS) {
      const m = re.exec(name);
      if (m && !alive(Number(m[1]))) {
        rmSync(join(dir, name), { recursive: true, force: true });
        removed.push(name);
        break;
      }
    }
  }
  return removed;
}
