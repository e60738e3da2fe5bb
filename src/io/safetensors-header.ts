// The safetensors header: dtype names, the error type, and strict validation of the JSON header.
// Format (https://github.com/huggingface/safetensors): 8 bytes little-endian u64 N, then N bytes of
// UTF-8 JSON {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the
// data section; offsets are relative to the data section, which the tensors must cover exactly.
import type { DType } from '../tensor/index.js';
import { duplicateKeys, objectKeys } from './json-keys.js';

/** adapterkit dtype -> safetensors dtype name. */
export const SAFETENSORS_DTYPE: Readonly<Record<DType, string>> = {
  bfloat16: 'BF16', float16: 'F16', float32: 'F32', float64: 'F64',
  int64: 'I64', int32: 'I32', int8: 'I8', uint8: 'U8', bool: 'BOOL',
};

/** safetensors dtype name -> adapterkit dtype, for the dtypes the engine can hold. */
export const DTYPE_FROM_SAFETENSORS: ReadonlyMap<string, DType> = new Map(
  Object.entries(SAFETENSORS_DTYPE).map(([k, v]) => [v, k as DType]),
);

// Bits per element of every dtype the format defines (safetensors' Dtype enum), including the
// ones adapterkit cannot hold: a file with an I16 or F8 tensor still has a checkable layout, and
// its other tensors stay readable (reading the I16 one fails with UNSUPPORTED_DTYPE).
export const SAFETENSORS_BITS: ReadonlyMap<string, number> = new Map([
  ['BOOL', 8], ['F4', 4], ['F6_E2M3', 6], ['F6_E3M2', 6], ['U8', 8], ['I8', 8], ['F8_E5M2', 8],
  ['F8_E4M3', 8], ['F8_E8M0', 8], ['I16', 16], ['U16', 16], ['F16', 16], ['BF16', 16], ['I32', 32],
  ['U32', 32], ['F32', 32], ['C64', 64], ['F64', 64], ['I64', 64], ['U64', 64],
]);

/** The safetensors crate refuses headers above 100 MB (MAX_HEADER_SIZE); so do we. */
export const MAX_HEADER_BYTES = 100_000_000;

export type SafetensorsErrorCode =
  // file and header framing
  | 'IO_ERROR' | 'FILE_TOO_SHORT' | 'HEADER_TOO_LARGE' | 'HEADER_PAST_EOF' | 'HEADER_NOT_UTF8'
  | 'HEADER_NOT_JSON' | 'HEADER_NOT_OBJECT' | 'DUPLICATE_NAME' | 'BAD_METADATA'
  // one tensor entry
  | 'ENTRY_NOT_OBJECT' | 'ENTRY_MISSING_FIELD' | 'UNKNOWN_DTYPE' | 'BAD_SHAPE' | 'BAD_OFFSETS'
  | 'REVERSED_OFFSETS' | 'BYTE_LENGTH_MISMATCH'
  // the layout of the data section
  | 'TRUNCATED' | 'OFFSETS_OUT_OF_RANGE' | 'OVERLAPPING_TENSORS' | 'GAP_BETWEEN_TENSORS' | 'DATA_NOT_COVERED'
  // using a file
  | 'UNKNOWN_TENSOR' | 'UNSUPPORTED_DTYPE' | 'CLOSED'
  // writing
  | 'INVALID_NAME' | 'INVALID_TENSOR'
  // sharded checkpoints
  | 'NO_CHECKPOINT' | 'INDEX_NOT_JSON' | 'BAD_INDEX' | 'BAD_SHARD_PATH' | 'MISSING_SHARD'
  | 'NAME_NOT_IN_SHARD' | 'NAME_IN_TWO_SHARDS';

/** A malformed or misused safetensors file (or sharded checkpoint). One `code` per problem. */
export class SafetensorsError extends Error {
  override readonly name = 'SafetensorsError';
  readonly code: SafetensorsErrorCode;
  /** The file the problem is in. */
  readonly file: string;
  /** The tensor concerned, when there is one. */
  readonly tensor: string | undefined;

  constructor(code: SafetensorsErrorCode, file: string, message: string, opts: { tensor?: string; cause?: unknown } = {}) {
    super(`${file}: ${message} [${code}]`, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.file = file;
    this.tensor = opts.tensor;
  }
}

/** One validated header entry. Offsets are relative to the data section. */
export interface HeaderEntry {
  name: string;
  /** The safetensors dtype name, e.g. "BF16". */
  format: string;
  /** The adapterkit dtype, or undefined for a format the engine cannot hold (I16, F8_E4M3, ...). */
  dtype: DType | undefined;
  shape: number[];
  begin: number;
  end: number;
}

export interface ParsedHeader {
  /** Entries in data order (by offset). */
  entries: HeaderEntry[];
  metadata: Record<string, string>;
}

/**
 * Validates a header (its raw bytes) against a data section of `dataLength` bytes. Throws a
 * SafetensorsError naming `file` (and the tensor) for the first problem found.
 */
export function parseHeader(file: string, raw: Uint8Array, dataLength: number): ParsedHeader {
  const fail = (code: SafetensorsErrorCode, msg: string, tensor?: string): never => {
    throw new SafetensorsError(code, file, tensor === undefined ? msg : `tensor ${JSON.stringify(tensor)}: ${msg}`, tensor === undefined ? {} : { tensor });
  };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(raw);
  } catch {
    return fail('HEADER_NOT_UTF8', 'the header is not valid UTF-8 (not a safetensors file, or corrupted)');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail('HEADER_NOT_JSON', `the header is not valid JSON (${(e as Error).message}); starts ${JSON.stringify(text.slice(0, 40))}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return fail('HEADER_NOT_OBJECT', `the header must be a JSON object, got ${Array.isArray(json) ? 'an array' : typeof json === 'object' ? 'null' : `a ${typeof json}`}`);
  }
  const dups = duplicateKeys(objectKeys(text));
  if (dups.length) fail('DUPLICATE_NAME', `the header names ${dups.slice(0, 3).map((d) => JSON.stringify(d)).join(', ')} more than once`, dups[0]);

  const header = json as Record<string, unknown>;
  const metadata = checkMetadata(header['__metadata__'], fail);
  const entries: HeaderEntry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name !== '__metadata__') entries.push(checkEntry(name, value, fail));
  }
  checkLayout(entries, dataLength, fail);
  return { entries, metadata };
}

type Fail = (code: SafetensorsErrorCode, msg: string, tensor?: string) => never;

function checkMetadata(m: unknown, fail: Fail): Record<string, string> {
  if (m === undefined) return {};
  if (typeof m !== 'object' || m === null || Array.isArray(m)) {
    return fail('BAD_METADATA', `"__metadata__" must be an object of strings, got ${m === null ? 'null' : Array.isArray(m) ? 'an array' : typeof m}`);
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(m)) {
    if (typeof v !== 'string') fail('BAD_METADATA', `"__metadata__" values must be strings; ${JSON.stringify(k)} is ${v === null ? 'null' : typeof v}`);
    out[k] = v as string;
  }
  return out;
}

function checkEntry(name: string, value: unknown, fail: Fail): HeaderEntry {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return fail('ENTRY_NOT_OBJECT', `entry must be an object {dtype, shape, data_offsets}, got ${preview(value)}`, name);
  }
  const e = value as Record<string, unknown>;
  for (const field of ['dtype', 'shape', 'data_offsets']) {
    if (!(field in e)) fail('ENTRY_MISSING_FIELD', `entry has no "${field}"`, name);
  }
  const format = e['dtype'];
  const bits = typeof format === 'string' ? SAFETENSORS_BITS.get(format) : undefined;
  if (bits === undefined) {
    fail('UNKNOWN_DTYPE', `unknown dtype ${JSON.stringify(format)}; safetensors defines ${[...SAFETENSORS_BITS.keys()].join(', ')}`, name);
  }
  const shape = e['shape'];
  if (!Array.isArray(shape) || !shape.every((s) => Number.isSafeInteger(s) && (s as number) >= 0)) {
    fail('BAD_SHAPE', `shape must be an array of non-negative integers, got ${preview(shape)}`, name);
  }
  const offs = e['data_offsets'];
  if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) {
    fail('BAD_OFFSETS', `data_offsets must be two non-negative integers [begin, end], got ${preview(offs)}`, name);
  }
  const [begin, end] = offs as [number, number];
  if (begin > end) fail('REVERSED_OFFSETS', `data_offsets [${begin}, ${end}] end before they begin`, name);
  // BigInt: a shape like [2^40, 2^40] must not overflow into a plausible-looking length.
  const numel = (shape as number[]).reduce((a, s) => a * BigInt(s), 1n);
  const wantBits = numel * BigInt(bits!);
  if (wantBits !== BigInt(end - begin) * 8n) {
    const want = wantBits % 8n === 0n ? `${wantBits / 8n} bytes` : `${wantBits} bits (not a whole number of bytes)`;
    fail('BYTE_LENGTH_MISMATCH', `shape [${(shape as number[]).join(', ')}] of ${format as string} needs ${want}, but data_offsets [${begin}, ${end}] span ${end - begin}`, name);
  }
  return { name, format: format as string, dtype: DTYPE_FROM_SAFETENSORS.get(format as string), shape: shape as number[], begin, end };
}

// The crate requires the tensors to tile the data section exactly, in any order: no overlap (two
// names aliasing bytes), no gap, nothing after the last tensor. The order of these checks decides
// which code a file gets: overlaps first (they are about the header alone); then a header needing
// more bytes in total than the file holds is a truncated file; a header that fits in total but
// points one tensor past the end has a wrong offset; the rest are holes.
function checkLayout(entries: HeaderEntry[], dataLength: number, fail: Fail): void {
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let reach = 0;
  let prev: HeaderEntry | undefined;
  for (const e of entries) {
    if (prev && e.begin < reach) {
      fail('OVERLAPPING_TENSORS', `bytes [${e.begin}, ${e.end}) overlap tensor ${JSON.stringify(prev.name)} at [${prev.begin}, ${prev.end})`, e.name);
    }
    if (e.end >= reach) { reach = e.end; prev = e; }
  }
  const total = entries.reduce((a, e) => a + (e.end - e.begin), 0);
  if (total > dataLength) {
    fail('TRUNCATED', `the header describes ${total} bytes of tensor data but the file holds only ${dataLength} after the header: the file is truncated (interrupted download or copy?)`);
  }
  for (const e of entries) {
    if (e.end > dataLength) fail('OFFSETS_OUT_OF_RANGE', `data_offsets [${e.begin}, ${e.end}] lie outside the data section (${dataLength} bytes)`, e.name);
  }
  let cursor = 0;
  for (const e of entries) {
    if (e.begin > cursor) fail('GAP_BETWEEN_TENSORS', `${e.begin - cursor} unused bytes at [${cursor}, ${e.begin}) before this tensor; safetensors requires contiguous tensors`, e.name);
    cursor = e.end;
  }
  if (cursor < dataLength) {
    fail('DATA_NOT_COVERED', `${dataLength - cursor} bytes after the last tensor (data section is ${dataLength} bytes, tensors cover ${cursor})`);
  }
}

// A short rendering of a bad value for a message. JSON.stringify recurses, so a hostile header
// nesting arrays a million deep (which JSON.parse accepts) would overflow the stack here.
function preview(v: unknown): string {
  let s: string | undefined;
  try {
    s = JSON.stringify(v);
  } catch {
    s = Array.isArray(v) ? '[[[... (deeply nested)' : typeof v;
  }
  s ??= String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** An UNKNOWN_TENSOR error naming up to three close names ("did you mean"). */
export function unknownTensor(file: string, name: string, names: readonly string[]): SafetensorsError {
  const close = names
    .map((n) => ({ n, d: editDistance(name, n, 1 + Math.max(4, name.length >> 1)) }))
    .filter((x) => x.d !== Infinity)
    .sort((a, b) => a.d - b.d)
    .slice(0, 3)
    .map((x) => JSON.stringify(x.n));
  const hint = close.length ? `; did you mean ${close.join(', ')}?` : names.length ? `; it holds ${names.length} tensors, e.g. ${names.slice(0, 3).map((n) => JSON.stringify(n)).join(', ')}` : '; it holds no tensors';
  return new SafetensorsError('UNKNOWN_TENSOR', file, `no tensor named ${JSON.stringify(name)}${hint}`, { tensor: name });
}

/** Levenshtein distance, or Infinity once it exceeds `limit` (keeps thousands of names cheap). */
function editDistance(a: string, b: string, limit: number): number {
  if (Math.abs(a.length - b.length) > limit) return Infinity;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      best = Math.min(best, cur[j]!);
    }
    if (best > limit) return Infinity;
    prev = cur;
  }
  return prev[b.length]! <= limit ? prev[b.length]! : Infinity;
}
