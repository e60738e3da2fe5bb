// The serving engine's adapter pool: adapters load on first use from an adapter root (one folder per
// adapter id, PEFT format), stay resident in an LRU under a count and a byte budget, and are never
// evicted while a request uses them (reference counts). Reloading an id while requests still use the
// old weights loads the new ones under a new internal name, so no request ever sees stale or mixed
// weights. Ids are names, never paths: anything else, and symlinks out of the root, are refused.
import { existsSync, realpathSync, statSync, readdirSync } from 'node:fs';
import { join, resolve, sep } from 'node:path';
import { loadPeftAdapter, readAdapterConfig, adapterMethod, type PeftModel } from '../adapters/index.js';
import { HttpError } from './errors.js';

export interface PoolOptions {
  /** Folder of adapters (`<root>/<id>/adapter_config.json`); null: only adapters loaded explicitly. */
  root: string | null;
  /** Most adapters resident at once. */
  maxResident: number;
  /** Most bytes of adapter weights resident at once. */
  budgetBytes: number;
  /** Largest rank accepted (r and every rank_pattern value). */
  maxRank: number;
}

interface Entry {
  id: string;
  /** The adapter's name inside the PeftModel (pool_<n>: one per load). */
  internal: string;
  bytes: number;
  refs: number;
  lastUsed: number;
  /** Replaced by a reload or unloaded while in use: removed when the last request lets go. */
  retired: boolean;
}

const ID = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

export class AdapterPool {
  private readonly entries = new Map<string, Entry>();  // by internal name
  private readonly current = new Map<string, string>();  // id -> internal name serving new requests
  private readonly explicitPaths = new Map<string, string>();  // id -> folder given to load()
  private version = 0;
  private clock = 0;
  readonly stats = { hits: 0, misses: 0, evictions: 0, loads: 0, loadErrors: 0 };

  constructor(private readonly peft: PeftModel, readonly o: PoolOptions, private readonly log: (s: string) => void = () => {}) {}

  /** Ids the server knows: resident ones and those in the adapter root. */
  known(): string[] {
    const ids = new Set(this.current.keys());
    for (const id of this.explicitPaths.keys()) ids.add(id);
    if (this.o.root && existsSync(this.o.root)) {
      for (const d of readdirSync(this.o.root)) if (ID.test(d) && existsSync(join(this.o.root, d, 'adapter_config.json'))) ids.add(d);
    }
    return [...ids].sort();
  }

  resident(): { id: string; bytes: number; refs: number }[] {
    return [...this.entries.values()].filter((e) => !e.retired).map((e) => ({ id: e.id, bytes: e.bytes, refs: e.refs }));
  }
  get residentBytes(): number {
    return [...this.entries.values()].reduce((s, e) => s + e.bytes, 0);
  }

  /** The folder of an id, checked: a name, inside the root (symlinks resolved), holding an adapter. */
  private folderOf(id: string): string {
    if (!ID.test(id) || id.includes('..')) throw new HttpError(400, `adapter id "${id}" is not a name (letters, digits, _ . - only; no paths)`, 'invalid_request_error');
    const explicit = this.explicitPaths.get(id);
    if (explicit) return explicit;
    if (!this.o.root) throw new HttpError(404, `adapter "${id}" is not loaded and the server has no adapter root`, 'not_found_error');
    const dir = join(this.o.root, id);
    if (!existsSync(join(dir, 'adapter_config.json'))) throw new HttpError(404, `adapter "${id}" not found`, 'not_found_error');
    const real = realpathSync(dir);
    const root = realpathSync(this.o.root);
    if (!(real + sep).startsWith(root + sep)) throw new HttpError(400, `adapter "${id}" resolves outside the adapter root (a symlink?)`, 'invalid_request_error');
    return real;
  }

  /** Refuses what the server cannot serve before loading it: the rank limit, methods without mixed batches. */
  private check(id: string, dir: string): void {
    let config;
    try {
      config = readAdapterConfig(dir, () => {});
    } catch (e) {
      throw new HttpError(400, `adapter "${id}": ${(e as Error).message}`, 'invalid_request_error');
    }
    const c = config as unknown as { r?: unknown; rankPattern?: Record<string, unknown> };
    const ranks = [c.r, ...Object.values(c.rankPattern ?? {})].filter((r): r is number => typeof r === 'number');
    const top = ranks.length ? Math.max(...ranks) : 0;
    if (top > this.o.maxRank) throw new HttpError(400, `adapter "${id}" has rank ${top}, above this server's limit of ${this.o.maxRank} (--max-rank)`, 'invalid_request_error');
    const caps = adapterMethod(config.peftType).capabilities(config as never);
    if (!caps.mixedBatch) throw new HttpError(400, `adapter "${id}" is ${config.peftType}, which cannot share a batch with other adapters; this server batches adapters together`, 'invalid_request_error');
  }

  /** The internal name serving `id` now, loading it when needed; counts one reference until release(). */
  acquire(id: string): string {
    let internal = this.current.get(id);
    if (internal) this.stats.hits++;
    else {
      this.stats.misses++;
      internal = this.loadFrom(id, this.folderOf(id));
    }
    const e = this.entries.get(internal)!;
    e.refs++;
    e.lastUsed = ++this.clock;
    return internal;
  }

  release(internal: string): void {
    const e = this.entries.get(internal);
    if (!e) return;
    e.refs = Math.max(0, e.refs - 1);
    if (e.refs === 0 && e.retired) this.drop(e);
  }

  /** (Re)loads an adapter, from `path` (an explicit folder) or the root; returns its internal name. */
  load(id: string, path?: string): string {
    if (path !== undefined) {
      if (!ID.test(id)) throw new HttpError(400, `adapter id "${id}" is not a name (letters, digits, _ . - only)`, 'invalid_request_error');
      if (!existsSync(join(path, 'adapter_config.json')) || !statSync(path).isDirectory()) throw new HttpError(400, `no adapter folder at ${path}`, 'invalid_request_error');
      this.explicitPaths.set(id, resolve(path));
    }
    return this.loadFrom(id, this.folderOf(id));
  }

  /** Unloads an id: now when unused, else once its requests finish. Returns false when it was not resident. */
  unload(id: string): boolean {
    const internal = this.current.get(id);
    if (!internal) return false;
    this.current.delete(id);
    const e = this.entries.get(internal)!;
    e.retired = true;
    if (e.refs === 0) this.drop(e);
    return true;
  }

  private loadFrom(id: string, dir: string): string {
    this.check(id, dir);
    const old = this.current.get(id);
    // Every load gets its own internal name (ids may hold dots, which module paths cannot), so a reload
    // never collides with the copy that requests still running use.
    const name = `pool_${++this.version}`;
    this.makeRoom(0);
    try {
      loadPeftAdapter(this.peft, dir, { adapterName: name, warn: (m) => this.log(`adapter ${id}: ${m}`) });
    } catch (e) {
      this.stats.loadErrors++;
      throw new HttpError(400, `adapter "${id}" cannot be loaded on this base model: ${(e as Error).message}`, 'invalid_request_error');
    }
    this.stats.loads++;
    // Its slot in the stacked serving tensors is written now, not in the first step that uses it.
    this.peft.prepareMixedBatch(name);
    // Bytes: the adapter's tensors, and once more for the serving copy of parts that keep one (LoRA's slots).
    const bytes = this.peft.parts().reduce((s, [, p]) => s + p.adapterParameters(name).reduce((a, t) => a + t.numel * 4, 0) * (p.prepareMixedBatch ? 2 : 1), 0);
    this.entries.set(name, { id, internal: name, bytes, refs: 0, lastUsed: ++this.clock, retired: false });
    if (old) this.unloadInternal(old);
    this.current.set(id, name);
    this.makeRoom(0);
    return name;
  }

  private unloadInternal(internal: string): void {
    const e = this.entries.get(internal);
    if (!e) return;
    e.retired = true;
    if (e.refs === 0) this.drop(e);
  }

  /** Evicts least recently used adapters nobody uses until the pool is within its limits. */
  private makeRoom(extraBytes: number): void {
    const live = () => [...this.entries.values()].filter((e) => !e.retired);
    while (live().length > this.o.maxResident || this.residentBytes + extraBytes > this.o.budgetBytes) {
      const victim = live().filter((e) => e.refs === 0).sort((a, b) => a.lastUsed - b.lastUsed)[0];
      if (!victim) break;  // everything is in use: the limit is exceeded until requests finish
      this.current.delete(victim.id);
      this.drop(victim);
      this.stats.evictions++;
    }
  }

  private drop(e: Entry): void {
    this.entries.delete(e.internal);
    if (this.current.get(e.id) === e.internal) this.current.delete(e.id);
    if (this.peft.configs.has(e.internal)) this.peft.deleteAdapter(e.internal);
  }
}
