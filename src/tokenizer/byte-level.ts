// Byte-level BPE decoding without the tokenizer library: each id's bytes come from its vocabulary
// string through GPT-2's bytes_to_unicode table, so a server can turn one new token into text in
// JavaScript (UTF-8 completed across tokens) instead of two asynchronous decode calls per token.
// Used only where it is exact: a BPE model whose decoder is ByteLevel alone.

/** GPT-2's bytes_to_unicode, inverted: the printable character that stands for each byte -> the byte. */
function unicodeToByte(): Map<string, number> {
  const bs: number[] = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return new Map(bs.map((b, i) => [String.fromCodePoint(cs[i]!), b]));
}

type Json = Record<string, unknown>;

/** Bytes of every id (special tokens: null, skipped as `decode(ids, skipSpecialTokens)` does), or null when the tokenizer is not plain byte-level BPE. */
export function byteLevelTable(tokenizerJson: Json): (Uint8Array | null)[] | null {
  const model = tokenizerJson.model as Json | undefined;
  const dec = tokenizerJson.decoder as Json | undefined;
  const decoders = dec?.type === 'Sequence' ? (dec.decoders as Json[] | undefined) ?? [] : dec ? [dec] : [];
  if (model?.type !== 'BPE' || decoders.length !== 1 || decoders[0]!.type !== 'ByteLevel') return null;
  const vocab = model.vocab as Record<string, number> | undefined;
  if (!vocab || typeof vocab !== 'object') return null;
  const map = unicodeToByte();
  const table: (Uint8Array | null)[] = [];
  for (const [tok, id] of Object.entries(vocab)) {
    if (!Number.isInteger(id) || id < 0 || id > 1e7) return null;
    const bytes: number[] = [];
    for (const ch of tok) {
      const b = map.get(ch);
      if (b === undefined) return null;  // not a byte-level vocabulary
      bytes.push(b);
    }
    table[id] = Uint8Array.from(bytes);
  }
  const enc = new TextEncoder();
  for (const a of (tokenizerJson.added_tokens as Json[] | undefined) ?? []) {
    if (!Number.isInteger(a.id) || typeof a.content !== 'string') return null;
    table[a.id as number] = a.special ? null : enc.encode(a.content);
  }
  return table;
}

/** Where a byte string stops being complete UTF-8 (the start of a trailing, unfinished character). */
export function completeUtf8Length(b: readonly number[]): number {
  for (let k = 1; k <= Math.min(3, b.length); k++) {
    const c = b[b.length - k]!;
    if ((c & 0xc0) === 0x80) continue;  // a continuation byte: look further back
    const need = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
    return need > k ? b.length - k : b.length;
  }
  return b.length;
}
