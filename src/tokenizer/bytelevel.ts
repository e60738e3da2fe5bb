// Byte-level BPE tokenizer.json documents (the GPT-2 scheme): every byte has a printable stand-in
// character, so any text encodes without an unknown token. With no merges the tokenizer is
// byte-per-token; a trained one adds merges. The output loads in HF tokenizers (Rust and Python).

/** GPT-2's bytes_to_unicode(): printable bytes map to themselves, the rest to U+0100 onwards. */
export function byteToUnicode(): string[] {
  const keep: number[] = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) out[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + n++);
  return out;
}

export interface ByteLevelBpeSpec {
  /** Special tokens placed before the byte alphabet (ids 0..k-1), e.g. LLaMA's <unk> <s> </s>. */
  specialsFirst?: string[];
  /** Special tokens placed after the vocabulary, e.g. GPT-2's <|endoftext|>. */
  specialsLast?: string[];
  /** Merges in rank order, each "left right" over byte-level symbols. */
  merges?: [string, string][];
  /** Encoders: wrap single sequences as CLS $A SEP. */
  template?: { cls: string; sep: string };
}

/** Builds a tokenizer.json object; ids: specialsFirst, 256 bytes, merged symbols, specialsLast. */
export function byteLevelBpe(spec: ByteLevelBpeSpec): { json: Record<string, unknown>; vocab: Map<string, number> } {
  const vocab = new Map<string, number>();
  const add = (t: string) => {
    if (!vocab.has(t)) vocab.set(t, vocab.size);
  };
  for (const s of spec.specialsFirst ?? []) add(s);
  for (const c of byteToUnicode()) add(c);
  for (const [a, b] of spec.merges ?? []) add(a + b);
  for (const s of spec.specialsLast ?? []) add(s);
  const specials = [...(spec.specialsFirst ?? []), ...(spec.specialsLast ?? [])];
  const addedTokens = specials.map((content) => ({
    id: vocab.get(content), content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const postProcessor = spec.template
    ? {
        type: 'TemplateProcessing',
        single: [{ SpecialToken: { id: spec.template.cls, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: spec.template.sep, type_id: 0 } }],
        pair: [
          { SpecialToken: { id: spec.template.cls, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: spec.template.sep, type_id: 0 } },
          { Sequence: { id: 'B', type_id: 1 } }, { SpecialToken: { id: spec.template.sep, type_id: 1 } },
        ],
        special_tokens: Object.fromEntries([spec.template.cls, spec.template.sep].map((t) => [t, { id: t, ids: [vocab.get(t)], tokens: [t] }])),
      }
    : { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: addedTokens,
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: postProcessor,
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null,
      fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab: Object.fromEntries(vocab),
      merges: (spec.merges ?? []).map(([a, b]) => [a, b]),
    },
  };
  return { json, vocab };
}
