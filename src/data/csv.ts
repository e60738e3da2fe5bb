// A small RFC 4180 CSV reader: a header row, fields optionally in double quotes, and inside quotes
// delimiters, newlines (CRLF, LF or CR) and doubled quotes ("") for a literal quote. Each record
// remembers the physical line it starts on, which is what an editor shows and what errors name.
//
// Leniency, decided deliberately: blank lines between records are skipped (as Python's DictReader
// does), a UTF-8 BOM is dropped, a trailing newline ends the last record rather than adding an
// empty one. A stray quote inside an unquoted field, text after a closing quote, or a wrong field
// count makes only that row bad (skippable); an unterminated quote makes the rest of the file
// unparseable, so it always throws, naming the line where the quote opened.
import { readRegularFile } from '../io/files.js';
import { BadRows, DataError, setOwn, type BadRowOptions, type DataRecord, type SkipReport } from './records.js';

export interface CsvOptions {
  /** One character, default ','; e.g. '\t' for TSV. */
  delimiter?: string;
}

export interface CsvRow {
  fields: string[];
  line: number;
  /** Set when the row parsed but broke the format (the first problem found). */
  problem?: string;
}

export interface ReadResult extends SkipReport {
  records: DataRecord[];
}

/** Splits CSV text into rows of fields (no header handling); throws on an unterminated quote. */
export function parseCsvRows(text: string, o: CsvOptions & { source?: string } = {}): CsvRow[] {
  const delim = o.delimiter ?? ',';
  const source = o.source ?? '<csv>';
  if (delim.length !== 1 || delim === '"' || delim === '\n' || delim === '\r') {
    throw new Error(`CSV delimiter must be one character other than a quote or newline, got ${JSON.stringify(delim)}`);
  }
  const s = text.charCodeAt(0) === 0xfeff ? text.slice(1) : text;
  const n = s.length;
  const rows: CsvRow[] = [];
  let i = 0;
  let line = 1;
  // Consumes one line break at i (CRLF counts once) and reports whether there was one.
  const eol = (): boolean => {
    if (s[i] === '\r') { i += s[i + 1] === '\n' ? 2 : 1; line++; return true; }
    if (s[i] === '\n') { i++; line++; return true; }
    return false;
  };
  while (i < n) {
    if (eol()) continue; // blank line
    const row: CsvRow = { fields: [], line };
    const flag = (p: string) => { row.problem ??= p; };
    for (;;) {
      let value: string;
      if (s[i] === '"') {
        const openLine = line;
        const parts: string[] = [];
        let start = ++i;
        for (;;) {
          if (i >= n) throw new DataError(source, openLine, `unterminated quoted field (field ${row.fields.length + 1} opens a quote on this line that never closes)`);
          const c = s[i];
          if (c === '"') {
            parts.push(s.slice(start, i));
            if (s[i + 1] === '"') { parts.push('"'); i += 2; start = i; continue; }
            i++;
            break;
          }
          if (c === '\n' || (c === '\r' && s[i + 1] !== '\n')) line++;
          i++;
        }
        value = parts.join('');
        if (i < n && s[i] !== delim && s[i] !== '\r' && s[i] !== '\n') {
          flag(`field ${row.fields.length + 1}: unexpected ${JSON.stringify(s[i])} after the closing quote`);
          const start2 = i;
          while (i < n && s[i] !== delim && s[i] !== '\r' && s[i] !== '\n') i++;
          value += s.slice(start2, i);
        }
      } else {
        const start = i;
        while (i < n && s[i] !== delim && s[i] !== '\r' && s[i] !== '\n') i++;
        value = s.slice(start, i);
        if (value.includes('"')) flag(`field ${row.fields.length + 1}: quote inside an unquoted field (quote the whole field and double the inner quotes)`);
      }
      row.fields.push(value);
      if (i < n && s[i] === delim) { i++; continue; }
      eol();
      break;
    }
    rows.push(row);
  }
  return rows;
}

/** Parses CSV text with a header row into records keyed by the header's names. */
export function parseCsv(text: string, o: CsvOptions & BadRowOptions & { source?: string } = {}): ReadResult {
  const source = o.source ?? '<csv>';
  const rows = parseCsvRows(text, o);
  const header = rows.shift();
  if (!header) throw new DataError(source, 1, 'no header row (the file is empty)');
  if (header.problem) throw new DataError(source, header.line, `header row: ${header.problem}`);
  const seen = new Set<string>();
  for (const h of header.fields) {
    if (seen.has(h)) throw new DataError(source, header.line, `header row: duplicate column name ${JSON.stringify(h)}`);
    seen.add(h);
  }
  const bad = new BadRows(o);
  const records: DataRecord[] = [];
  for (const r of rows) {
    if (r.problem) { bad.report(source, r.line, r.problem); continue; }
    if (r.fields.length !== header.fields.length) {
      bad.report(source, r.line, `expected ${header.fields.length} fields (as in the header), got ${r.fields.length}`);
      continue;
    }
    const data: Record<string, unknown> = {};
    header.fields.forEach((h, k) => setOwn(data, h, r.fields[k]));
    records.push({ data, source, line: r.line });
  }
  return { records, ...bad.summary() };
}

/** Reads a CSV file with a header row. */
export function readCsv(path: string, o: CsvOptions & BadRowOptions = {}): ReadResult {
  return parseCsv(readRegularFile(path, 'data file', 'utf8'), { ...o, source: path });
}
