// bench:train-bpe: trains a byte-level BPE tokenizer on the public-domain pretraining corpus
// (src/data/corpus.ts) and prints the training time and the compression the Rust tokenizer gets
// with it. Usage: node dist/bench/train-bpe.js [vocabSize=4096] [out/tokenizer.json]
import { writeFileSync } from 'node:fs';
import { loadPretrainCorpus } from '../src/data/corpus.js';
import { trainByteLevelBpe } from '../src/tokenizer/train-bpe.js';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';

const vocabSize = Number(process.argv[2] ?? 4096);
const out = process.argv[3];

let t0 = performance.now();
const { documents, sources } = loadPretrainCorpus();
const chars = documents.reduce((n, d) => n + d.length, 0);
const bytes = documents.reduce((n, d) => n + Buffer.byteLength(d, 'utf8'), 0);
console.log(`corpus: ${documents.length} documents, ${(chars / 1e6).toFixed(2)} M chars, ${(bytes / 1e6).toFixed(2)} MB UTF-8, loaded in ${((performance.now() - t0) / 1e3).toFixed(2)} s`);
for (const s of sources) console.log(`  ${s.name}@${s.version}  ${s.documents} docs  ${s.chars} chars  ${s.license}`);

t0 = performance.now();
const { json, merges, vocab } = trainByteLevelBpe(documents, { vocabSize, specialsLast: ['<|endoftext|>'] });
const trainS = (performance.now() - t0) / 1e3;
console.log(`train: vocab ${vocab.size}, ${merges.length} merges in ${trainS.toFixed(2)} s (1 thread)`);

const text = JSON.stringify(json);
if (out) writeFileSync(out, text);
const tok = HFTokenizer.fromJson(text);
t0 = performance.now();
let tokens = 0;
for (const d of documents) tokens += (await tok.encode(d, { addSpecialTokens: false })).length;
console.log(`encode (Rust): ${tokens} tokens in ${((performance.now() - t0) / 1e3).toFixed(2)} s; ${(tokens / chars).toFixed(4)} tokens/char, ${(chars / tokens).toFixed(2)} chars/token, ${(bytes / tokens).toFixed(2)} bytes/token`);
