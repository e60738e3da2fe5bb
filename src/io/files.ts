// Opening input files safely. A FIFO, a socket or a device named as config.json or
// model.safetensors makes a plain open() or read block forever (a FIFO waits for a writer, a
// device never ends), so every reader of user-named files goes through here: the file is opened
// with O_NONBLOCK (which never waits on a FIFO and changes nothing for regular files), checked with
// fstat on the opened descriptor (no window between the check and the open), and refused unless it
// is a regular file.
import { closeSync, constants, fstatSync, openSync, readFileSync, type Stats } from 'node:fs';

/** A path that exists but is not a regular file (a folder, FIFO, socket or device). */
export class NotRegularFileError extends Error {
  override readonly name = 'NotRegularFileError';
}

function kindOf(st: Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a named pipe (FIFO)';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice() || st.isBlockDevice()) return 'a device';
  return 'not a regular file';
}

/**
 * Opens `path` for reading and returns the descriptor, or throws without blocking when it is not
 * a regular file. `what` names the file in the message (e.g. "config.json").
 */
export function openRegularFile(path: string, what = 'file'): number {
  // O_NONBLOCK: opening a FIFO for reading otherwise waits until some process opens it for writing.
  const fd = openSync(path, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  let st: Stats;
  try {
    st = fstatSync(fd);
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  if (!st.isFile()) {
    closeSync(fd);
    throw new NotRegularFileError(`${what} ${path} is ${kindOf(st)}, not a regular file; give a regular file`);
  }
  return fd;
}

/** readFileSync for user-named files: refuses FIFOs, sockets, devices and folders instead of hanging. */
export function readRegularFile(path: string, what?: string): Buffer;
export function readRegularFile(path: string, what: string | undefined, encoding: 'utf8'): string;
export function readRegularFile(path: string, what?: string, encoding?: 'utf8'): Buffer | string {
  const fd = openRegularFile(path, what);
  try {
    return encoding ? readFileSync(fd, encoding) : readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/**
 * A user-named JSON file that must hold an object (config.json, adapter_config.json,
 * generation_config.json): read through the regular-file check, parse errors and non-objects named
 * with the path. `makeError` chooses the error class (ConfigError for model configs).
 */
export function readJsonObjectFile(path: string, what: string, makeError: (msg: string) => Error = (m) => new Error(m)): Record<string, unknown> {
  return parseJsonObject(readRegularFile(path, what, 'utf8'), path, makeError);
}

/** JSON text that must be an object; errors name `path`. */
export function parseJsonObject(text: string, path: string, makeError: (msg: string) => Error = (m) => new Error(m)): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw makeError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw makeError(`${path} must hold a JSON object`);
  return raw as Record<string, unknown>;
}
