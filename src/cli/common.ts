// Helpers shared by the CLI commands: flag parsing with clear errors, and number flags.
import { parseArgs, type ParseArgsConfig } from 'node:util';

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

type Options = NonNullable<ParseArgsConfig['options']>;

type Value = string | boolean | (string | boolean)[] | undefined;

/** Parsed flags with typed accessors. */
export class Flags {
  constructor(private readonly values: Record<string, Value>, readonly positionals: string[]) {}
  str(name: string): string | undefined {
    const v = this.values[name];
    return typeof v === 'string' ? v : undefined;
  }
  bool(name: string): boolean {
    return this.values[name] === true;
  }
  list(name: string): string[] {
    const v = this.values[name];
    return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : typeof v === 'string' ? [v] : [];
  }
}

export function parseFlags(args: string[], options: Options, usage: string): Flags {
  try {
    const r = parseArgs({ args, options, strict: true, allowPositionals: true });
    return new Flags(r.values as Record<string, Value>, r.positionals);
  } catch (e) {
    throw new UsageError(`${(e as Error).message}\n\n${usage}`);
  }
}

// Number() accepts "", " ", "0x10", "0b1", "1e2" as an integer and "Infinity": flags take plain decimals only.
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const INTEGER = /^[+-]?\d+$/;

/**
 * A number flag, parsed strictly: decimal notation only (integers without exponent), finite, and
 * within the range given: `min`/`max` inclusive, `above` exclusive (e.g. a temperature > 0).
 */
export function numberFlag(v: string | undefined, name: string, opts: { int?: boolean; min?: number; max?: number; above?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  const range = [opts.above !== undefined ? `> ${opts.above}` : '', opts.min !== undefined ? `>= ${opts.min}` : '', opts.max !== undefined ? `<= ${opts.max}` : ''].filter(Boolean).join(' and ');
  if (!(opts.int ? INTEGER : DECIMAL).test(v) || !Number.isFinite(n) || (opts.int && !Number.isSafeInteger(n)) ||
      (opts.min !== undefined && n < opts.min) || (opts.max !== undefined && n > opts.max) || (opts.above !== undefined && !(n > opts.above))) {
    throw new UsageError(`--${name} must be ${opts.int ? 'a decimal integer' : 'a decimal number'}${range ? ` ${range}` : ''}, got "${v}"`);
  }
  return n;
}

/** --dtype: auto (the default: bfloat16 where the hardware computes it natively, else float32), or a dtype. */
export function dtypeFlag(v: string | undefined): 'auto' | 'float32' | 'bfloat16' | 'float16' {
  if (v === undefined) return 'auto';
  if (v === 'auto' || v === 'float32' || v === 'bfloat16' || v === 'float16') return v;
  throw new UsageError(`--dtype must be auto, float32, bfloat16 or float16, got "${v}"`);
}

export function required(v: string | undefined, name: string, usage: string): string {
  if (v === undefined || v === '') throw new UsageError(`--${name} is required\n\n${usage}`);
  return v;
}
