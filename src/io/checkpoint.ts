// Hugging Face checkpoints: a single model.safetensors, or shards model-00001-of-0000N.safetensors
// listed by model.safetensors.index.json ({"metadata": {...}, "weight_map": {name: shard file}}).
import { readFileSync, readdirSync, statSync, unlinkSync, mkdirSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import type { Tensor } from '../tensor/index.js';
import { writeFileAtomic } from './atomic.js';
import { NotRegularFileError, readRegularFile } from './files.js';
import { duplicateKeys, objectKeys } from './json-keys.js';
import { SafetensorsError, unknownTensor } from './safetensors-header.js';
import {
  SafetensorsFile, byteLengthOf, tensorEntries, writeSafetensors, type ReadOptions, type TensorEntries, type TensorInfo,
} from './safetensors.js';

const SINGLE = 'model.safetensors';
const INDEX = 'model.safetensors.index.json';

/**
 * Reads a checkpoint tensor by tensor, whether it is one file or sharded. open() validates the
 * whole index up front (every shard exists and holds the names mapped to it, no name in two
 * shards) by reading each shard's header once; a shard's file handle is then opened on the first
 * read from it, and close() closes them all.
 * @example
 * using ckpt = CheckpointReader.open('models/llama-3.2-1b');
 * const w = ckpt.read('model.embed_tokens.weight', { dtype: 'float32' });
 */
export class CheckpointReader implements Disposable {
  /** The file or folder given to open(). */
  readonly path: string;
  /** The index file of a sharded checkpoint, or null for a single file. */
  readonly indexPath: string | null;
  /** The index's "metadata" object (e.g. {total_size}); {} for a single file. */
  readonly indexMetadata: Readonly<Record<string, unknown>>;
  private readonly shardOf: Map<string, string>;
  private readonly handles = new Map<string, SafetensorsFile>();
  private isClosed = false;

  private constructor(path: string, indexPath: string | null, indexMetadata: Record<string, unknown>, shardOf: Map<string, string>) {
    this.path = path;
    this.indexPath = indexPath;
    this.indexMetadata = Object.freeze(indexMetadata);
    this.shardOf = shardOf;
  }

  /** Opens a .safetensors file, an index .json, or a folder holding model.safetensors or its index. */
  static open(pathOrDir: string): CheckpointReader {
    let isDir: boolean;
    try {
      isDir = statSync(pathOrDir).isDirectory();
    } catch (e) {
      throw new SafetensorsError('IO_ERROR', pathOrDir, `cannot open: ${(e as Error).message}`, { cause: e });
    }
    if (!isDir) return pathOrDir.endsWith('.json') ? CheckpointReader.sharded(pathOrDir, pathOrDir) : CheckpointReader.single(pathOrDir, pathOrDir);
    // Like transformers, a single file wins over an index when a folder has both.
    const entries = readdirSync(pathOrDir);
    if (entries.includes(SINGLE)) return CheckpointReader.single(pathOrDir, join(pathOrDir, SINGLE));
    if (entries.includes(INDEX)) return CheckpointReader.sharded(pathOrDir, join(pathOrDir, INDEX));
    const near = entries.filter((f) => f.endsWith('.safetensors') || f.endsWith('.index.json'));
    throw new SafetensorsError('NO_CHECKPOINT', pathOrDir, `no ${SINGLE} or ${INDEX} in this folder${near.length ? `; it has ${near.slice(0, 5).join(', ')} (open one of those files directly)` : ''}`);
  }

  private static single(path: string, file: string): CheckpointReader {
    const f = SafetensorsFile.open(file);
    const r = new CheckpointReader(path, null, {}, new Map(f.names().map((n) => [n, file])));
    r.handles.set(file, f);
    return r;
  }

  private static sharded(path: string, indexPath: string): CheckpointReader {
    const { metadata, weightMap } = parseIndex(indexPath);
    const dir = dirname(indexPath);
    const shardOf = new Map<string, string>();
    const byShard = new Map<string, string[]>();
    for (const [name, shard] of weightMap) {
      const p = join(dir, shard);
      shardOf.set(name, p);
      const list = byShard.get(p) ?? [];
      list.push(name);
      byShard.set(p, list);
    }
    for (const [p, names] of byShard) {
      let ok = false;
      try { ok = statSync(p).isFile(); } catch { /* reported below */ }
      if (!ok) throw new SafetensorsError('MISSING_SHARD', indexPath, `shard ${basename(p)} (holding ${names.length} tensors, e.g. ${JSON.stringify(names[0])}) does not exist`, { tensor: names[0]! });
    }
    for (const [p, names] of byShard) {
      using f = SafetensorsFile.open(p);
      for (const name of names) {
        if (!f.has(name)) throw new SafetensorsError('NAME_NOT_IN_SHARD', indexPath, `the index puts tensor ${JSON.stringify(name)} in ${basename(p)}, which does not hold it`, { tensor: name });
      }
      for (const name of f.names()) {
        const other = shardOf.get(name);
        if (other !== undefined && other !== p) {
          throw new SafetensorsError('NAME_IN_TWO_SHARDS', indexPath, `tensor ${JSON.stringify(name)} is in ${basename(p)} and ${basename(other)}; the index maps it to ${basename(other)}`, { tensor: name });
        }
      }
    }
    return new CheckpointReader(path, indexPath, metadata, shardOf);
  }

  /** Tensor names (index order for a sharded checkpoint, file order for a single file). */
  names(): string[] {
    return [...this.shardOf.keys()];
  }

  has(name: string): boolean {
    return this.shardOf.has(name);
  }

  /** The shard files, in the order they first appear. */
  get files(): string[] {
    return [...new Set(this.shardOf.values())];
  }

  info(name: string): TensorInfo {
    return this.shard(name).info(name);
  }

  /** Reads one tensor (opening its shard if needed). The caller owns it. */
  read(name: string, opts: ReadOptions = {}): Tensor {
    return this.shard(name).read(name, opts);
  }

  close(): void {
    this.isClosed = true;
    for (const f of this.handles.values()) f.close();
    this.handles.clear();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private shard(name: string): SafetensorsFile {
    if (this.isClosed) throw new SafetensorsError('CLOSED', this.indexPath ?? this.path, `cannot use ${JSON.stringify(name)}: the checkpoint was closed`, { tensor: name });
    const p = this.shardOf.get(name);
    if (p === undefined) throw unknownTensor(this.indexPath ?? this.path, name, this.names());
    let f = this.handles.get(p);
    if (f === undefined) {
      f = SafetensorsFile.open(p);
      this.handles.set(p, f);
    }
    return f;
  }
}

/** Reads and checks an index file; returns its metadata and weight map (name -> shard file name). */
function parseIndex(indexPath: string): { metadata: Record<string, unknown>; weightMap: Map<string, string> } {
  const bad = (msg: string, tensor?: string): never => {
    throw new SafetensorsError('BAD_INDEX', indexPath, msg, tensor === undefined ? {} : { tensor });
  };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(readRegularFile(indexPath, 'checkpoint index'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== undefined || e instanceof NotRegularFileError) throw new SafetensorsError('IO_ERROR', indexPath, `cannot read: ${(e as Error).message}`, { cause: e });
    throw new SafetensorsError('INDEX_NOT_JSON', indexPath, 'the index is not valid UTF-8');
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError('INDEX_NOT_JSON', indexPath, `the index is not valid JSON (${(e as Error).message})`);
  }
  if (!isPlainObject(json)) return bad('the index must be a JSON object {"metadata": {...}, "weight_map": {...}}');
  const metadata = json['metadata'] ?? {};
  if (!isPlainObject(metadata)) bad('"metadata" must be an object');
  const wm = json['weight_map'];
  if (!isPlainObject(wm)) return bad('"weight_map" must be an object {tensor name: shard file}');

  // JSON.parse keeps the last of repeated keys; a name listed twice is either a copy-paste slip
  // (same shard) or a real conflict (two shards), and either way the index cannot be trusted.
  const top = objectKeys(text);
  const topDups = duplicateKeys(top);
  if (topDups.length) bad(`the index has ${topDups.map((k) => JSON.stringify(k)).join(', ')} more than once`);
  const wmKey = top.find((k) => k.key === 'weight_map')!;
  const keys = objectKeys(text, wmKey.valueStart);
  for (const name of duplicateKeys(keys)) {
    const shards = new Set(keys.filter((k) => k.key === name).map((k) => {
      const v: unknown = JSON.parse(text.slice(k.valueStart, k.valueEnd));
      return typeof v === 'string' ? v : text.slice(k.valueStart, Math.min(k.valueEnd, k.valueStart + 40));
    }));
    if (shards.size > 1) {
      throw new SafetensorsError('NAME_IN_TWO_SHARDS', indexPath, `the weight map puts tensor ${JSON.stringify(name)} in ${[...shards].join(' and ')}`, { tensor: name });
    }
    throw new SafetensorsError('DUPLICATE_NAME', indexPath, `the weight map lists tensor ${JSON.stringify(name)} more than once`, { tensor: name });
  }
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm)) {
    if (typeof shard !== 'string') bad(`the weight map value of ${JSON.stringify(name)} must be a file name, got ${shard === null ? 'null' : Array.isArray(shard) ? 'an array' : typeof shard}`, name);
    // Shard names are plain file names beside the index: a path could read files outside the
    // checkpoint folder (an index downloaded from the internet is untrusted input).
    const s = shard as string;
    if (s === '' || s === '.' || s === '..' || /[/\\\0]/.test(s)) {
      throw new SafetensorsError('BAD_SHARD_PATH', indexPath, `shard ${JSON.stringify(s)} of tensor ${JSON.stringify(name)} must be a plain file name in the checkpoint folder`, { tensor: name });
    }
    weightMap.set(name, s);
  }
  return { metadata: metadata as Record<string, unknown>, weightMap };
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

export interface ShardedWriteOptions {
  /** Upper bound on the tensor bytes of one shard; a single larger tensor gets a shard of its own. */
  maxShardBytes: number;
  /** File name stem; default 'model' (model.safetensors, model-00001-of-00002.safetensors, ...). */
  baseName?: string;
  /** "__metadata__" of every shard; default {format: 'pt'}, which transformers requires to load it. */
  metadata?: Record<string, string>;
}

export interface ShardedWriteResult {
  /** The safetensors files written, in shard order. */
  files: string[];
  /** The index written, or null when everything fit in one file. */
  indexPath: string | null;
  /** Total tensor bytes (the index's metadata.total_size). */
  totalSize: number;
}

const utf8Order = (a: string, b: string): number => Buffer.compare(Buffer.from(a), Buffer.from(b));
const pad5 = (n: number): string => String(n).padStart(5, '0');

/**
 * Writes a checkpoint folder as transformers does: one `<base>.safetensors` when the tensors fit in
 * `maxShardBytes`, else `<base>-00001-of-0000N.safetensors` shards plus `<base>.safetensors.index.json`.
 * Tensors are packed greedily in name order. Every file is replaced atomically, and files of an
 * earlier write with the same base name that this one does not produce are removed afterwards
 * (a stale model.safetensors beside a new index would otherwise be loaded instead of it).
 * @example writeSharded('out/merged', model.stateDict(), { maxShardBytes: 5e9 })
 */
export function writeSharded(dir: string, tensors: TensorEntries, opts: ShardedWriteOptions): ShardedWriteResult {
  const { maxShardBytes, baseName = 'model', metadata = { format: 'pt' } } = opts;
  if (!Number.isSafeInteger(maxShardBytes) || maxShardBytes <= 0) {
    throw new RangeError(`writeSharded: maxShardBytes must be a positive integer, got ${maxShardBytes}`);
  }
  if (baseName === '' || /[/\\\0]/.test(baseName)) throw new RangeError(`writeSharded: baseName must be a plain file name stem, got ${JSON.stringify(baseName)}`);
  mkdirSync(dir, { recursive: true });
  const single = `${baseName}.safetensors`;
  const list = tensorEntries(join(dir, single), tensors).sort((a, b) => utf8Order(a[0], b[0]));

  const shards: [string, Tensor][][] = [];
  let cur: [string, Tensor][] = [];
  let curBytes = 0;
  let totalSize = 0;
  for (const entry of list) {
    const n = byteLengthOf(entry[1]);
    if (cur.length > 0 && curBytes + n > maxShardBytes) {
      shards.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(entry);
    curBytes += n;
    totalSize += n;
  }
  shards.push(cur);  // possibly empty: no tensors still makes a (valid, empty) checkpoint

  if (shards.length === 1) {
    writeSafetensors(join(dir, single), shards[0]!, metadata);
    removeStale(dir, baseName, new Set([single]));
    return { files: [join(dir, single)], indexPath: null, totalSize };
  }
  // A crash part-way leaves new shards beside the old index; HF's writer shares that window.
  // The index is written last so that a reader never sees an index naming unwritten shards.
  const names = shards.map((_, i) => `${baseName}-${pad5(i + 1)}-of-${pad5(shards.length)}.safetensors`);
  shards.forEach((s, i) => writeSafetensors(join(dir, names[i]!), s, metadata));
  const weightLines: string[] = [];
  shards.forEach((s, i) => { for (const [name] of s) weightLines.push(`    ${JSON.stringify(name)}: ${JSON.stringify(names[i])}`); });
  // Built by hand, as json.dumps(indent=2, sort_keys=True) writes it: a JS object would reorder
  // integer-like tensor names. Names are already sorted, shards follow the sorted names.
  const indexFile = `${baseName}.safetensors.index.json`;
  const text = `{\n  "metadata": {\n    "total_size": ${totalSize}\n  },\n  "weight_map": {\n${weightLines.join(',\n')}\n  }\n}\n`;
  writeFileAtomic(join(dir, indexFile), Buffer.from(text, 'utf8'));
  removeStale(dir, baseName, new Set([...names, indexFile]));
  return { files: names.map((n) => join(dir, n)), indexPath: join(dir, indexFile), totalSize };
}

/** Removes `<base>.safetensors`, its index and `<base>-NNNNN-of-NNNNN.safetensors` files not in `keep`. */
function removeStale(dir: string, baseName: string, keep: Set<string>): void {
  const esc = baseName.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const ours = new RegExp(`^${esc}(\\.safetensors|\\.safetensors\\.index\\.json|-\\d{5}-of-\\d{5}\\.safetensors)$`);
  for (const f of readdirSync(dir)) {
    if (ours.test(f) && !keep.has(f)) unlinkSync(join(dir, f));
  }
}
