// Reading and writing safetensors files. Reading is lazy: open() reads and validates only the
// header, and read(name) reads just that tensor's bytes at its offset, so a checkpoint larger than
// memory loads tensor by tensor. Writing streams one tensor at a time into an atomic replace.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { fromBytes, Tensor, DTYPE_BYTES, type DType, type Device } from '../tensor/index.js';
import { writeFileAtomic } from './atomic.js';
import { openRegularFile } from './files.js';
import {
  MAX_HEADER_BYTES, SAFETENSORS_DTYPE, SafetensorsError, parseHeader, unknownTensor, type HeaderEntry,
} from './safetensors-header.js';

export {
  SafetensorsError, SAFETENSORS_DTYPE, DTYPE_FROM_SAFETENSORS, type SafetensorsErrorCode,
} from './safetensors-header.js';

/** Where a tensor lives and what it is, without reading it. */
export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
  /** Absolute position of the tensor's first byte in `file`. */
  byteOffset: number;
  byteLength: number;
  file: string;
}

export interface ReadOptions {
  /** Cast to this dtype after reading (the stored dtype by default). */
  dtype?: DType;
  device?: Device;
}

/** Tensors to write: a record, a map, or name/tensor pairs (where a repeated name is an error). */
export type TensorEntries = Record<string, Tensor> | ReadonlyMap<string, Tensor> | ReadonlyArray<readonly [string, Tensor]>;

/**
 * An open safetensors file. Holds a file descriptor until close() (or the end of a `using` block).
 * @example
 * using f = SafetensorsFile.open('model.safetensors');
 * const w = f.read('lm_head.weight', { dtype: 'float32' });
 */
export class SafetensorsFile implements Disposable {
  readonly path: string;
  /** The header's "__metadata__" map ({} when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  private fd: number | null;
  private readonly entries: Map<string, HeaderEntry>;
  private readonly dataStart: number;

  private constructor(path: string, fd: number, entries: HeaderEntry[], metadata: Record<string, string>, dataStart: number) {
    this.path = path;
    this.fd = fd;
    this.entries = new Map(entries.map((e) => [e.name, e]));
    this.metadata = Object.freeze(metadata);
    this.dataStart = dataStart;
  }

  /** Opens `path`, reading and strictly validating its header (not its tensors). */
  static open(path: string): SafetensorsFile {
    let fd: number;
    try {
      fd = openRegularFile(path, 'safetensors file');  // never blocks on a FIFO or device
    } catch (e) {
      throw new SafetensorsError('IO_ERROR', path, `cannot open: ${(e as Error).message}`, { cause: e });
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new SafetensorsError('IO_ERROR', path, 'not a regular file');
      const size = st.size;
      if (size < 8) throw new SafetensorsError('FILE_TOO_SHORT', path, `the file is ${size} bytes; a safetensors file starts with an 8-byte header length`);
      const lenBytes = new Uint8Array(8);
      readFully(fd, lenBytes, 0, path);
      const n = new DataView(lenBytes.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_BYTES)) {
        throw new SafetensorsError('HEADER_TOO_LARGE', path, `the header length is ${n} bytes, over the ${MAX_HEADER_BYTES}-byte limit (not a safetensors file? a PyTorch .bin is a zip and starts "PK")`);
      }
      const headerLength = Number(n);
      if (8 + headerLength > size) {
        throw new SafetensorsError('HEADER_PAST_EOF', path, `the header length is ${headerLength} bytes but the file has only ${size - 8} after the length field (truncated file?)`);
      }
      const raw = new Uint8Array(headerLength);
      readFully(fd, raw, 8, path);
      const { entries, metadata } = parseHeader(path, raw, size - 8 - headerLength);
      return new SafetensorsFile(path, fd, entries, metadata, 8 + headerLength);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  /** Tensor names, in the order their data lies in the file. */
  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  info(name: string): TensorInfo {
    const e = this.entry(name);
    return { name, dtype: this.dtypeOf(e), shape: [...e.shape], byteOffset: this.dataStart + e.begin, byteLength: e.end - e.begin, file: this.path };
  }

  /** Reads one tensor from disk (only its bytes), optionally cast and/or moved. The caller owns it. */
  read(name: string, opts: ReadOptions = {}): Tensor {
    if (this.fd === null) throw new SafetensorsError('CLOSED', this.path, `cannot read ${JSON.stringify(name)}: the file was closed`, { tensor: name });
    const e = this.entry(name);
    const dtype = this.dtypeOf(e);
    const bytes = new Uint8Array(e.end - e.begin);
    readFully(this.fd, bytes, this.dataStart + e.begin, this.path);
    // Move the stored bytes first and cast on the device: for bf16 weights read as float32 that
    // moves half the bytes a cast-then-move would.
    const t = fromBytes(bytes, dtype, e.shape, opts.device === undefined ? {} : { device: opts.device });
    if (opts.dtype === undefined || opts.dtype === dtype) return t;
    try {
      return t.to(opts.dtype);
    } finally {
      t.dispose();  // the stored-dtype intermediate
    }
  }

  /** Closes the file; reading afterwards throws. Idempotent. */
  close(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    closeSync(fd);
  }

  [Symbol.dispose](): void {
    this.close();
  }

  get closed(): boolean {
    return this.fd === null;
  }

  private entry(name: string): HeaderEntry {
    const e = this.entries.get(name);
    if (e === undefined) throw unknownTensor(this.path, name, this.names());
    return e;
  }

  private dtypeOf(e: HeaderEntry): DType {
    if (e.dtype === undefined) {
      throw new SafetensorsError('UNSUPPORTED_DTYPE', this.path, `tensor ${JSON.stringify(e.name)} is ${e.format}, which adapterkit cannot hold (it holds ${Object.values(SAFETENSORS_DTYPE).join(', ')})`, { tensor: e.name });
    }
    return e.dtype;
  }
}

// readSync may return fewer bytes than asked (and at most ~2 GiB per call); loop in bounded chunks.
// A zero-byte read means the file shrank after open() validated it.
function readFully(fd: number, into: Uint8Array, position: number, path: string): void {
  const CHUNK = 1 << 30;
  let off = 0;
  while (off < into.length) {
    const n = readSync(fd, into, off, Math.min(CHUNK, into.length - off), position + off);
    if (n <= 0) throw new SafetensorsError('TRUNCATED', path, `unexpected end of file at byte ${position + off} (was the file changed while open?)`);
    off += n;
  }
}

/** Reads every tensor of a file into a Map (name -> tensor, in file order). The caller owns them. */
export function readSafetensors(path: string, opts: ReadOptions = {}): Map<string, Tensor> {
  using f = SafetensorsFile.open(path);
  const out = new Map<string, Tensor>();
  try {
    for (const name of f.names()) out.set(name, f.read(name, opts));
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}

// The crate's writer orders tensors by descending dtype (its Dtype enum, declared in increasing
// alignment order), then by name. With the header padded to 8 bytes, every tensor then starts at a
// multiple of its element size (zero-copy readers need that), and our files match Python's byte
// for byte. Ranks below follow that enum for the dtypes adapterkit writes.
const DTYPE_RANK: Readonly<Record<DType, number>> = {
  bool: 0, uint8: 1, int8: 2, float16: 3, bfloat16: 4, int32: 5, float32: 6, float64: 7, int64: 8,
};

/** Names and tensors, checked: non-empty names, no repeats, no reserved name, live tensors. */
export function tensorEntries(path: string, tensors: TensorEntries): [string, Tensor][] {
  const list: [string, Tensor][] = Array.isArray(tensors)
    ? (tensors as ReadonlyArray<readonly [string, Tensor]>).map(([n, t]) => [n, t])
    : tensors instanceof Map ? [...(tensors as ReadonlyMap<string, Tensor>)] : Object.entries(tensors as Record<string, Tensor>);
  const seen = new Set<string>();
  for (const [name, t] of list) {
    if (typeof name !== 'string' || name === '') throw new SafetensorsError('INVALID_NAME', path, `tensor names must be non-empty strings, got ${JSON.stringify(name)}`);
    if (name === '__metadata__') throw new SafetensorsError('INVALID_NAME', path, '"__metadata__" is reserved for the metadata map; rename the tensor', { tensor: name });
    if (seen.has(name)) throw new SafetensorsError('DUPLICATE_NAME', path, `tensor ${JSON.stringify(name)} is given twice`, { tensor: name });
    seen.add(name);
    if (!(t instanceof Tensor) || t.isDisposed) {
      throw new SafetensorsError('INVALID_TENSOR', path, `tensor ${JSON.stringify(name)} is ${t instanceof Tensor ? 'disposed' : 'not a Tensor'}`, { tensor: name });
    }
  }
  return list;
}

/** Bytes a tensor takes in a safetensors file. */
export function byteLengthOf(t: Tensor): number {
  return t.numel * DTYPE_BYTES[t.dtype];
}

function checkMetadata(path: string, metadata: Record<string, string>): void {
  if (typeof metadata !== 'object' || metadata === null || Array.isArray(metadata)) {
    throw new SafetensorsError('BAD_METADATA', path, 'metadata must be an object of strings');
  }
  for (const [k, v] of Object.entries(metadata)) {
    if (typeof v !== 'string') throw new SafetensorsError('BAD_METADATA', path, `metadata values must be strings; ${JSON.stringify(k)} is ${v === null ? 'null' : typeof v} (JSON.stringify it first)`);
  }
}

const utf8Order = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));

/**
 * Writes tensors (any dtype, device or layout; views are written in logical order) to `path`,
 * atomically. `metadata` becomes the "__metadata__" map (HF loaders expect {format: 'pt'}).
 * @example writeSafetensors('adapter_model.safetensors', { 'lora_A.weight': a }, { format: 'pt' })
 */
export function writeSafetensors(path: string, tensors: TensorEntries, metadata?: Record<string, string>): void {
  const list = tensorEntries(path, tensors);
  if (metadata !== undefined) checkMetadata(path, metadata);
  const items = list
    .map(([name, t]) => ({ name, t, dtype: t.dtype, shape: t.shape, length: byteLengthOf(t) }))
    .sort((a, b) => DTYPE_RANK[b.dtype] - DTYPE_RANK[a.dtype] || utf8Order(a.name, b.name));

  // The JSON text is assembled by hand: a JS object would move integer-like names ("0", "12") to
  // the front, breaking the written order. Metadata keys are sorted so output is deterministic.
  const parts: string[] = [];
  if (metadata !== undefined) {
    const keys = Object.keys(metadata).sort(utf8Order);
    parts.push(`"__metadata__":{${keys.map((k) => `${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`).join(',')}}`);
  }
  let offset = 0;
  for (const it of items) {
    parts.push(`${JSON.stringify(it.name)}:{"dtype":"${SAFETENSORS_DTYPE[it.dtype]}","shape":[${it.shape.join(',')}],"data_offsets":[${offset},${offset + it.length}]}`);
    offset += it.length;
  }
  let json = Buffer.from(`{${parts.join(',')}}`, 'utf8');
  const pad = (8 - (json.length % 8)) % 8;  // the data section starts 8-byte aligned
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  if (json.length > MAX_HEADER_BYTES) {
    throw new SafetensorsError('HEADER_TOO_LARGE', path, `the header would be ${json.length} bytes, over the ${MAX_HEADER_BYTES}-byte limit readers enforce; shard the checkpoint`);
  }
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));

  function* chunks(): Generator<Uint8Array> {
    yield Buffer.concat([prefix, json]);
    for (const it of items) {
      const b = it.t.bytes();  // one tensor in host memory at a time
      if (b.length !== it.length) {
        throw new SafetensorsError('INVALID_TENSOR', path, `tensor ${JSON.stringify(it.name)} gave ${b.length} bytes, expected ${it.length} (was it changed during the write?)`, { tensor: it.name });
      }
      yield b;
    }
  }
  writeFileAtomic(path, chunks());
}
