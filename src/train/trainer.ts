// The training loop: forward, loss, backward over accumulated micro-batches, clipping, an optimizer
// step on a schedule; evaluation, early stopping and the best checkpoint; crash-safe checkpoints and
// exact resume (data position, optimizer, step, RNG); SIGINT/SIGTERM save and stop cleanly. In a
// process group (adapterkit launch) it trains data-parallel: see data-parallel.ts.
import { appendFileSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { tidy, noGrad, manualSeed, configureRuntimeOnce, type Tensor } from '../tensor/index.js';
import type { PretrainedModel } from '../models/types.js';
import { saveModel } from '../models/load.js';
import { PeftModel, savePeftAdapters } from '../adapters/index.js';
import { DataLoader, collate, toTensors, type CollateOptions, type Example } from '../data/index.js';
import { AdamW, SGD, paramGroups, type Optimizer } from './optim.js';
import { lrAt, type ScheduleKind } from './schedule.js';
import { clipGradNorm } from './clip.js';
import { accuracy, macroF1, entityScores } from './metrics.js';
import { lossParts, fusedCausalLmLoss, itemCount, IGNORE, type TrainTask } from './loss.js';
import { saveCheckpoint, findResumeCheckpoint, loadCheckpoint, type TrainState } from './checkpoint.js';
import { truncateMetrics } from './metrics-file.js';
import { firstNonFinite } from '../models/finite.js';
import { ProgressBar } from './progress.js';
import { checkpointedBackward } from './checkpointing.js';
import { writeCurveHtml, type CurvePoint } from './curve.js';
import { lengthSortedBatches } from './eval-batches.js';
import { PhaseClock } from './profile.js';
import { DataParallel } from './data-parallel.js';
import { currentProcessGroup, type ProcessGroup } from '../distributed/process-group.js';

export interface TrainerConfig {
  task: TrainTask;
  optimizer: 'adamw' | 'sgd';
  lr: number;
  weightDecay: number;
  betas: [number, number];
  eps: number;
  momentum: number;
  schedule: ScheduleKind;
  warmupSteps: number;
  /** Used when warmupSteps is 0: a fraction of the total steps. */
  warmupRatio: number;
  epochs: number;
  /** Optimizer steps; overrides epochs when set. */
  maxSteps: number | null;
  batchSize: number;
  gradAccum: number;
  maxGradNorm: number;
  labelSmoothing: number;
  evalEvery: number | null;
  evalBatchSize: number;
  /** Evaluation batches hold at most this many padded tokens (rows x longest row). */
  evalTokens: number;
  earlyStoppingPatience: number | null;
  saveEvery: number | null;
  keepCheckpoints: number;
  outputDir: string | null;
  seed: number;
  logEvery: number;
  bucketBatches: number;
  progress: boolean;
  /** Recompute each block in the backward instead of keeping its activations (less memory, ~1/3 more compute). */
  gradientCheckpointing: boolean;
  /** Print where the time went at the end: per phase of the loop and per libtorch op family. */
  profile: boolean;
  /**
   * A step whose loss or gradient norm is NaN or infinite: 'error' (default) stops the run before
   * the update, 'skip' drops that step's update and counts it (reported at the end).
   */
  onNonFiniteLoss: 'error' | 'skip';
}

export const DEFAULT_TRAINER: TrainerConfig = {
  task: 'causal-lm', optimizer: 'adamw', lr: 2e-4, weightDecay: 0.01, betas: [0.9, 0.999], eps: 1e-8, momentum: 0,
  schedule: 'linear', warmupSteps: 0, warmupRatio: 0, epochs: 1, maxSteps: null, batchSize: 8, gradAccum: 1, maxGradNorm: 1,
  labelSmoothing: 0, evalEvery: null, evalBatchSize: 64, evalTokens: 4096, earlyStoppingPatience: null, saveEvery: null, keepCheckpoints: 2,
  outputDir: null, seed: 0, logEvery: 10, bucketBatches: 0, progress: true, gradientCheckpointing: false, profile: false,
  onNonFiniteLoss: 'error',
};

export interface EvalResult {
  loss: number;
  perplexity?: number;
  accuracy?: number;
  f1?: number;
  /** Token classification with BIO/IOBES tag names (config.json id2label): entity-level F1, seqeval's rules. */
  entityF1?: number;
  predictions?: number[];
}

export interface TrainResult {
  steps: number;
  stopped: 'done' | 'early-stopping' | 'signal' | 'requested';
  finalLoss: number;
  bestMetric: number | null;
  bestStep: number | null;
  evals: { step: number; result: EvalResult }[];
  tokensPerSecond: number;
  outputDir: string | null;
  /** Steps whose update was dropped for a non-finite loss or gradient (onNonFiniteLoss 'skip'). */
  skippedSteps: number;
  /** The signal that stopped the run, when stopped is 'signal'. */
  signal?: 'SIGINT' | 'SIGTERM';
}

export interface TrainerOptions {
  model: PretrainedModel;
  /** The adapters being trained, or null for full fine-tuning of every parameter that requires grad. */
  peft: PeftModel | null;
  train: readonly Example[];
  eval?: readonly Example[];
  collate: CollateOptions;
  config?: Partial<TrainerConfig>;
  /** Continue from outputDir/checkpoints/latest when there is one. */
  resume?: boolean;
  /**
   * Train data-parallel over this group (default: the one initProcessGroup() made, if any):
   * config.batchSize is then per rank, and the run equals one process with batchSize x worldSize.
   */
  processGroup?: ProcessGroup | null;
  log?: (line: string) => void;
}

function validate(c: TrainerConfig): void {
  const pos = (k: keyof TrainerConfig) => { if (!(typeof c[k] === 'number' && (c[k] as number) > 0)) throw new Error(`training config: ${k} must be > 0, got ${JSON.stringify(c[k])}`); };
  pos('lr'); pos('batchSize'); pos('gradAccum'); pos('epochs'); pos('evalBatchSize'); pos('evalTokens');
  if (!['adamw', 'sgd'].includes(c.optimizer)) throw new Error(`training config: optimizer must be adamw or sgd, got "${c.optimizer}"`);
  if (!['constant', 'linear', 'cosine'].includes(c.schedule)) throw new Error(`training config: schedule must be constant, linear or cosine, got "${c.schedule}"`);
  if (!['causal-lm', 'sequence-classification', 'token-classification'].includes(c.task)) throw new Error(`training config: unknown task "${c.task}"`);
  if (c.maxSteps !== null && !(Number.isInteger(c.maxSteps) && c.maxSteps > 0)) throw new Error('training config: maxSteps must be a positive integer');
  if (!['error', 'skip'].includes(c.onNonFiniteLoss)) throw new Error(`training config: onNonFiniteLoss must be error or skip, got ${JSON.stringify(c.onNonFiniteLoss)}`);
}

const mixSeed = (a: number, b: number) => (Math.imul(a ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(b + 1, 0xc2b2ae35)) >>> 1;

export class Trainer {
  readonly config: TrainerConfig;
  private readonly loader: DataLoader<Example>;
  private readonly named: [string, Tensor][];
  private readonly optimizer: Optimizer;
  private readonly log: (line: string) => void;
  private readonly dp: DataParallel;
  private stopRequested: 'signal' | 'requested' | null = null;
  private signal: 'SIGINT' | 'SIGTERM' | undefined;

  constructor(private readonly o: TrainerOptions) {
    this.config = { ...DEFAULT_TRAINER, ...o.config };
    validate(this.config);
    configureRuntimeOnce();  // threads and allocator for training, unless the program chose them already
    this.log = o.log ?? ((s) => console.log(s));
    this.named = o.model.namedParameters().filter(([, t]) => t.requiresGrad);
    if (!this.named.length) throw new Error('nothing to train: no parameter requires grad (add an adapter, or unfreeze the model for full fine-tuning)');
    const groups = paramGroups(this.named);
    const c = this.config;
    this.optimizer = c.optimizer === 'adamw'
      ? new AdamW(groups, { lr: c.lr, betas: c.betas, eps: c.eps, weightDecay: c.weightDecay })
      : new SGD(groups, { lr: c.lr, momentum: c.momentum, weightDecay: c.weightDecay });
    this.dp = new DataParallel(o.processGroup === undefined ? currentProcessGroup() : o.processGroup);
    // Every rank draws the same global batches; each computes its slice of them.
    this.loader = new DataLoader(o.train as Example[], { batchSize: c.batchSize * this.dp.worldSize, seed: c.seed, shuffle: true, bucketBatches: c.bucketBatches, collate: o.collate });
  }

  get totalSteps(): number {
    const c = this.config;
    return c.maxSteps ?? Math.max(1, Math.floor((this.loader.batchesPerEpoch * c.epochs) / c.gradAccum));
  }

  /** Ask the loop to save and stop after the current step. */
  requestStop(): void {
    this.stopRequested = 'requested';
  }

  private forward(input: { inputIds: Tensor; attentionMask: Tensor }): Tensor {
    const f = this.o.peft ? this.o.peft.forward(input) : this.o.model.forward(input);
    return f.logits;
  }

  /**
   * The loss summed over the batch's items. Causal LMs with a plain LM head use the fused head +
   * cross-entropy (the (B, T, V) float32 logits are never formed); everything else goes through logits.
   */
  private lossSum(inputIds: Tensor, attentionMask: Tensor, labels: Tensor): Tensor {
    const c = this.config;
    const head = c.task === 'causal-lm' && c.labelSmoothing === 0 ? this.o.model.lmHeadWeight() : null;
    if (head) {
      const input = { inputIds, attentionMask, skipLmHead: true };
      const hidden = (this.o.peft ? this.o.peft.forward(input) : this.o.model.forward(input)).hiddenStates;
      return fusedCausalLmLoss(hidden, head, labels);
    }
    return lossParts(c.task, this.forward({ inputIds, attentionMask }), labels, c.labelSmoothing);
  }

  /** One micro-batch's forward and backward with gradient checkpointing; returns its loss. */
  private checkpointedStep(inputIds: Tensor, attentionMask: Tensor, labels: Tensor, count: number, seed: number): number {
    const c = this.config;
    const head = c.task === 'causal-lm' && c.labelSmoothing === 0 ? this.o.model.lmHeadWeight() : null;
    this.o.peft?.prepareTrainingForward();
    const segs = this.o.model.segments({ inputIds, attentionMask, skipLmHead: head !== null });
    return checkpointedBackward(segs, (out) => {
      const sum = head ? fusedCausalLmLoss(out.hiddenStates, head, labels) : lossParts(c.task, out.logits, labels, c.labelSmoothing);
      return sum.div(Math.max(1, count));
    }, seed);
  }

  /**
   * Loss and metrics on `examples` (default: the eval set), under no_grad in the model's dtype.
   * Batches are length-sorted (see lengthSortedBatches) and at most `evalBatchSize` rows of
   * `evalTokens` padded tokens; `predictions` come back in the order of `examples`.
   */
  evaluate(examples: readonly Example[] = this.o.eval ?? []): EvalResult {
    const c = this.config;
    const model = this.o.model;
    const wasTraining = model.training;
    const device = model.device;
    model.eval();
    let sum = 0;
    let count = 0;
    // Per example: its predicted class, or its (pred, gold) pairs for token classification.
    const classPred: number[] = new Array<number>(examples.length).fill(-1);
    const tokenPairs: [number, number][][] = new Array<[number, number][]>(examples.length);
    try {
      for (const idx of lengthSortedBatches(examples.map((e) => e.inputIds.length), c.evalBatchSize, c.evalTokens)) {
        const chunk = idx.map((i) => examples[i]!);
        noGrad(() => tidy(() => {
          const batch = collate(chunk, this.o.collate);
          const t = toTensors(batch, { device });
          const logits = this.forward({ inputIds: t.inputIds, attentionMask: t.attentionMask });
          sum += lossParts(c.task, logits, t.labels).item();
          count += itemCount(c.task, batch.labels as number[][]);
          if (c.task === 'sequence-classification') {
            const p = Array.from(logits.argmax(-1).data() as BigInt64Array, Number);
            idx.forEach((ex, r) => { classPred[ex] = p[r]!; });
          } else if (c.task === 'token-classification') {
            const p = logits.argmax(-1).toArray() as number[][];
            (batch.labels as number[][]).forEach((row, r) => {
              const pairs: [number, number][] = [];
              row.forEach((g, j) => { if (g !== IGNORE) pairs.push([p[r]![j]!, g]); });
              tokenPairs[idx[r]!] = pairs;
            });
          }
        }));
      }
    } finally {
      if (wasTraining) model.train();
    }
    const loss = sum / Math.max(1, count);
    if (c.task === 'causal-lm') return { loss, perplexity: Math.exp(loss) };
    let pred: number[];
    let gold: number[];
    if (c.task === 'sequence-classification') {
      pred = classPred;
      gold = examples.map((e) => (e as { label: number }).label);
    } else {
      const flat = tokenPairs.flat();
      pred = flat.map(([p]) => p);
      gold = flat.map(([, g]) => g);
      // Entity-level F1 (seqeval) next to token accuracy, when the tags have names that look like BIO/IOBES.
      const names = this.o.model.config.id2label as Record<string, string> | undefined;
      if (names && Object.values(names).some((n) => /^[BIES]-/.test(n))) {
        const tag = (id: number) => names[String(id)] ?? 'O';
        const seqs = tokenPairs.filter(Boolean);
        const e = entityScores(seqs.map((s) => s.map(([p]) => tag(p))), seqs.map((s) => s.map(([, g]) => tag(g))));
        return { loss, accuracy: accuracy(pred, gold), f1: macroF1(pred, gold), entityF1: e.f1, predictions: pred };
      }
    }
    return { loss, accuracy: accuracy(pred, gold), f1: macroF1(pred, gold), predictions: pred };
  }

  private trainerState(step: number, micro: number, best: { metric: number | null; step: number | null; bad: number }, tokens: number): TrainState {
    return {
      version: 1, step, microStep: micro, epoch: this.loader.epoch, loader: this.loader.state(), optimizerSteps: this.optimizer.stepCount,
      bestMetric: best.metric, bestStep: best.step, evalsWithoutImprovement: best.bad, adapterRuntime: this.o.peft?.runtimeState() ?? {},
      tokensSeen: tokens, config: this.config, dataHash: this.dataHash(), worldSize: this.dp.worldSize,
    };
  }

  private dataHashCache: string | null = null;

  /** sha256 of the training examples (ids and labels, in order): resume refuses other data. */
  private dataHash(): string {
    if (this.dataHashCache === null) {
      const h = createHash('sha256');
      for (const e of this.o.train) h.update(JSON.stringify(['label' in e ? e.label : e.labels, e.inputIds]) + '\n');
      this.dataHashCache = h.digest('hex');
    }
    return this.dataHashCache;
  }

  /** Refuses to write weights holding NaN or infinity anywhere (checkpoint, best/, final/). */
  private assertFiniteWeights(what: string): void {
    const bad = firstNonFinite(this.named);
    if (bad) throw new Error(`not saving ${what}: ${bad.name} holds ${bad.what} (training diverged; lower the learning rate, lr ${this.config.lr})`);
  }

  private save(step: number, micro: number, best: { metric: number | null; step: number | null; bad: number }, tokens: number): void {
    const dir = this.config.outputDir;
    if (!dir || !this.dp.isMain) return;
    this.assertFiniteWeights(`the checkpoint at step ${step}`);
    saveCheckpoint(join(dir, 'checkpoints'), this.trainerState(step, micro, best, tokens), new Map(this.named), this.optimizer.stateTensors(), {
      keep: this.config.keepCheckpoints,
      extra: (tmp) => this.exportWeights(join(tmp, 'model')),
    });
  }

  /** The trained result in its usable form: a PEFT adapter folder, or a full HF checkpoint. */
  exportWeights(dir: string): void {
    if (this.o.peft) savePeftAdapters(this.o.peft, dir);
    else saveModel(this.o.model, dir);
  }

  private saveBest(): void {
    const dir = this.config.outputDir;
    if (!dir || !this.dp.isMain) return;
    this.assertFiniteWeights('best/');
    const tmp = join(dir, `.best-tmp-${process.pid}`);
    rmSync(tmp, { recursive: true, force: true });
    this.exportWeights(tmp);
    rmSync(join(dir, 'best'), { recursive: true, force: true });
    renameSync(tmp, join(dir, 'best'));
  }

  async train(): Promise<TrainResult> {
    const c = this.config;
    const total = this.totalSteps;
    const warmup = c.warmupSteps || Math.round(c.warmupRatio * total);
    const sched = { kind: c.schedule, peak: c.lr, warmupSteps: warmup, totalSteps: total };
    let step = 0;
    let micro = 0;
    let tokens = 0;
    const best = { metric: null as number | null, step: null as number | null, bad: 0 };
    const metricsFile = c.outputDir && this.dp.isMain ? join(c.outputDir, 'metrics.jsonl') : null;
    if (c.outputDir) mkdirSync(c.outputDir, { recursive: true });
    if (this.o.resume && c.outputDir) {
      const found = findResumeCheckpoint(join(c.outputDir, 'checkpoints'));
      if (!found) throw new Error(`cannot resume: ${join(c.outputDir, 'checkpoints')} holds no complete checkpoint; start a new run without resume`);
      if (found.note) this.log(found.note);
      const ck = loadCheckpoint(found.dir);
      try {
        // Other examples under the same step count would silently continue a different run.
        if (ck.state.dataHash !== undefined && ck.state.dataHash !== this.dataHash()) {
          throw new Error(`cannot resume from ${ck.dir}: the training examples differ from those it was trained on (other data files, split, seed or tokenization; examples hash ${ck.state.dataHash.slice(0, 12)}…, now ${this.dataHash().slice(0, 12)}…); resume with the same data and settings, or start a new run`);
        }
        this.dp.checkResume(ck.state.worldSize, ck.dir);
        this.restore(ck.trainable, ck.optimizer, ck.state);
      } finally {
        for (const t of [...ck.trainable.values(), ...ck.optimizer.values()]) t.dispose();
      }
      step = ck.state.step;
      micro = ck.state.microStep;
      tokens = ck.state.tokensSeen;
      best.metric = ck.state.bestMetric;
      best.step = ck.state.bestStep;
      best.bad = ck.state.evalsWithoutImprovement;
      this.log(`resumed from ${ck.dir} at step ${step}`);
      // Lines a killed run logged after this checkpoint would repeat: keep only those up to it.
      if (metricsFile) truncateMetrics(metricsFile, step);
    }
    const trainCurve: CurvePoint[] = [];
    const evalCurve: CurvePoint[] = [];
    const metricCurve: CurvePoint[] = [];
    const evals: { step: number; result: EvalResult }[] = [];
    const record = (r: Record<string, unknown>) => { if (metricsFile) appendFileSync(metricsFile, JSON.stringify(r) + '\n'); };
    const bar = c.progress && this.dp.isMain ? new ProgressBar('train') : null;
    const onSignal = (sig: NodeJS.Signals) => {
      this.stopRequested = 'signal';
      this.signal = sig === 'SIGTERM' ? 'SIGTERM' : 'SIGINT';
    };
    let skippedSteps = 0;
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    const params = this.named.map(([, t]) => t);
    this.dp.broadcastWeights(params);  // ranks start equal (after a resume too), whatever their init drew
    const higherIsBetter = c.task !== 'causal-lm';
    let emaLoss = NaN;
    let lastLoss = NaN;
    let stopped: TrainResult['stopped'] = 'done';
    const t0 = Date.now();
    const tokens0 = tokens;
    const device = this.o.model.device;
    const clock = new PhaseClock(c.profile);
    let profile: string[] = [];
    // Dropout masks depend only on (seed, micro-step) and the rank: exact resume.
    const seedOf = (m: number) => (this.dp.active ? mixSeed(mixSeed(c.seed, m), this.dp.rank) : mixSeed(c.seed, m));
    this.o.model.train();
    try {
      while (step < total) {
        // One optimizer step over gradAccum micro-batches, each loss divided by the item count of
        // the whole accumulated batch.
        const items = clock.time('data', () => Array.from({ length: c.gradAccum }, () => this.loader.next()));
        const count = items.reduce((n, it) => n + itemCount(c.task, it.batch.labels as number[][]), 0);
        let stepLoss = 0;
        for (const it of items) {
          manualSeed(seedOf(micro++));
          // Tokens and the item count are the global batch's; the forward is this rank's slice.
          tokens += (it.batch.attentionMask as number[][]).reduce((s, r) => s + r.reduce((a, b) => a + b, 0), 0);
          const mine = this.dp.active ? this.dp.slice(it.indices).map((i) => this.o.train[i]!) : null;
          if (mine && !mine.length) continue;  // a last batch with fewer rows than ranks
          clock.time('forward + backward', () => tidy(() => {
            const t = toTensors(mine ? collate(mine, this.o.collate) : it.batch, { device });
            if (c.gradientCheckpointing) {
              stepLoss += this.checkpointedStep(t.inputIds, t.attentionMask, t.labels, count, seedOf(micro));
            } else {
              let l = this.lossSum(t.inputIds, t.attentionMask, t.labels).div(Math.max(1, count));
              const aux = this.o.peft?.auxLoss() ?? null;  // a router's load-balancing loss, per micro-batch
              if (aux) l = l.add(aux.div(items.length * this.dp.worldSize));
              l.backward();
              stepLoss += l.item();
            }
          }));
        }
        // One fused all-reduce: gradients, the loss and any rank's stop request (no-op on one process).
        const synced = this.dp.active ? clock.time('all-reduce', () => this.dp.sync(params, stepLoss, this.stopRequested !== null)) : null;
        if (synced) stepLoss = synced.loss;
        const gradNorm = clock.time('optimizer', () => clipGradNorm(params, c.maxGradNorm));  // the norm is checked even when not clipping
        this.optimizer.lr = lrAt(sched, step);
        if (Number.isFinite(stepLoss) && Number.isFinite(gradNorm)) clock.time('optimizer', () => this.optimizer.step());
        else {
          // A NaN or infinite loss or gradient would poison every weight it touches; the update is
          // never applied, so no checkpoint, best/ or final/ can hold such weights.
          const what = Number.isFinite(stepLoss) ? `the gradient norm is ${gradNorm}` : `the loss is ${stepLoss}`;
          this.optimizer.zeroGrad();
          if (c.onNonFiniteLoss !== 'skip') {
            throw new Error(`step ${step + 1}: ${what}; training stopped before applying it. Lower the learning rate (lr ${c.lr}) or check the data; ` +
              'to skip such steps instead, set training.onNonFiniteLoss: skip (--skip-nonfinite)');
          }
          skippedSteps++;
          record({ step: step + 1, skipped: 'non-finite', loss: String(stepLoss), grad_norm: String(gradNorm) });
        }
        this.optimizer.zeroGrad();
        step++;
        if (Number.isFinite(stepLoss)) {  // a skipped step leaves the average and the curve alone
          lastLoss = stepLoss;
          emaLoss = Number.isNaN(emaLoss) ? stepLoss : 0.9 * emaLoss + 0.1 * stepLoss;
          trainCurve.push({ step, value: stepLoss });
        }
        const tokPerSec = (tokens - tokens0) / Math.max(1e-3, (Date.now() - t0) / 1000);
        bar?.update({ step, total, loss: emaLoss, lr: this.optimizer.lr, tokPerSec });
        if (step % c.logEvery === 0 || step === total) record({ step, loss: stepLoss, lr: this.optimizer.lr, tokens, tok_per_s: tokPerSec });
        if (c.evalEvery && this.o.eval?.length && (step % c.evalEvery === 0 || step === total)) {
          const r = clock.time('evaluation', () => this.evaluate());
          evals.push({ step, result: r });
          evalCurve.push({ step, value: r.loss });
          const metric = higherIsBetter ? r.accuracy! : r.loss;
          if (higherIsBetter) metricCurve.push({ step, value: metric });
          record({ step, eval_loss: r.loss, eval_accuracy: r.accuracy, eval_f1: r.f1, eval_entity_f1: r.entityF1, eval_perplexity: r.perplexity });
          // A NaN or infinite evaluation is never the best model.
          const improved = Number.isFinite(metric) && (best.metric === null || (higherIsBetter ? metric > best.metric : metric < best.metric));
          if (improved) {
            best.metric = metric;
            best.step = step;
            best.bad = 0;
            clock.time('checkpoints', () => this.saveBest());
          } else best.bad++;
          bar?.done();
          this.log(`eval @ ${step}: loss ${r.loss.toFixed(4)}${r.accuracy !== undefined ? `  accuracy ${(100 * r.accuracy).toFixed(1)}%  F1 ${r.f1!.toFixed(3)}${r.entityF1 !== undefined ? `  entity F1 ${r.entityF1.toFixed(3)}` : ''}` : `  perplexity ${r.perplexity!.toFixed(2)}`}${improved ? '  (best)' : ''}`);
          if (c.earlyStoppingPatience && best.bad >= c.earlyStoppingPatience) {
            stopped = 'early-stopping';
            break;
          }
        }
        if (c.saveEvery && step % c.saveEvery === 0) clock.time('checkpoints', () => this.save(step, micro, best, tokens));
        await new Promise((r) => setImmediate(r));  // lets SIGINT/SIGTERM handlers run
        // Several ranks stop together, at the step whose all-reduce carried a request.
        if (synced ? synced.stop : this.stopRequested) {
          stopped = this.stopRequested ?? 'signal';
          this.save(step, micro, best, tokens);
          break;
        }
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      bar?.done();
      this.o.model.eval();
      profile = clock.report();  // also switches the op profiler off after an error
    }
    for (const line of profile) this.log(line);
    if (skippedSteps) this.log(`skipped ${skippedSteps} of ${step} steps with a non-finite loss or gradient (their updates were not applied)`);
    if (c.outputDir && this.dp.isMain) {
      if (stopped === 'done' || stopped === 'early-stopping') {
        this.save(step, micro, best, tokens);  // checks the weights are finite first
        this.exportWeights(join(c.outputDir, 'final'));
      }
      writeCurveHtml(join(c.outputDir, 'curve.html'), `adapterkit training (${c.task})`, trainCurve, evalCurve, higherIsBetter ? { name: 'accuracy', points: metricCurve } : null);
    }
    return {
      steps: step, stopped, finalLoss: lastLoss, bestMetric: best.metric, bestStep: best.step, evals,
      tokensPerSecond: (tokens - tokens0) / Math.max(1e-3, (Date.now() - t0) / 1000), outputDir: c.outputDir,
      skippedSteps, ...(stopped === 'signal' ? { signal: this.signal ?? 'SIGINT' } : {}),
    };
  }

  private restore(trainable: Map<string, Tensor>, opt: Map<string, Tensor>, state: TrainState): void {
    noGrad(() => {
      for (const [name, t] of this.named) {
        const saved = trainable.get(name);
        if (!saved) throw new Error(`checkpoint has no "${name}": it was made for another model or adapter setup`);
        if (saved.shape.join() !== t.shape.join()) throw new Error(`checkpoint "${name}" has shape [${saved.shape}] but the model needs [${t.shape}]`);
        t.copy_(saved);
      }
    });
    this.optimizer.loadStateTensors(opt, state.optimizerSteps);
    this.loader.restore(state.loader as never);
    if (this.o.peft && state.adapterRuntime) this.o.peft.loadRuntimeState(state.adapterRuntime);
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}

