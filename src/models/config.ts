// Reading config.json fields with the checks that keep a bad value from becoming silent wrong math.
import { readRegularFile, parseJsonObject } from '../io/files.js';
import type { RawConfig } from './types.js';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export function readConfig(path: string): RawConfig {
  let text: string;
  try {
    text = readRegularFile(path, 'model config', 'utf8');  // a FIFO or device would block readFileSync forever
  } catch (e) {
    throw new ConfigError(`cannot read ${path}: ${(e as Error).message}`);
  }
  return parseJsonObject(text, path, (m) => new ConfigError(m)) as RawConfig;
}

/** Typed field access with defaults; each problem names the model type and the field. */
export class Fields {
  constructor(readonly raw: RawConfig, readonly modelType: string) {}

  private bad(key: string, want: string): never {
    throw new ConfigError(`config.json (${this.modelType}): "${key}" must be ${want}, got ${JSON.stringify(this.raw[key])}`);
  }
  has(key: string): boolean {
    return this.raw[key] !== undefined && this.raw[key] !== null;
  }
  int(key: string, dflt?: number): number {
    const v = this.raw[key] ?? dflt;
    if (v === undefined) throw new ConfigError(`config.json (${this.modelType}): missing "${key}"`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) this.bad(key, 'a non-negative integer');
    return v;
  }
  optInt(key: string): number | null {
    return this.has(key) ? this.int(key) : null;
  }
  /** A finite number, within `range` when given (min/max inclusive, above exclusive). */
  num(key: string, dflt?: number, range: { min?: number; max?: number; above?: number } = {}): number {
    const v = this.raw[key] ?? dflt;
    if (v === undefined) throw new ConfigError(`config.json (${this.modelType}): missing "${key}"`);
    if (typeof v !== 'number' || !Number.isFinite(v)) this.bad(key, 'a number');
    if ((range.min !== undefined && v < range.min) || (range.max !== undefined && v > range.max) || (range.above !== undefined && !(v > range.above))) {
      const want = [range.above !== undefined ? `> ${range.above}` : '', range.min !== undefined ? `>= ${range.min}` : '', range.max !== undefined ? `<= ${range.max}` : ''].filter(Boolean).join(' and ');
      this.bad(key, `a number ${want}`);
    }
    return v;
  }
  bool(key: string, dflt: boolean): boolean {
    const v = this.raw[key] ?? dflt;
    if (typeof v !== 'boolean') this.bad(key, 'true or false');
    return v;
  }
  str(key: string, dflt?: string): string {
    const v = this.raw[key] ?? dflt;
    if (v === undefined) throw new ConfigError(`config.json (${this.modelType}): missing "${key}"`);
    if (typeof v !== 'string') this.bad(key, 'a string');
    return v;
  }
  oneOf<T extends string>(key: string, allowed: readonly T[], dflt: T): T {
    const v = this.str(key, dflt);
    if (!allowed.includes(v as T)) {
      throw new ConfigError(`config.json (${this.modelType}): unsupported ${key} "${v}" (supported: ${allowed.join(', ')})`);
    }
    return v as T;
  }
  /** Positive divisibility checks such as hidden % heads. */
  divisible(a: string, av: number, b: string, bv: number): void {
    if (bv === 0 || av % bv !== 0) throw new ConfigError(`config.json (${this.modelType}): ${a} (${av}) must be divisible by ${b} (${bv})`);
  }
}

/** The number of labels of a classification head: num_labels, else id2label's size, else 2. */
export function numLabelsOf(raw: RawConfig): number {
  if (typeof raw.num_labels === 'number') return raw.num_labels;
  if (raw.id2label && typeof raw.id2label === 'object') return Object.keys(raw.id2label).length;
  return 2;
}
