// The data layer's public surface: readers (JSONL, CSV, text) → task builders (tokenized examples
// as plain arrays) → split / per-epoch order / collation → int64 tensors per batch.
export { type DataRecord, type BadRowPolicy, type BadRowOptions, type SkipReport, DataError, fromObjects } from './records.js';
export { parseCsv, parseCsvRows, readCsv, type CsvOptions, type CsvRow, type ReadResult } from './csv.js';
export { parseJsonl, readJsonl, parseText, readText, readRecords, type TextOptions } from './readers.js';
export { IGNORE_INDEX, specialAffixes, type TokenExample, type ClassExample, type Example, type BuildResult } from './examples.js';
export { buildCausalLm, type CausalLmOptions, type CausalLmResult } from './causal-lm.js';
export { buildInstruction, fitPromptResponse, type InstructionOptions } from './instruction.js';
export { buildLabelMap, normalizeLabelMap, type LabelMap, type LabelMapInput } from './labels.js';
export { buildSequenceClassification, type SequenceClassificationOptions, type SequenceClassificationResult } from './classification.js';
export {
  buildTokenClassification, type TokenClassificationOptions, type TokenClassificationResult, type TokenClassExample,
} from './token-classification.js';
export { mulberry32, mixSeed, shuffleInPlace, permutation } from './prng.js';
export { trainValSplit, epochBatches, type SplitOptions, type BatchOrderOptions } from './sampling.js';
export {
  collate, collateOptions, toTensors, type CollateOptions, type TokenBatch, type ClassBatch, type Batch, type BatchOf, type TensorBatch,
} from './collate.js';
export { DataLoader, type LoaderOptions, type LoaderState, type LoaderItem } from './loader.js';
export {
  loadSentimentFixtures, sentimentFixturesDir, SENTIMENT_DOMAINS, type SentimentRow, type SentimentFixtures, type SentimentDomain,
} from './sentiment.js';
