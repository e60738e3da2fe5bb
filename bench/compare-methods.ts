// compare:methods: every adapter method side by side, as the tables in the PEFT papers. Each method
// tunes the embedded default model (a small LLaMA) on the demo's review-sentiment task, with the
// demo's split (valFraction 0.2, seed 0), the same step budget for all (default: the demo's 2 epochs
// at batch 16), dtype auto, the classifier head trained in full (modulesToSave ['score']) and a
// learning rate chosen per method. Printed and written (Markdown + a self-contained HTML chart):
// method, paper, trainable parameters and % of the base, held-out accuracy of the final weights,
// train tokens/s, adapter size on disk and whether the method merges. A method that throws is a
// failed row and the run goes on. Last line:
//   methods: <n> trained, <m> beat majority+0.10
// Flags: --methods a,b,c | --all (every registered method)   --lr name=x,name=y   --steps N | --epochs N   --out DIR   --full (add the full fine-tuning row)
//        --no-full   --seed N   --dtype auto|float32|bfloat16
import { mkdtempSync, mkdirSync, existsSync, readdirSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '../src/models/load.js';
import { defaultModelDir } from '../src/models/default-model.js';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';
import { PeftModel, savePeftAdapters, methodByName, adapterMethodList } from '../src/adapters/index.js';
import { loadSentimentFixtures, fromObjects, buildSequenceClassification, trainValSplit, collateOptions, collate, toTensors, type ClassExample } from '../src/data/index.js';
import { Trainer, majorityAccuracy } from '../src/train/index.js';
import { isLinearLayer, Embedding } from '../src/nn/layers.js';
import type { Module } from '../src/nn/module.js';
import type { PretrainedModel } from '../src/models/types.js';
import { benchHeader } from './header.js';
import { tidy, keep, crossEntropy, type Tensor } from '../src/tensor/index.js';

const USAGE = `usage: npm run compare:methods -- [--methods a,b,c | --all] [--lr name=x,...] [--steps N | --epochs N] [--out DIR] [--full|--no-full] [--seed N] [--dtype auto|float32|bfloat16]`;

/** One row of the comparison: a method name (as --method takes it, or "full"), its paper, lr and options. */
interface Spec {
  name: string;
  paper: string;
  lr: number;
  /** Options beyond the method's preset; called with the model (for target names) and the tokenizer. */
  options?: (model: PretrainedModel, tok: HFTokenizer) => Record<string, unknown>;
  /** Why this lr (for the report). */
  why: string;
}

const PROMPT_TEXT = 'The sentiment of this review is';

/**
 * The rows, in the order of the table. Learning rates: a quick sanity check per family on this task
 * (not a sweep): small-parameter methods (vectors, prompts) want larger steps than matrices.
 */
const SPECS: Spec[] = [
  { name: 'full', paper: 'reference', lr: 5e-4, why: 'every weight trains; 5e-4 beat 1e-4 (the new head learns too slowly at 1e-4)' },
  { name: 'lora', paper: 'Hu+ 2021', lr: 3e-3, options: (m) => demoLora(m), why: 'the demo\'s lr' },
  // DoRA on an embedding is refused (adapterkit: 'DoRA on an embedding is not supported'): the linear layers only.
  { name: 'dora', paper: 'Liu+ 2024', lr: 3e-3, options: (m) => ({ ...demoLora(m, false), useDora: true }), why: 'as LoRA (same low-rank update, plus a magnitude vector); 1e-2 was worse' },
  { name: 'ia3', paper: 'Liu+ 2022', lr: 3e-2, why: 'rescaling vectors starting at 1: larger steps (3e-2 beat 1e-2 slightly)' },
  { name: 'ssf', paper: 'Lian+ 2022', lr: 1e-2, why: 'per-feature scale/shift vectors (3e-2 no better than 1e-2)' },
  { name: 'hydra', paper: 'Kim+ 2023', lr: 3e-3, why: 'two low-rank branches: LoRA\'s lr (1e-2 was worse)' },
  { name: 'bottleneck', paper: 'Pfeiffer+ 2020', lr: 3e-3, why: 'bottleneck MLPs with a near-identity start (1e-2 was worse)' },
  { name: 'houlsby', paper: 'Houlsby+ 2019', lr: 3e-3, why: 'as Pfeiffer (two adapters per block)' },
  { name: 'parallel', paper: 'He+ 2022', lr: 3e-3, why: 'as Pfeiffer' },
  { name: 'pfeiffer+inv', paper: 'Pfeiffer+ 2020b', lr: 3e-3, why: 'as Pfeiffer' },
  { name: 'compacter', paper: 'Mahabadi+ 2021', lr: 1e-2, why: 'PHM adapters have few parameters: as Compacter++' },
  { name: 'compacter++', paper: 'Mahabadi+ 2021', lr: 1e-2, why: '1e-2 beat 3e-3' },
  {
    name: 'prompt', paper: 'Lester+ 2021', lr: 3e-2, why: 'only the virtual-token embeddings train: large steps (1e-1 was worse)',
    options: () => ({ promptTuningInit: 'TEXT', promptTuningInitText: PROMPT_TEXT }),
  },
  { name: 'p-tuning', paper: 'Liu+ 2021', lr: 1e-2, why: 'an MLP prompt encoder (3e-2 no better)' },
  { name: 'prefix', paper: 'Li & Liang 2021', lr: 1e-2, why: 'per-layer key/value prefixes without projection (3e-2 was worse)' },
  // The Kronecker, sparse and low-bit family (issue 15), on the same budget.
  { name: 'lokr', paper: 'Yeh+ 2024', lr: 3e-3, options: (m) => ({ targetModules: demoLora(m, false).targetModules, r: 4, alpha: 8 }), why: 'low-rank Kronecker factors on the demo\'s layers: LoRA\'s lr' },
  { name: 'soka', paper: 'SoKA', lr: 3e-3, options: (m) => ({ targetModules: demoLora(m, false).targetModules, r: 4, alpha: 8 }), why: 'LoKr from the Kronecker SVD of W: as LoKr' },
  { name: 'loha', paper: 'Hyeon-Woo+ 2022', lr: 3e-3, options: (m) => ({ targetModules: demoLora(m, false).targetModules, r: 4, alpha: 8 }), why: 'Hadamard of two rank-4 products: as LoRA' },
  { name: 'shira', paper: 'Bhardwaj+ 2024', lr: 3e-3, options: (m) => ({ targetModules: demoLora(m, false).targetModules, r: 4 }), why: 'r 4 gives r(in+out) entries (about 3% of a 256x256 weight); deltas start at 0' },
  { name: 'lt-sft', paper: 'Ansell+ 2022', lr: 1e-2, options: (m) => ({ targetModules: demoLora(m, false).targetModules, density: 0.02 }), why: '2% of each weight, chosen on the task loss of 64 training sentences' },
  { name: 'spt', paper: 'He+ 2023', lr: 1e-2, options: (m) => ({ targetModules: demoLora(m, false).targetModules, budget: 0.02 }), why: 'the 2% most sensitive entries across layers' },
  { name: 'paca', paper: 'Woo+ 2025', lr: 3e-3, options: (m) => ({ targetModules: demoLora(m, false).targetModules, r: 8 }), why: 'r 8 columns per weight trained in place' },
  { name: 's2ft', paper: 'Yang+ 2024', lr: 3e-3, why: 'one head and 32 FFN channels per layer (the method\'s defaults)' },
  { name: 'lora-4bit', paper: 'QAT (STE)', lr: 3e-3, options: (m) => ({ ...loraNoPattern(m), bits: 4 }), why: 'the demo\'s LoRA on the linear layers, A and B fake-quantized to 4 bits' },
  { name: 'lora-2bit', paper: 'QAT (STE)', lr: 3e-3, options: (m) => ({ ...loraNoPattern(m), bits: 2 }), why: 'as lora-4bit, 2 bits' },
  { name: 'lora-1bit', paper: 'BinaryConnect-style', lr: 3e-3, options: (m) => ({ ...loraNoPattern(m), bits: 1 }), why: 'as lora-4bit, sign x mean |w| per row' },
];

/** The demo's LoRA on the linear layers only, without rank_pattern (for LoRA-like methods that have none). */
function loraNoPattern(model: Module): Record<string, unknown> {
  const { rankPattern: _unused, ...rest } = demoLora(model, false);
  void _unused;
  return rest;
}

/** The demo's LoRA: r 4 on every linear layer (the head excepted), r 8 on the input embedding, alpha 2r, no dropout. */
function demoLora(model: Module, withEmbedding = true): Record<string, unknown> {
  const r = 4;
  const linear = new Set<string>();
  let embedding: string | null = null;
  for (const [path, m] of model.namedModules()) {
    const leaf = path.split('.').pop() ?? '';
    if (isLinearLayer(m) && !['score', 'classifier', 'lm_head'].includes(leaf)) linear.add(leaf);
    if (withEmbedding && m instanceof Embedding && ['embed_tokens', 'wte', 'word_embeddings'].includes(leaf)) embedding = leaf;
  }
  return {
    r, loraAlpha: 2 * r, loraDropout: 0, targetModules: [...linear, ...(embedding ? [embedding] : [])],
    rankPattern: embedding ? { [embedding]: 2 * r } : {},
  };
}

interface Row {
  name: string;
  paper: string;
  lr: number;
  ok: boolean;
  error?: string;
  trainable?: number;
  base?: number;
  accuracy?: number;
  tokS?: number;
  bytes?: number | null;
  mergeable?: boolean | null;
  seconds: number;
  steps?: number;
}

function dirBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    n += e.isDirectory() ? dirBytes(p) : statSync(p).size;
  }
  return n;
}

const fmtInt = (n: number) => n.toLocaleString('en-US');
const fmtPct = (x: number) => (x >= 10 ? x.toFixed(1) : x >= 0.1 ? x.toFixed(2) : x.toFixed(3));
const fmtBytes = (b: number) => (b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : `${(b / 1024).toFixed(0)} KiB`);
const fmtLr = (x: number) => x.toExponential(0);
const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

async function main(): Promise<number> {
  let f;
  try {
    f = parseArgs({
      args: process.argv.slice(2), strict: true, allowPositionals: false, options: {
        methods: { type: 'string' }, steps: { type: 'string' }, epochs: { type: 'string' }, out: { type: 'string' },
        lr: { type: 'string' }, all: { type: 'boolean' }, full: { type: 'boolean' }, 'no-full': { type: 'boolean' }, seed: { type: 'string' }, dtype: { type: 'string' }, help: { type: 'boolean' },
      },
    }).values;
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (f.help) {
    console.log(USAGE);
    return 0;
  }
  const num = (v: string | undefined, name: string, int: boolean): number | undefined => {
    if (v === undefined) return undefined;
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || (int && !Number.isInteger(n))) throw new Error(`--${name} must be a positive ${int ? 'integer' : 'number'}, got "${v}"`);
    return n;
  };
  const maxSteps = num(f.steps, 'steps', true) ?? null;
  const epochs = num(f.epochs, 'epochs', false) ?? 2;
  const seed = f.seed === undefined ? 0 : Number(f.seed);
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`--seed must be an integer >= 0, got "${f.seed}"`);
  const dtype = (f.dtype ?? 'auto') as 'auto' | 'float32' | 'bfloat16';
  if (!['auto', 'float32', 'bfloat16'].includes(dtype)) throw new Error(`--dtype must be auto, float32 or bfloat16, got "${f.dtype}"`);

  // Which rows: --methods (any names methodByName knows, or full), else the table above.
  let specs: Spec[];
  if (f.methods) {
    specs = f.methods.split(',').map((s) => s.trim()).filter(Boolean).map((n) => {
      const known = SPECS.find((s) => s.name === n.toLowerCase());
      if (known) return known;
      if (n.toLowerCase() !== 'full') methodByName(n, true);  // throws listing every name
      const summary = methodByName(n, true).method.summary;
      return { name: n.toLowerCase(), paper: /\(([^()]*\d{4})\)/.exec(summary)?.[1] ?? '', lr: 3e-3, why: 'default lr for a method outside the table' };
    });
  } else {
    specs = SPECS.filter((s) => s.name !== 'full' || !f['no-full']);
  }
  // Registered methods the table does not cover (a user's or a newer method): listed, and run with --all.
  const covered = new Set(SPECS.filter((s) => s.name !== 'full').map((s) => methodByName(s.name, true).method.peftType));
  const others = adapterMethodList().filter((m) => !covered.has(m.peftType));
  if (f.all) {
    for (const m of others) {
      if (!specs.some((s) => s.name !== 'full' && methodByName(s.name, true).method.peftType === m.peftType)) {
        specs.push({ name: m.names[0] ?? m.peftType.toLowerCase(), paper: /\(([^()]*\d{4})\)/.exec(m.summary)?.[1] ?? '', lr: 3e-3, why: 'default lr for a method outside the table' });
      }
    }
  }
  if (f.full && !specs.some((s) => s.name === 'full')) specs.unshift(SPECS[0]!);
  // --lr name=x,name=y: a different learning rate for some rows (the table shows the lr used).
  for (const kv of (f.lr ?? '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const [n, v] = kv.split('=');
    const lr = num(v, `lr ${n}`, false);
    const at = specs.findIndex((s) => s.name === n?.toLowerCase());
    if (at < 0 || lr === undefined) throw new Error(`--lr takes name=value pairs of rows being run, got "${kv}"`);
    specs[at] = { ...specs[at]!, lr, why: 'set by --lr' };
  }

  // Output folder: new or empty, never overwritten.
  const out = f.out ?? mkdtempSync(join(tmpdir(), 'adapterkit-compare-'));
  if (f.out) {
    if (existsSync(out) && readdirSync(out).length > 0) throw new Error(`--out ${out} is not empty; choose a new folder (compare:methods never overwrites one)`);
    mkdirSync(out, { recursive: true });
  }

  const info = benchHeader('compare:methods', `every adapter method on the demo's review sentiment task (embedded default model)`);
  const dir = defaultModelDir();
  const tok = HFTokenizer.fromDir(dir);
  const data = loadSentimentFixtures();
  const built = await buildSequenceClassification(fromObjects(data.rows), tok, { textField: 'text', labelField: 'label', maxLength: 96 });
  const { train, validation: test } = trainValSplit(built.examples, { valFraction: 0.2, seed });
  const majority = majorityAccuracy(test.map((e) => (e as ClassExample).label));
  const budget = maxSteps !== null ? `${maxSteps} steps` : `${epochs} epochs (${Math.ceil(train.length / 16) * epochs} steps)`;
  console.log(`  data     ${train.length} train / ${test.length} held-out review sentences (sentiment package), seed ${seed}; majority ${(100 * majority).toFixed(1)}%`);
  console.log(`  budget   ${budget} at batch 16 for every method, linear schedule, 6% warm-up, dtype ${dtype}`);
  if (others.length && !f.all) console.log(`  also     registered but not in the table (run with --all or --methods): ${others.map((m) => m.names[0] ?? m.peftType).join(', ')}`);
  console.log(`  output   ${out}\n`);

  const rows: Row[] = [];
  const scratch = mkdtempSync(join(tmpdir(), 'adapterkit-compare-adapters-'));
  const progress = Boolean(process.stderr.isTTY) && !process.env.CI;
  let stoppedBy: string | null = null;
  for (const [i, spec] of specs.entries()) {
    const t0 = Date.now();
    const row: Row = { name: spec.name, paper: spec.paper, lr: spec.lr, ok: false, seconds: 0 };
    let model: PretrainedModel | null = null;
    let peft: PeftModel | null = null;
    let trainer: Trainer | null = null;
    try {
      model = loadModel(dir, { dtype, task: 'sequence-classification', numLabels: 2, seed });
      model.config.id2label = { 0: 'negative', 1: 'positive' };
      row.base = model.numParameters();
      if (spec.name === 'full') {
        model.requiresGrad_(true);
        row.mergeable = null;
      } else {
        const { method, preset } = methodByName(spec.name, true);
        const options: Record<string, unknown> = { ...preset, ...(spec.options?.(model, tok) ?? {}), modulesToSave: ['score'], taskType: 'SEQ_CLS', peftType: method.peftType };
        // Options given as text (prompt tuning's init text) become token ids with the model's tokenizer.
        for (const [textKey, idsKey] of Object.entries(method.textOptions ?? {})) {
          const text = options[textKey];
          if (typeof text === 'string' && options[idsKey] === undefined) options[idsKey] = await tok.encode(text);
        }
        // Sample batches and the task loss on them, for the data-driven selections (LT-SFT, SPT).
        const sample = train.slice(0, 64);
        const batches: { inputIds: Tensor; attentionMask: Tensor; labels: Tensor }[] = [];
        for (let b = 0; b < sample.length; b += 8) batches.push(tidy(() => {
          const t = toTensors(collate(sample.slice(b, b + 8), collateOptions(tok)));
          return { inputIds: keep(t.inputIds), attentionMask: keep(t.attentionMask), labels: keep(t.labels) };
        }));
        const m0 = model;
        const taskLoss = (b: number) => crossEntropy(m0.forward({ inputIds: batches[b]!.inputIds, attentionMask: batches[b]!.attentionMask }).logits.to('float32'), batches[b]!.labels);
        try {
          peft = PeftModel.create(model, options as never, { seed, data: batches.map((b) => b.inputIds), taskLoss });
        } finally {
          batches.forEach((b) => [b.inputIds, b.attentionMask, b.labels].forEach((t) => t.dispose()));
        }
        row.mergeable = method.capabilities(peft.configs.get('default') as never).mergeable;
      }
      row.trainable = model.numParameters({ trainableOnly: true });
      trainer = new Trainer({
        model, peft, train, eval: test, collate: collateOptions(tok),
        config: {
          task: 'sequence-classification', lr: spec.lr, epochs, maxSteps, batchSize: 16, schedule: 'linear', warmupRatio: 0.06, weightDecay: 0.01,
          evalEvery: null, seed, outputDir: null, bucketBatches: 20, logEvery: 20, progress,
        },
        log: (s) => console.log(`    ${s}`),
      });
      const result = await trainer.train();
      if (result.stopped === 'signal') {
        stoppedBy = result.signal ?? 'SIGINT';
        throw new Error(`stopped by ${stoppedBy}`);
      }
      row.steps = result.steps;
      row.tokS = result.tokensPerSecond;
      row.accuracy = trainer.evaluate().accuracy!;
      if (peft) {
        const adir = join(scratch, spec.name.replace(/[^a-z0-9+_-]/gi, '_'));
        savePeftAdapters(peft, adir);
        row.bytes = dirBytes(adir);
        rmSync(adir, { recursive: true, force: true });
      } else {
        row.bytes = null;
      }
      row.ok = true;
    } catch (e) {
      row.error = ((e as Error).message ?? String(e)).split('\n')[0]!;
    } finally {
      // The demo's order: the trainer (optimizer state) first, then the adapters with their model.
      trainer?.dispose();
      if (peft) peft.dispose();
      else model?.dispose();
    }
    row.seconds = (Date.now() - t0) / 1000;
    rows.push(row);
    const head = `[${String(i + 1).padStart(2)}/${specs.length}] ${spec.name.padEnd(13)}`;
    console.log(row.ok
      ? `${head} accuracy ${(100 * row.accuracy!).toFixed(1).padStart(5)}%  lr ${fmtLr(spec.lr)}  ${fmtInt(row.trainable!).padStart(9)} trainable  ${row.tokS!.toFixed(0).padStart(6)} tok/s  ${row.seconds.toFixed(0)} s`
      : `${head} FAILED after ${row.seconds.toFixed(0)} s: ${row.error}`);
    if (stoppedBy) break;
  }
  rmSync(scratch, { recursive: true, force: true });

  const cpu = `${info.cpu.model} (${info.threads} threads)`;
  const md = markdownTable(rows, majority, budget, cpu);
  console.log(`\n${md}`);
  const mdPath = join(out, 'compare-methods.md');
  const htmlPath = join(out, 'compare-methods.html');
  const jsonPath = join(out, 'compare-methods.json');
  writeFileSync(mdPath, md + '\n');
  writeFileSync(htmlPath, html(rows, majority, budget, cpu));
  writeFileSync(jsonPath, JSON.stringify({ cpu, budget, majority, seed, dtype, rows }, null, 2) + '\n');
  console.log(`  written: ${mdPath}\n           ${htmlPath}\n           ${jsonPath}`);
  if (stoppedBy) console.log(`  stopped by ${stoppedBy}: ${specs.length - rows.length} methods not run`);
  const trained = rows.filter((r) => r.ok);
  const beat = trained.filter((r) => r.accuracy! > majority + 0.1);
  console.log(`methods: ${trained.length} trained, ${beat.length} beat majority+0.10`);
  return stoppedBy ? 130 : 0;
}

function markdownTable(rows: Row[], majority: number, budget: string, cpu: string): string {
  const head = ['method', 'paper', 'lr', 'trainable params', '% of base', 'held-out acc.', 'train tok/s', 'adapter on disk', 'mergeable'];
  const lines = [
    `Review sentiment (held-out, final weights), embedded default model, ${budget}, batch 16; majority baseline ${(100 * majority).toFixed(1)}%. CPU: ${cpu}.`,
    '',
    `| ${head.join(' | ')} |`,
    `|${head.map((_, i) => (i >= 2 && i !== 8 ? ' ---: ' : ' --- ')).join('|')}|`,
  ];
  for (const r of rows) {
    if (!r.ok) {
      lines.push(`| ${r.name} | ${r.paper} | ${fmtLr(r.lr)} | ${r.trainable !== undefined ? fmtInt(r.trainable) : '—'} | ${r.trainable !== undefined ? fmtPct((100 * r.trainable) / r.base!) : '—'} | failed: ${r.error!.replace(/\|/g, '\\|')} | — | — | — |`);
      continue;
    }
    lines.push(`| ${r.name} | ${r.paper} | ${fmtLr(r.lr)} | ${fmtInt(r.trainable!)} | ${fmtPct((100 * r.trainable!) / r.base!)} | ${(100 * r.accuracy!).toFixed(1)}% | ${r.tokS!.toFixed(0)} | ${r.bytes === null || r.bytes === undefined ? 'whole model' : fmtBytes(r.bytes)} | ${r.mergeable === null || r.mergeable === undefined ? '—' : r.mergeable ? 'yes' : 'no'} |`);
  }
  return lines.join('\n');
}

/** A self-contained page: the table and two CSS bar charts (accuracy with the majority line; trainable %). */
function html(rows: Row[], majority: number, budget: string, cpu: string): string {
  const ok = rows.filter((r) => r.ok);
  const lo = Math.max(0, Math.floor((Math.min(majority, ...ok.map((r) => r.accuracy!)) - 0.05) * 10) / 10);
  const accPos = (a: number) => (100 * (a - lo)) / (1 - lo);
  const accBars = rows.map((r) => r.ok
    ? `<div class="row"><span class="name">${esc(r.name)}</span><span class="track"><span class="bar ${r.accuracy! > majority + 0.1 ? 'good' : 'weak'}" style="width:${accPos(r.accuracy!).toFixed(2)}%"></span><span class="base" style="left:${accPos(majority).toFixed(2)}%"></span></span><span class="val">${(100 * r.accuracy!).toFixed(1)}%</span></div>`
    : `<div class="row"><span class="name">${esc(r.name)}</span><span class="track failed">failed: ${esc(r.error ?? '')}</span><span class="val"></span></div>`).join('\n');
  // Trainable %: log scale (0.01% .. 100%), since the methods span four orders of magnitude.
  const logPos = (p: number) => Math.max(0, Math.min(100, (100 * (Math.log10(Math.max(p, 1e-3)) + 3)) / 5));
  const pctBars = rows.filter((r) => r.trainable !== undefined).map((r) => {
    const p = (100 * r.trainable!) / r.base!;
    return `<div class="row"><span class="name">${esc(r.name)}</span><span class="track"><span class="bar pct" style="width:${logPos(p).toFixed(2)}%"></span></span><span class="val">${fmtPct(p)}%</span></div>`;
  }).join('\n');
  const table = markdownTable(rows, majority, budget, cpu).split('\n').slice(2).filter((l) => !/^\|\s*-/.test(l) && !/^\|[ -:|]+\|$/.test(l));
  const cells = (l: string) => l.slice(1, -1).split(/(?<!\\)\|/).map((c) => esc(c.trim().replace(/\\\|/g, '|')));
  const [th, ...tr] = table;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>adapterkit compare:methods</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:980px}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:2em}
.row{display:flex;align-items:center;margin:3px 0}
.name{width:110px;font-family:monospace}
.track{position:relative;flex:1;height:18px;background:#f1f1f1}
.track.failed{background:#fde8e8;color:#a00;font-size:12px;padding-left:4px;height:auto}
.bar{position:absolute;left:0;top:0;bottom:0}
.good{background:#3a7bd5}.weak{background:#d59a3a}.pct{background:#6a9f58}
.base{position:absolute;top:-3px;bottom:-3px;border-left:2px dashed #c00}
.val{width:70px;text-align:right;font-family:monospace}
table{border-collapse:collapse;margin-top:1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}
.note{color:#666;font-size:12px}
</style></head><body>
<h1>adapterkit compare:methods</h1>
<p>Review sentiment, held-out accuracy of the final weights; embedded default model, ${esc(budget)}, batch 16. CPU: ${esc(cpu)}.</p>
<h2>Held-out accuracy</h2>
<p class="note">Axis from ${(100 * lo).toFixed(0)}% to 100%. Dashed red line: majority baseline ${(100 * majority).toFixed(1)}%. Blue: above majority + 10 points.</p>
${accBars}
<h2>Trainable parameters, % of the base model</h2>
<p class="note">Log scale, 0.001% to 100%.</p>
${pctBars}
<h2>Table</h2>
<table><thead><tr>${cells(th ?? '').map((c) => `<th>${c}</th>`).join('')}</tr></thead><tbody>
${tr.map((l) => `<tr>${cells(l).map((c) => `<td>${c}</td>`).join('')}</tr>`).join('\n')}
</tbody></table>
</body></html>
`;
}

main().then((code) => { process.exitCode = code; }, (e) => {
  console.error(`compare:methods: ${(e as Error).message}`);
  process.exitCode = 1;
});
