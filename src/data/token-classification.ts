// Token classification (NER, POS): rows of pre-split words and one tag per word. Words are encoded
// one by one without special tokens and concatenated, so every sub-word knows its word; the first
// sub-word of a word carries the word's tag id and the rest carry IGNORE_INDEX (HF's default in
// run_ner / the token-classification course), as do the special tokens around the sequence.
//
// Byte-level BPE (GPT-2, RoBERTa) folds a word's leading space into its first token: "dog" in
// running text is encoded as " dog". So every word after the first is encoded as " " + word
// (`prefixSpace`, default true); turn it off for WordPiece/SentencePiece-style tokenizers, whose
// pre-tokenizers drop or add the space themselves.
import type { HFTokenizer } from '../tokenizer/tokenizer.js';
import { BadRows, RowProblem, arrayField, describeValue, type BadRowOptions, type DataRecord } from './records.js';
import { IGNORE_INDEX, checkPositiveInt, specialAffixes, type BuildResult, type TokenExample } from './examples.js';
import { buildLabelMap, lookupLabel, normalizeLabelMap, type LabelMap, type LabelMapInput } from './labels.js';

export interface TokenClassificationOptions extends BadRowOptions {
  tokensField?: string; // default 'tokens'
  tagsField?: string; // default 'tags'
  labelMap?: LabelMapInput;
  /** Encode words after the first as " " + word (default true; right for byte-level BPE). */
  prefixSpace?: boolean;
  /** Wrap in the tokenizer's special tokens (default true); they get IGNORE_INDEX. */
  addSpecialTokens?: boolean;
  /** 'first' (default): only a word's first sub-word is labelled; 'all': every sub-word gets the tag. */
  subwordLabels?: 'first' | 'all';
  /** Cut sub-words at the end to fit, keeping the special tokens. */
  maxLength?: number;
}

export interface TokenClassExample extends TokenExample {
  /** The word each token came from; null for special tokens (for word-level evaluation). */
  wordIds: (number | null)[];
}

export interface TokenClassificationResult extends BuildResult<TokenClassExample>, LabelMap {}

/**
 * Example:
 * ```ts
 * // {"tokens": ["EU", "rejects", "German"], "tags": ["B-ORG", "O", "B-MISC"]}
 * const { examples, id2label } = await buildTokenClassification(readJsonl('ner.jsonl').records, tok);
 * ```
 */
export async function buildTokenClassification(records: readonly DataRecord[], tok: HFTokenizer, o: TokenClassificationOptions = {}): Promise<TokenClassificationResult> {
  checkPositiveInt('maxLength', o.maxLength);
  const given = o.labelMap === undefined ? null : normalizeLabelMap(o.labelMap);
  const wordsField = o.tokensField ?? 'tokens';
  const tagsField = o.tagsField ?? 'tags';
  const prefixSpace = o.prefixSpace ?? true;
  const all = (o.subwordLabels ?? 'first') === 'all';
  const { prefix, suffix } = o.addSpecialTokens ?? true ? await specialAffixes(tok) : { prefix: [], suffix: [] };
  const room = o.maxLength === undefined ? Infinity : o.maxLength - prefix.length - suffix.length;
  if (room < 1) throw new Error(`maxLength ${o.maxLength} leaves no room next to ${prefix.length + suffix.length} special tokens`);
  // Words repeat a lot in tagged corpora; the key includes whether the space was prefixed.
  const cache = new Map<string, Promise<number[]>>();
  const encodeWord = (text: string) => {
    let p = cache.get(text);
    if (!p) cache.set(text, (p = tok.encode(text, { addSpecialTokens: false })));
    return p;
  };
  const bad = new BadRows(o);
  let truncated = 0;

  const rows = await bad.map(records, async (r) => {
    const words = arrayField(r, wordsField);
    const tags = arrayField(r, tagsField);
    if (tags.length !== words.length) throw new RowProblem(`"${wordsField}" has ${words.length} words but "${tagsField}" has ${tags.length} tags`);
    words.forEach((w, k) => {
      if (typeof w !== 'string' || w.trim() === '') throw new RowProblem(`${wordsField}[${k}] must be a non-empty string, got ${describeValue(w)}`);
    });
    tags.forEach((t, k) => {
      if (typeof t === 'string' ? t === '' : !Number.isSafeInteger(t)) throw new RowProblem(`${tagsField}[${k}] must be a non-empty string or an integer, got ${describeValue(t)}`);
    });
    const rawTags = tags as (string | number)[];
    const tagIds = given ? rawTags.map((t) => lookupLabel(given, t)) : null;
    const pieces = await Promise.all((words as string[]).map((w, k) => encodeWord(k > 0 && prefixSpace ? ' ' + w : w)));
    const ids: number[] = [];
    const wordIds: number[] = [];
    pieces.forEach((p, k) => {
      if (p.length === 0) throw new RowProblem(`${wordsField}[${k}] ${JSON.stringify(words[k])} encodes to no tokens, so its tag would be lost`);
      for (const t of p) { ids.push(t); wordIds.push(k); }
    });
    let cut = false;
    if (ids.length > room) { ids.length = room; wordIds.length = room; cut = true; }
    if (cut) truncated++;
    return { ids, wordIds, rawTags, tagIds, origin: `${r.source}:${r.line}` };
  });

  const map = given ?? buildLabelMap(rows.flatMap((x) => x.rawTags));
  const examples = rows.map((x): TokenClassExample => {
    const tagIds = x.tagIds ?? x.rawTags.map((t) => lookupLabel(map, t));
    const body = x.wordIds.map((w, i) => (all || i === 0 || x.wordIds[i - 1] !== w ? tagIds[w]! : IGNORE_INDEX));
    return {
      inputIds: [...prefix, ...x.ids, ...suffix],
      labels: [...prefix.map(() => IGNORE_INDEX), ...body, ...suffix.map(() => IGNORE_INDEX)],
      wordIds: [...prefix.map(() => null), ...x.wordIds, ...suffix.map(() => null)],
      origin: x.origin,
    };
  });
  return { examples, truncated, label2id: map.label2id, id2label: map.id2label, ...bad.summary() };
}
