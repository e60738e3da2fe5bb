// Records as readers produce them (a parsed row that remembers where it came from), the error that
// names file:line, and the bad-row policy shared by readers and task builders: by default a bad row
// stops the run with a message that says where and what; with `onBadRow: 'skip'` it is counted and
// the first few reasons are kept, so a data set with a handful of broken rows still trains but the
// breakage is visible rather than silent.

/** One parsed row and where it came from: `line` is 1-based (the line a CSV record starts on). */
export interface DataRecord {
  data: Record<string, unknown>;
  source: string;
  line: number;
}

export type BadRowPolicy = 'error' | 'skip';

export interface BadRowOptions {
  /** 'error' (default): throw a DataError naming file:line; 'skip': drop the row and count it. */
  onBadRow?: BadRowPolicy;
  /** How many skip reasons to keep (default 5); the count is always exact. */
  keepReasons?: number;
}

/** What was dropped under `onBadRow: 'skip'`: an exact count and the first few reasons. */
export interface SkipReport {
  skipped: number;
  reasons: string[];
  /** Every skipped row counted by kind of problem ('missing field "text"': 3); sums to `skipped`. */
  byReason?: Record<string, number>;
}

/** The kind of a row problem, without its specifics: 'invalid JSON', 'field "text" must be a string'. */
export function reasonKind(problem: string): string {
  return problem.replace(/ \(.*$/s, '').replace(/, got .*$/s, '').replace(/:.*$/s, '').trim();
}

/** A problem with one row of input, located as `source:line`. */
export class DataError extends Error {
  constructor(readonly source: string, readonly line: number, readonly problem: string) {
    super(`${source}:${line}: ${problem}`);
    this.name = 'DataError';
  }
}

/**
 * Thrown by field accessors inside a row handler; `BadRows.run` turns it into a DataError (policy
 * 'error') or a skip. A separate class so that genuine bugs (TypeError, tokenizer failures) are
 * never mistaken for bad data and swallowed by 'skip'.
 */
export class RowProblem extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RowProblem';
  }
}

export class BadRows implements SkipReport {
  skipped = 0;
  reasons: string[] = [];
  byReason: Record<string, number> = {};
  private readonly policy: BadRowPolicy;
  private readonly keep: number;

  constructor(o: BadRowOptions = {}) {
    this.policy = o.onBadRow ?? 'error';
    if (this.policy !== 'error' && this.policy !== 'skip') throw new Error(`onBadRow must be 'error' or 'skip', got ${JSON.stringify(o.onBadRow)}`);
    this.keep = o.keepReasons ?? 5;
  }

  /** Records a bad row: throws under 'error', counts it under 'skip'. */
  report(source: string, line: number, problem: string): void {
    const err = new DataError(source, line, problem);
    if (this.policy === 'error') throw err;
    this.skipped++;
    const kind = reasonKind(problem);
    setOwn(this.byReason, kind, (Object.prototype.hasOwnProperty.call(this.byReason, kind) ? this.byReason[kind]! : 0) + 1);
    if (this.reasons.length < this.keep) this.reasons.push(err.message);
  }

  /** A plain copy, for results. */
  summary(): SkipReport {
    return { skipped: this.skipped, reasons: [...this.reasons], byReason: { ...this.byReason } };
  }

  /**
   * Maps records through an async handler, in order, a window at a time (so the tokenizer's thread
   * pool has work in flight), routing RowProblems through the policy. Under 'error' the error is
   * the first bad row in input order, whatever finished first.
   */
  async map<T>(records: readonly DataRecord[], fn: (r: DataRecord) => Promise<T>, window = 64): Promise<T[]> {
    const out: T[] = [];
    for (let i = 0; i < records.length; i += window) {
      const chunk = records.slice(i, i + window);
      const settled = await Promise.allSettled(chunk.map((r) => fn(r)));
      settled.forEach((s, j) => {
        const r = chunk[j]!;
        if (s.status === 'fulfilled') out.push(s.value);
        else if (s.reason instanceof RowProblem) this.report(r.source, r.line, s.reason.message);
        else throw s.reason;
      });
    }
    return out;
  }
}

/** Wraps in-memory objects as records; `line` is the 1-based position in the array. */
export function fromObjects(rows: readonly object[], source = '<memory>'): DataRecord[] {
  return rows.map((data, i) => ({ data: data as Record<string, unknown>, source, line: i + 1 }));
}

// Field accessors used by the task builders; each failure is a RowProblem naming the field.

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

export function field(r: DataRecord, name: string): unknown {
  if (!Object.prototype.hasOwnProperty.call(r.data, name)) {
    throw new RowProblem(`missing field "${name}" (fields: ${Object.keys(r.data).map((k) => JSON.stringify(k)).join(', ') || 'none'})`);
  }
  return r.data[name];
}

/** A string field; empty or whitespace-only text is a bad row unless `allowEmpty`. */
export function stringField(r: DataRecord, name: string, o: { allowEmpty?: boolean } = {}): string {
  const v = field(r, name);
  if (typeof v !== 'string') throw new RowProblem(`field "${name}" must be a string, got ${describe(v)}`);
  if (!o.allowEmpty && v.trim() === '') throw new RowProblem(`field "${name}" is empty`);
  return v;
}

/** A label: a string or an integer (CSV gives strings; JSONL may give either). */
export function labelField(r: DataRecord, name: string): string | number {
  const v = field(r, name);
  if (typeof v === 'string' ? v === '' : !Number.isSafeInteger(v)) {
    throw new RowProblem(`field "${name}" must be a non-empty string or an integer label, got ${describe(v)}`);
  }
  return v as string | number;
}

export function arrayField(r: DataRecord, name: string): unknown[] {
  const v = field(r, name);
  if (!Array.isArray(v)) throw new RowProblem(`field "${name}" must be an array, got ${describe(v)}`);
  if (v.length === 0) throw new RowProblem(`field "${name}" is empty`);
  return v;
}

export { describe as describeValue };

/** Sets an own property even for names like "__proto__" (a CSV column or label may be called anything). */
export function setOwn<T>(obj: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}
