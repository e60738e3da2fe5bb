// Byte-level BPE training (the GPT-2 scheme), emitting a tokenizer.json through byteLevelBpe().
// The npm `tokenizers` binding trains only with its default BpeTrainer (vocab 30000, no way to set
// it), so the trainer lives here. It follows HF tokenizers' BpeTrainer (trainers/bpe/trainer.rs):
//   - words are the pieces of GPT-2's pre-tokenizer regex, as byte-level symbol strings, counted;
//   - a pair's count is the sum over words of (adjacent occurrences × word count), overlapping
//     occurrences included ("aaa" counts (a,a) twice), as HF's count_pairs does;
//   - each step merges the most frequent pair; ties go to the smaller (left id, right id), where ids
//     are HF's training ids: the alphabet sorted by code point, then merged symbols in creation
//     order (HF's `Merge` Ord). Lexicographic order on strings would differ: "ew" < "n" but
//     'n' is an alphabet symbol and so has the smaller id;
//   - a merge rewrites each word left to right without overlap ("aaa" -> "aa a");
//   - training stops when the vocabulary (specials + 256 bytes + distinct merged strings) reaches
//     vocabSize, or the best pair's count is below minFrequency. A merge whose string already
//     exists ("t"+"he" after "th"+"e") reuses that symbol and does not grow the vocabulary.
// Cost: one pass to count words, then per merge only the words that contain the pair (an index from
// pair to words) are touched; pair counts change by deltas, and a lazy max-heap finds the next pair.
import { byteLevelBpe, byteToUnicode } from './bytelevel.js';

/** GPT-2's pre-tokenizer pattern (HF ByteLevel with use_regex). `u` gives \p{..}; lookahead keeps a
 *  run of spaces from swallowing the one that prefixes the next word. */
export const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

export type TrainProgress =
  | { stage: 'count'; texts: number; words: number }
  | { stage: 'merge'; merges: number; vocab: number; vocabSize: number };

export interface TrainBpeOptions {
  /** Target size, counting special tokens, the 256 byte symbols and the merged symbols. */
  vocabSize: number;
  /** Stop when the most frequent pair occurs fewer times than this (HF's min_frequency). */
  minFrequency?: number;
  /** Special tokens given the first ids (see byteLevelBpe). */
  specialsFirst?: string[];
  /** Special tokens given the last ids (see byteLevelBpe). */
  specialsLast?: string[];
  /** Called every 1000 texts while counting and every 100 merges. */
  onProgress?: (p: TrainProgress) => void;
}

export interface TrainBpeResult {
  /** tokenizer.json as an object (JSON.stringify it for HFTokenizer.fromJson or a file). */
  json: Record<string, unknown>;
  vocab: Map<string, number>;
  /** Merges in rank order over byte-level symbols. */
  merges: [string, string][];
}

/** Splits text the way the ByteLevel pre-tokenizer does and returns byte-level symbol strings. */
export function byteLevelWords(text: string): string[] {
  const map = byteToUnicode();
  const out: string[] = [];
  for (const m of text.matchAll(GPT2_SPLIT)) {
    let s = '';
    for (const b of Buffer.from(m[0], 'utf8')) s += map[b];
    out.push(s);
  }
  return out;
}

function validate(o: TrainBpeOptions): void {
  const specials = [...(o.specialsFirst ?? []), ...(o.specialsLast ?? [])];
  if (new Set(specials).size !== specials.length) throw new Error(`special tokens repeat: ${JSON.stringify(specials)}`);
  if (specials.some((s) => s.length === 0)) throw new Error('special tokens must be non-empty strings');
  const floor = 256 + specials.length;
  if (!Number.isInteger(o.vocabSize) || o.vocabSize < floor) {
    throw new Error(`vocabSize ${o.vocabSize} must be an integer >= ${floor} (256 byte symbols + ${specials.length} special tokens)`);
  }
  // Pair keys pack two ids into one double (left * 2^21 + right): keep ids below 2^21.
  if (o.vocabSize > 1 << 21) throw new Error(`vocabSize ${o.vocabSize} is above the supported 2097152`);
  const f = o.minFrequency ?? 2;
  if (!Number.isInteger(f) || f < 0) throw new Error(`minFrequency ${f} must be a non-negative integer`);
}

const SHIFT = 2097152; // 2^21
const key = (a: number, b: number) => a * SHIFT + b;

/** A max-heap of (count, left, right): higher count first, then smaller left id, then smaller right. */
class PairHeap {
  private c: number[] = [];
  private k: number[] = [];
  get size(): number { return this.c.length; }
  topCount(): number { return this.c[0]!; }
  topKey(): number { return this.k[0]!; }
  // Keys order like (left, right) because left * 2^21 + right is monotone in that pair.
  private above(i: number, j: number): boolean {
    return this.c[i]! > this.c[j]! || (this.c[i] === this.c[j] && this.k[i]! < this.k[j]!);
  }
  private swap(i: number, j: number): void {
    const c = this.c[i]!; this.c[i] = this.c[j]!; this.c[j] = c;
    const k = this.k[i]!; this.k[i] = this.k[j]!; this.k[j] = k;
  }
  push(count: number, k: number): void {
    this.c.push(count); this.k.push(k);
    let i = this.c.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.above(i, p)) break;
      this.swap(i, p); i = p;
    }
  }
  pop(): void {
    const lastC = this.c.pop()!, lastK = this.k.pop()!;
    if (this.c.length === 0) return;
    this.c[0] = lastC; this.k[0] = lastK;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < this.c.length && this.above(l, m)) m = l;
      if (r < this.c.length && this.above(r, m)) m = r;
      if (m === i) return;
      this.swap(i, m); i = m;
    }
  }
}

/**
 * Trains a byte-level BPE tokenizer on `texts` (each text is pre-tokenized on its own).
 * @example
 *   const { json } = trainByteLevelBpe(docs, { vocabSize: 4096, specialsLast: ['<|endoftext|>'] });
 *   const tok = HFTokenizer.fromJson(JSON.stringify(json), { eos_token: '<|endoftext|>' });
 */
export function trainByteLevelBpe(texts: Iterable<string>, options: TrainBpeOptions): TrainBpeResult {
  validate(options);
  const minFrequency = options.minFrequency ?? 2;
  const onProgress = options.onProgress;

  // Word frequencies, keyed by the raw piece (UTF-8 conversion happens once per distinct word).
  const freq = new Map<string, number>();
  let nTexts = 0;
  for (const text of texts) {
    for (const m of text.matchAll(GPT2_SPLIT)) freq.set(m[0], (freq.get(m[0]) ?? 0) + 1);
    if (onProgress && ++nTexts % 1000 === 0) onProgress({ stage: 'count', texts: nTexts, words: freq.size });
  }
  onProgress?.({ stage: 'count', texts: nTexts, words: freq.size });

  // Training ids: byte symbols sorted by code point (HF's compute_alphabet), merged symbols after.
  const alphabet = byteToUnicode();
  const sorted = [...alphabet].sort((x, y) => x.codePointAt(0)! - y.codePointAt(0)!);
  const idOf = new Map<string, number>(sorted.map((s, i) => [s, i]));
  const symbols: string[] = [...sorted];
  const byteId = Int32Array.from(alphabet, (s) => idOf.get(s)!);

  // Words as symbol-id arrays, shortened in place as merges apply (wlen is the live length).
  const words: Int32Array[] = [];
  const counts: number[] = [];
  for (const [piece, n] of freq) {
    words.push(Int32Array.from(Buffer.from(piece, 'utf8'), (b) => byteId[b]!));
    counts.push(n);
  }
  freq.clear();
  const wlen = Int32Array.from(words, (w) => w.length);

  // Pair counts and, per pair, the words that contained it when it formed. Lists may hold words that
  // no longer contain the pair (they are skipped) and a word twice (deduplicated by `seen`).
  const pairCount = new Map<number, number>();
  const where = new Map<number, number[]>();
  for (let w = 0; w < words.length; w++) {
    const s = words[w]!, n = counts[w]!;
    for (let i = 0; i + 1 < s.length; i++) {
      const k = key(s[i]!, s[i + 1]!);
      pairCount.set(k, (pairCount.get(k) ?? 0) + n);
      const list = where.get(k);
      if (!list) where.set(k, [w]);
      else if (list[list.length - 1] !== w) list.push(w);
    }
  }
  const heap = new PairHeap();
  for (const [k, n] of pairCount) heap.push(n, k);

  // The vocabulary's strings, to stop at vocabSize and to spot merges that produce an existing one.
  const inVocab = new Set<string>([...(options.specialsFirst ?? []), ...alphabet, ...(options.specialsLast ?? [])]);
  const merges: [string, string][] = [];
  const merged = new Set<number>();
  const seen = new Int32Array(words.length).fill(-1);
  const add = (k: number, d: number) => pairCount.set(k, (pairCount.get(k) ?? 0) + d);

  while (inVocab.size < options.vocabSize && heap.size > 0) {
    // Lazy heap: an entry whose count is out of date goes back in with the current count.
    const k = heap.topKey();
    const current = pairCount.get(k) ?? 0;
    if (heap.topCount() !== current || merged.has(k)) {
      heap.pop();
      if (current > 0 && !merged.has(k)) heap.push(current, k);
      continue;
    }
    if (current < 1 || current < minFrequency) break;
    heap.pop();

    const a = Math.floor(k / SHIFT), b = k - a * SHIFT;
    const text = symbols[a]! + symbols[b]!;
    let id = idOf.get(text);
    if (id === undefined) {
      id = symbols.length;
      symbols.push(text);
      idOf.set(text, id);
    }
    merges.push([symbols[a]!, symbols[b]!]);
    inVocab.add(text);
    merged.add(k);

    // Rewrite each word holding (a, b); neighbour pairs move to (prev, id) and (id, next), as in
    // HF's Word::merge, so counts change by deltas and only the touched words are visited.
    const grown = new Set<number>();
    const step = merges.length;
    for (const w of where.get(k) ?? []) {
      if (seen[w] === step) continue;
      seen[w] = step;
      const s = words[w]!, len = wlen[w]!, n = counts[w]!;
      let j = 0;
      for (let i = 0; i < len;) {
        if (s[i] === a && i + 1 < len && s[i + 1] === b) {
          if (j > 0) {
            const prev = s[j - 1]!;
            add(key(prev, a), -n);
            const kk = key(prev, id);
            add(kk, n);
            grown.add(kk);
            const list = where.get(kk);
            if (!list) where.set(kk, [w]); else if (list[list.length - 1] !== w) list.push(w);
          }
          if (i + 2 < len) {
            const next = s[i + 2]!;
            add(key(b, next), -n);
            const kk = key(id, next);
            add(kk, n);
            grown.add(kk);
            const list = where.get(kk);
            if (!list) where.set(kk, [w]); else if (list[list.length - 1] !== w) list.push(w);
          }
          s[j++] = id;
          i += 2;
        } else {
          s[j++] = s[i++]!;
        }
      }
      wlen[w] = j;
    }
    pairCount.delete(k);
    where.delete(k);
    for (const kk of grown) {
      const n = pairCount.get(kk) ?? 0;
      if (n > 0) heap.push(n, kk);
    }
    if (onProgress && merges.length % 100 === 0) onProgress({ stage: 'merge', merges: merges.length, vocab: inVocab.size, vocabSize: options.vocabSize });
  }
  onProgress?.({ stage: 'merge', merges: merges.length, vocab: inVocab.size, vocabSize: options.vocabSize });

  const built = byteLevelBpe({
    ...(options.specialsFirst ? { specialsFirst: options.specialsFirst } : {}),
    ...(options.specialsLast ? { specialsLast: options.specialsLast } : {}),
    merges,
  });
  return { json: built.json, vocab: built.vocab, merges };
}
