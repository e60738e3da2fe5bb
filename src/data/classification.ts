// Sequence classification examples: (text, label) rows, labels as strings or integers, mapped to
// ids by a given label map (evaluation, or a label set fixed in advance) or one built from the
// rows (training). A label the given map does not know is a bad row naming file:line.
import type { HFTokenizer } from '../tokenizer/tokenizer.js';
import { BadRows, labelField, stringField, type BadRowOptions, type DataRecord } from './records.js';
import { encodeFit, checkPositiveInt, type BuildResult, type ClassExample } from './examples.js';
import { buildLabelMap, lookupLabel, normalizeLabelMap, type LabelMap, type LabelMapInput } from './labels.js';

export interface SequenceClassificationOptions extends BadRowOptions {
  textField?: string; // default 'text'
  labelField?: string; // default 'label'
  /** Use this map (unknown labels are bad rows); absent: build one from the rows. */
  labelMap?: LabelMapInput;
  /** Cut the text's tokens to fit, keeping the tokenizer's special tokens. */
  maxLength?: number;
  /** Let the tokenizer add its specials, e.g. [CLS] … [SEP] (default true). */
  addSpecialTokens?: boolean;
}

export interface SequenceClassificationResult extends BuildResult<ClassExample>, LabelMap {}

/**
 * Example:
 * ```ts
 * const train = await buildSequenceClassification(readCsv('train.csv').records, tok);
 * const val = await buildSequenceClassification(readCsv('val.csv').records, tok, { labelMap: train });
 * ```
 */
export async function buildSequenceClassification(records: readonly DataRecord[], tok: HFTokenizer, o: SequenceClassificationOptions = {}): Promise<SequenceClassificationResult> {
  checkPositiveInt('maxLength', o.maxLength);
  const given = o.labelMap === undefined ? null : normalizeLabelMap(o.labelMap);
  const textField = o.textField ?? 'text';
  const labelName = o.labelField ?? 'label';
  const bad = new BadRows(o);
  let truncated = 0;
  const rows = await bad.map(records, async (r) => {
    const text = stringField(r, textField);
    const raw = labelField(r, labelName);
    // Looked up before tokenizing, so an unknown label costs no encode.
    const id = given ? lookupLabel(given, raw) : -1;
    const enc = await encodeFit(tok, text, { addSpecialTokens: o.addSpecialTokens ?? true, maxLength: o.maxLength });
    if (enc.truncated) truncated++;
    return { ids: enc.ids, raw, id, origin: `${r.source}:${r.line}` };
  });
  // Built from the rows that survived, so a skipped row cannot add a label.
  const map = given ?? buildLabelMap(rows.map((x) => x.raw));
  const examples = rows.map((x): ClassExample => ({ inputIds: x.ids, label: given ? x.id : lookupLabel(map, x.raw), origin: x.origin }));
  return { examples, truncated, label2id: map.label2id, id2label: map.id2label, ...bad.summary() };
}
