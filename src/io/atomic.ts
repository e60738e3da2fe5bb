// Atomic file replacement: readers see either the old file or the complete new one, never a
// half-written checkpoint, even if the process dies or the disk fills up mid-write.
import { closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/**
 * Writes `chunks` to `path` atomically: into a temporary file in the same folder (a rename is only
 * atomic within one file system), fsync'd, renamed over the target, then the folder fsync'd so the
 * rename itself survives a power cut. On any failure the temporary file is removed, the old file
 * (if any) is left untouched, and the error is rethrown.
 *
 * `chunks` may be a lazy iterable (a generator), so a large checkpoint is streamed one tensor at a
 * time instead of being assembled in memory; an exception thrown by the iterable aborts the write.
 *
 * @example writeFileAtomic('out/config.json', new TextEncoder().encode('{}'))
 */
export function writeFileAtomic(path: string, chunks: Iterable<Uint8Array> | Uint8Array): void {
  const dir = dirname(path);
  // pid + random: two processes (or two calls in one process) never share a temporary name.
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  let fd: number | null = null;
  try {
    fd = openSync(tmp, 'wx', 0o644);  // 'x': fail rather than clobber a file we did not create
    const parts: Iterable<Uint8Array> = chunks instanceof Uint8Array ? [chunks] : chunks;
    for (const chunk of parts) writeAll(fd, chunk);
    fsyncSync(fd);
    closeSync(fd);
    fd = null;
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== null) {
      try { closeSync(fd); } catch { /* already failing; the original error matters */ }
    }
    try { unlinkSync(tmp); } catch { /* never created, or already renamed */ }
    throw e;
  }
  fsyncDir(dir);
}

// writeSync may write fewer bytes than asked (large buffers, signals); loop until all are written.
// Each iteration either advances or throws, so the loop is bounded by the chunk length.
function writeAll(fd: number, chunk: Uint8Array): void {
  if (!(chunk instanceof Uint8Array)) throw new TypeError(`writeFileAtomic: chunks must be Uint8Arrays, got ${Object.prototype.toString.call(chunk)}`);
  let off = 0;
  while (off < chunk.length) {
    const n = writeSync(fd, chunk, off, chunk.length - off);
    if (n <= 0) throw new Error(`writeFileAtomic: write returned ${n}`);
    off += n;
  }
}

// Persists the directory entry created by the rename. Some platforms and file systems (Windows,
// some network mounts) cannot open or fsync a directory; the data itself is already durable there,
// so those specific refusals are not failures.
function fsyncDir(dir: string): void {
  let fd: number | null = null;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF' && code !== 'EACCES') throw e;
  } finally {
    if (fd !== null) closeSync(fd);
  }
}
