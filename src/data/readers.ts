// JSONL and plain-text readers, and `readRecords`, which picks a reader by file extension. Every
// record carries its source path and 1-based line so that later stages (task builders) can name
// the exact place of a problem.
import { readRegularFile } from '../io/files.js';
import { extname } from 'node:path';
import { BadRows, describeValue, type BadRowOptions, type DataRecord } from './records.js';
import { readCsv, type CsvOptions, type ReadResult } from './csv.js';

function splitLines(text: string): string[] {
  const s = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  return s.split(/\r\n|\n|\r/);
}

/** Parses JSON Lines: one object per line; blank lines are ignored. */
export function parseJsonl(text: string, o: BadRowOptions & { source?: string } = {}): ReadResult {
  const source = o.source ?? '<jsonl>';
  const bad = new BadRows(o);
  const records: DataRecord[] = [];
  splitLines(text).forEach((raw, k) => {
    const line = k + 1;
    if (raw.trim() === '') return;
    let v: unknown;
    try {
      v = JSON.parse(raw);
    } catch (e) {
      bad.report(source, line, `invalid JSON: ${(e as Error).message}`);
      return;
    }
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      bad.report(source, line, `expected a JSON object, got ${describeValue(v)}`);
      return;
    }
    records.push({ data: v as Record<string, unknown>, source, line });
  });
  return { records, ...bad.summary() };
}

export function readJsonl(path: string, o: BadRowOptions = {}): ReadResult {
  return parseJsonl(readRegularFile(path, 'data file', 'utf8'), { ...o, source: path });
}

export interface TextOptions {
  /**
   * 'lines' (default): each non-blank line is a record; 'paragraphs': runs of non-blank lines
   * separated by blank lines, joined with '\n'; 'document': the whole file is one record.
   */
  mode?: 'lines' | 'paragraphs' | 'document';
  /** The field the text goes into (default 'text'). */
  field?: string;
}

/**
 * Parses plain text into `{ [field]: text }` records. Blank lines are structure here, not data,
 * so they are never reported as bad rows; only an empty 'document' is.
 */
export function parseText(text: string, o: TextOptions & BadRowOptions & { source?: string } = {}): ReadResult {
  const source = o.source ?? '<text>';
  const key = o.field ?? 'text';
  const bad = new BadRows(o);
  const records: DataRecord[] = [];
  const push = (t: string, line: number) => records.push({ data: { [key]: t }, source, line });
  const lines = splitLines(text);
  switch (o.mode ?? 'lines') {
    case 'lines':
      lines.forEach((l, k) => { if (l.trim() !== '') push(l, k + 1); });
      break;
    case 'paragraphs': {
      let buf: string[] = [];
      let start = 0;
      lines.forEach((l, k) => {
        if (l.trim() === '') {
          if (buf.length) push(buf.join('\n'), start);
          buf = [];
        } else {
          if (!buf.length) start = k + 1;
          buf.push(l);
        }
      });
      if (buf.length) push(buf.join('\n'), start);
      break;
    }
    case 'document': {
      const s = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
      if (s.trim() === '') bad.report(source, 1, 'empty text (the file has no non-blank characters)');
      else push(s, 1);
      break;
    }
    default:
      throw new Error(`text mode must be 'lines', 'paragraphs' or 'document', got ${JSON.stringify(o.mode)}`);
  }
  return { records, ...bad.summary() };
}

export function readText(path: string, o: TextOptions & BadRowOptions = {}): ReadResult {
  return parseText(readRegularFile(path, 'data file', 'utf8'), { ...o, source: path });
}

/**
 * Reads a file by extension: .jsonl/.ndjson (JSON Lines), .csv, .tsv (tab-delimited CSV),
 * .txt/.text/.md (plain text).
 */
export function readRecords(path: string, o: BadRowOptions & TextOptions & CsvOptions = {}): ReadResult {
  const ext = extname(path).toLowerCase();
  switch (ext) {
    case '.jsonl':
    case '.ndjson':
      return readJsonl(path, o);
    case '.csv':
      return readCsv(path, o);
    case '.tsv':
      return readCsv(path, { ...o, delimiter: o.delimiter ?? '\t' });
    case '.txt':
    case '.text':
    case '.md':
      return readText(path, o);
    default:
      throw new Error(`${path}: unknown data file extension ${JSON.stringify(ext)} (expected .jsonl, .ndjson, .csv, .tsv, .txt, .text or .md; or call readJsonl/readCsv/readText directly)`);
  }
}
