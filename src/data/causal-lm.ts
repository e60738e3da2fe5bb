// Causal-LM examples from documents. Packed (default): tokenize each document, append EOS,
// concatenate everything and chop into blocks of exactly blockSize, as HF's run_clm `group_texts`
// does — no padding is wasted and EOS marks document boundaries inside a block. Unpacked: one
// example per document, cut to blockSize. Labels equal the input ids; the model shifts them.
import type { HFTokenizer } from '../tokenizer/tokenizer.js';
import { BadRows, stringField, type BadRowOptions, type DataRecord } from './records.js';
import { checkPositiveInt, requireEos, type BuildResult, type TokenExample } from './examples.js';

export interface CausalLmOptions extends BadRowOptions {
  /** Tokens per example. */
  blockSize: number;
  /** Concatenate and chop (default true), or one example per document. */
  packed?: boolean;
  /** Field holding the document (default 'text'). */
  textField?: string;
  /** Append EOS to every document (default true). */
  appendEos?: boolean;
  /** Let the tokenizer add its specials, e.g. LLaMA's BOS (default true; GPT-2 adds none). */
  addSpecialTokens?: boolean;
  /**
   * Packed mode: drop the final block when shorter than blockSize (default true, as run_clm);
   * false keeps it (the collator pads it).
   */
  dropLast?: boolean;
}

export interface CausalLmResult extends BuildResult<TokenExample> {
  /** Tokens in all documents, EOS included. */
  tokens: number;
  /** Packed: the tail that did not fill a block (0 when dropLast is false). */
  droppedTokens: number;
}

/**
 * Example:
 * ```ts
 * const { records } = readText('corpus.txt', { mode: 'paragraphs' });
 * const { examples } = await buildCausalLm(records, tok, { blockSize: 512 });
 * ```
 */
export async function buildCausalLm(records: readonly DataRecord[], tok: HFTokenizer, o: CausalLmOptions): Promise<CausalLmResult> {
  if (o.blockSize === undefined) throw new Error('blockSize is required');
  checkPositiveInt('blockSize', o.blockSize);
  const field = o.textField ?? 'text';
  const eos = o.appendEos ?? true ? requireEos(tok, 'mark document ends') : null;
  const bad = new BadRows(o);
  const docs = await bad.map(records, async (r) => {
    const ids = await tok.encode(stringField(r, field), { addSpecialTokens: o.addSpecialTokens ?? true });
    if (eos !== null) ids.push(eos);
    return { ids, origin: `${r.source}:${r.line}` };
  });
  const tokens = docs.reduce((a, d) => a + d.ids.length, 0);
  const B = o.blockSize;
  const examples: TokenExample[] = [];
  let truncated = 0;
  let droppedTokens = 0;
  if (o.packed ?? true) {
    // One flat buffer, then slices: linear in the number of tokens.
    const flat = new Array<number>(tokens);
    let k = 0;
    for (const d of docs) for (const t of d.ids) flat[k++] = t;
    const whole = Math.floor(tokens / B) * B;
    for (let s = 0; s < whole; s += B) {
      const ids = flat.slice(s, s + B);
      examples.push({ inputIds: ids, labels: [...ids] });
    }
    if (whole < tokens) {
      if (o.dropLast ?? true) droppedTokens = tokens - whole;
      else {
        const ids = flat.slice(whole);
        examples.push({ inputIds: ids, labels: [...ids] });
      }
    }
  } else {
    for (const d of docs) {
      const ids = d.ids.length > B ? d.ids.slice(0, B) : d.ids;
      if (ids !== d.ids) truncated++;
      examples.push({ inputIds: ids, labels: [...ids], origin: d.origin });
    }
  }
  return { examples, tokens, droppedTokens, truncated, ...bad.summary() };
}
