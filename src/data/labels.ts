// Label maps for classification, named as in HF's config.json (label2id / id2label). A map built
// from data must come out the same on every machine and for every row order, so it is sorted —
// numerically when every label is an integer (CSV gives "10" and "2" as strings; 2 must come
// before 10), otherwise by UTF-16 code units (not localeCompare, whose order depends on the locale).
import { RowProblem, setOwn } from './records.js';

export interface LabelMap {
  label2id: Record<string, number>;
  id2label: string[];
}

/** What a caller may pass as a given map: a LabelMap, a label2id object, or id2label names. */
export type LabelMapInput = LabelMap | Readonly<Record<string, number>> | readonly string[];

const INT = /^-?(0|[1-9][0-9]*)$/;

/** The key a raw label is looked up by: integers and their decimal strings are the same label. */
export function labelKey(v: string | number): string {
  return typeof v === 'number' ? String(v) : v;
}

/** A deterministic map over the distinct labels: ids 0..k-1 in sorted label order. */
export function buildLabelMap(labels: Iterable<string | number>): LabelMap {
  const keys = [...new Set([...labels].map(labelKey))];
  if (keys.every((k) => INT.test(k))) keys.sort((a, b) => Number(a) - Number(b));
  else keys.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  return fromId2Label(keys);
}

function fromId2Label(names: readonly string[]): LabelMap {
  const label2id: Record<string, number> = {};
  names.forEach((n, i) => {
    if (Object.prototype.hasOwnProperty.call(label2id, n)) throw new Error(`label map: duplicate label ${JSON.stringify(n)}`);
    setOwn(label2id, n, i);
  });
  return { label2id, id2label: [...names] };
}

/** Checks a given map: ids must be exactly 0..k-1 (what a classifier head's rows are). */
export function normalizeLabelMap(m: LabelMapInput): LabelMap {
  if (Array.isArray(m)) return fromId2Label(m as readonly string[]);
  const label2id = ('label2id' in m && 'id2label' in m ? (m as LabelMap).label2id : m) as Readonly<Record<string, number>>;
  const entries = Object.entries(label2id);
  const id2label = new Array<string>(entries.length);
  for (const [name, id] of entries) {
    if (!Number.isSafeInteger(id) || id < 0 || id >= entries.length || id2label[id] !== undefined) {
      throw new Error(`label map: ids must be 0..${entries.length - 1}, each once; ${JSON.stringify(name)} has ${id}`);
    }
    id2label[id] = name;
  }
  return fromId2Label(id2label);
}

/** The id of a label; an unknown one is a bad row that names the labels the map knows. */
export function lookupLabel(map: LabelMap, v: string | number): number {
  const id = map.label2id[labelKey(v)];
  if (id === undefined || !Object.prototype.hasOwnProperty.call(map.label2id, labelKey(v))) {
    const known = map.id2label.slice(0, 20).map((l) => JSON.stringify(l)).join(', ');
    throw new RowProblem(`unknown label ${JSON.stringify(v)} (the label map has ${map.id2label.length}: ${known}${map.id2label.length > 20 ? ', …' : ''})`);
  }
  return id;
}
