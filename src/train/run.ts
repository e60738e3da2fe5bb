// A whole training run from one configuration (what `adapterkit train` executes): model and
// tokenizer, data files -> examples for the task, LoRA or full fine-tuning, the trainer, outputs.
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { loadModel } from '../models/load.js';
import { HFTokenizer } from '../tokenizer/tokenizer.js';
import { PeftModel, methodByName, loadPeftAdapter, parseSetup, leaves, type LoraConfig } from '../adapters/index.js';
import {
  readRecords, buildCausalLm, buildInstruction, buildSequenceClassification, buildTokenClassification, trainValSplit,
  collateOptions, collate, toTensors, type Example, type DataRecord,
} from '../data/index.js';
import { autoDtype, keep, tidy, type DType, type Device, type Tensor } from '../tensor/index.js';
import type { Task } from '../models/types.js';
import { Trainer, type TrainerConfig, type TrainResult } from './trainer.js';
import { lossParts } from './loss.js';
import { checkRunKeys } from './run-keys.js';
import { checkRankFits } from '../models/size.js';
import { assertFiniteParameters } from '../models/finite.js';
import { readConfig } from '../models/config.js';
import { prepareRunOutput, reportSkipped } from './run-output.js';
import { writeFileAtomic } from '../io/atomic.js';
import { quantizeModel } from '../quant/model.js';
import { parseQuantFormat, type QuantFormat } from '../quant/weight.js';
import { currentProcessGroup } from '../distributed/process-group.js';

export type RunTask = 'causal-lm' | 'instruction' | 'sequence-classification' | 'token-classification';

export interface RunConfig {
  model: string;
  task: RunTask;
  output: string;
  /**
   * "full" (every weight trains) or an adapter method by any of its names: lora, dora, ia3, ssf,
   * hydra, bottleneck (seq_bn / pfeiffer), houlsby, parallel, compacter, compacter++, prefix, prompt,
   * p-tuning, … (adapterkit train --help lists them). Default lora.
   */
  method: string;
  /** 'auto' (default): bfloat16 where the hardware computes it natively, else float32. */
  dtype: DType | 'auto';
  /** 'cpu' (default) or 'cuda[:N]'. */
  device?: Device;
  /** Quantize the frozen base (QLoRA): nf4, fp4, int8 or int4. Adapters train on top in float32. */
  quantize?: QuantFormat;
  data: {
    train: string;
    eval?: string | null;
    /** Held out from train when no eval file is given (default 0.1; 0 for none). */
    valFraction?: number;
    maxLength?: number;
    /** causal-lm: tokens per packed block. */
    blockSize?: number;
    onBadRow?: 'error' | 'skip';
    textField?: string;
    labelField?: string;
    promptField?: string;
    responseField?: string;
    tokensField?: string;
    tagsField?: string;
  };
  /** Options of the adapter method (its config keys, camelCase or PEFT's snake_case), over the preset the method name picks. */
  adapter?: Record<string, unknown>;
  /**
   * Train the new adapter ("default") inside a composition with adapters trained before, which stay
   * frozen: `adapters` maps names to adapter folders, `setup` is the active composition in text form,
   * e.g. {adapters: {lang: runs/lang/final}, setup: "Stack(lang, default)"} (MAD-X).
   */
  compose?: { adapters: Record<string, string>; setup: string };
  /** LoRA options (the section's older name; for LoRA methods only, merged under `adapter`). */
  lora?: Partial<LoraConfig>;
  training?: Partial<TrainerConfig>;
}

const MODEL_TASK: Record<RunTask, Task> = {
  'causal-lm': 'causal-lm', instruction: 'causal-lm', 'sequence-classification': 'sequence-classification', 'token-classification': 'token-classification',
};

export function validateRunConfig(c: Partial<RunConfig>): RunConfig {
  checkRunKeys(c);  // first: a misspelt "modle" should say so, not that "model" is missing
  const need = (v: unknown, name: string) => { if (v === undefined || v === null || v === '') throw new Error(`training config: "${name}" is required`); };
  need(c.model, 'model');
  need(c.data?.train, 'data.train');
  need(c.output, 'output');
  const task = c.task ?? 'causal-lm';
  if (!(task in MODEL_TASK)) throw new Error(`training config: task must be one of ${Object.keys(MODEL_TASK).join(', ')}, got "${task}"`);
  const method = c.method ?? 'lora';
  if (typeof method !== 'string') throw new Error(`training config: method must be a string, got ${JSON.stringify(method)}`);
  if (method !== 'full') {
    const m = methodByName(method, false);
    if (!m) methodByName(method, true);  // throws, listing every method
    if (c.lora && Object.keys(c.lora).length && m!.method.peftType !== 'LORA') throw new Error(`training config: the "lora" section applies to LoRA methods; method "${method}" takes its options in "adapter"`);
  } else if (c.adapter && Object.keys(c.adapter).length) throw new Error('training config: method "full" takes no "adapter" options');
  const dtype = c.dtype ?? 'auto';
  if (!['auto', 'float32', 'bfloat16', 'float16'].includes(dtype)) throw new Error(`training config: dtype must be auto, float32, bfloat16 or float16, got "${dtype}"`);
  if (c.quantize !== undefined) {
    parseQuantFormat(String(c.quantize));
    if (method === 'full') throw new Error('training config: quantize needs an adapter method (a quantized base is frozen; "full" would train it)');
  }
  if (c.device !== undefined && !/^(cpu|cuda(:\d+)?)$/.test(c.device)) throw new Error(`training config: device must be cpu, cuda or cuda:N, got "${c.device}"`);
  return { ...(c as RunConfig), task, method, dtype };
}

/** Loads the frozen adapters of a composition and activates it; only "default" (the new adapter) trains. */
function composeWith(peft: PeftModel, compose: NonNullable<RunConfig['compose']>, log: (s: string) => void): void {
  if (!compose || typeof compose !== 'object' || typeof compose.setup !== 'string' || !compose.adapters || typeof compose.adapters !== 'object') {
    throw new Error('training config: compose must be {adapters: {name: folder}, setup: "Stack(name, default)"}');
  }
  for (const [name, dir] of Object.entries(compose.adapters)) {
    if (name === 'default') throw new Error('training config: compose.adapters cannot use the name "default" (the adapter being trained)');
    loadPeftAdapter(peft, dir, { adapterName: name });
  }
  const setup = parseSetup(compose.setup);
  if (!leaves(setup).includes('default')) throw new Error(`training config: compose.setup ${compose.setup} must include "default", the adapter being trained`);
  peft.setActive(setup);
  // AdapterHub's train_adapter with an active composition: the composed adapters stay frozen.
  peft.setTrainable(Object.keys(compose.adapters), () => false);
  log(`composition ${compose.setup}: ${Object.keys(compose.adapters).join(', ')} frozen, default trains`);
}

/** The adapter options of a run: the preset of the method's name, then `lora` (LoRA only), then `adapter`. */
export function resolveMethodOptions(c: RunConfig): { peftType: string; options: Record<string, unknown> } {
  const { method, preset } = methodByName(c.method, true);
  const given = { ...(method.peftType === 'LORA' ? c.lora ?? {} : {}), ...(c.adapter ?? {}) };
  // A user's key overrides the preset's whichever spelling it uses (reduction_factor over reductionFactor).
  const camel = (k: string) => k.replace(/_([a-z0-9])/g, (_, ch: string) => ch.toUpperCase());
  const base: Record<string, unknown> = { ...preset };
  for (const k of Object.keys(given)) if (camel(k) !== k) delete base[camel(k)];
  return { peftType: method.peftType, options: { ...base, ...given } };
}

async function buildExamples(records: DataRecord[], tok: HFTokenizer, c: RunConfig, labelMap?: Record<string, number>) {
  const d = c.data;
  const bad = { onBadRow: d.onBadRow ?? 'error' } as const;
  switch (c.task) {
    case 'causal-lm':
      return { ...(await buildCausalLm(records, tok, { blockSize: d.blockSize ?? d.maxLength ?? 256, textField: d.textField, ...bad })), label2id: undefined };
    case 'instruction':
      return { ...(await buildInstruction(records, tok, { maxLength: d.maxLength ?? 512, promptField: d.promptField, responseField: d.responseField, ...bad })), label2id: undefined };
    case 'sequence-classification':
      return buildSequenceClassification(records, tok, { textField: d.textField, labelField: d.labelField, maxLength: d.maxLength ?? 256, labelMap, ...bad });
    case 'token-classification':
      return buildTokenClassification(records, tok, { tokensField: d.tokensField, tagsField: d.tagsField, maxLength: d.maxLength ?? 256, labelMap, ...bad });
  }
}

export async function runTraining(config: Partial<RunConfig>, o: { resume?: boolean; overwrite?: boolean; log?: (s: string) => void } = {}): Promise<TrainResult> {
  const c = validateRunConfig(config);
  const log = o.log ?? ((s: string) => console.log(s));
  // Before anything costly: never into an earlier run's folder without overwrite; resume needs a checkpoint.
  // Data-parallel: rank 0 alone owns the output folder (the others only read a checkpoint to resume).
  const main = (currentProcessGroup()?.rank ?? 0) === 0;
  if (main) prepareRunOutput(c.output, c.model, o, log);
  const adapterOptions = c.method === 'full' ? null : resolveMethodOptions(c);
  const rank = adapterOptions?.options.r;
  if (typeof rank === 'number') checkRankFits(readConfig(join(c.model, 'config.json')), rank, 'the adapter rank (--r)', { training: true, what: adapterOptions!.peftType });
  const tok = HFTokenizer.fromDir(c.model);
  const trainRead = readRecords(c.data.train, { onBadRow: c.data.onBadRow ?? 'error' });
  const built = await buildExamples(trainRead.records, tok, c);
  reportSkipped(c.data.train, [trainRead, built], log);  // rows dropped while reading and while building, by reason
  let train: Example[] = built.examples;
  let evalSet: Example[] = [];
  const label2id = (built as { label2id?: Record<string, number> }).label2id;
  if (c.data.eval) {
    const r = readRecords(c.data.eval, { onBadRow: c.data.onBadRow ?? 'error' });
    const b = await buildExamples(r.records, tok, c, label2id);
    reportSkipped(c.data.eval, [r, b], log);
    evalSet = b.examples;
  } else if ((c.data.valFraction ?? 0.1) > 0 && Math.floor(train.length * (c.data.valFraction ?? 0.1)) < 1) {
    log(`only ${train.length} examples: no validation split (set data.eval or data.valFraction)`);
  } else if ((c.data.valFraction ?? 0.1) > 0) {
    const s = trainValSplit(train, { valFraction: c.data.valFraction ?? 0.1, seed: c.training?.seed ?? 0 });
    train = s.train;
    evalSet = s.validation;
  }
  const numLabels = label2id ? Object.keys(label2id).length : undefined;
  // LoftQ fits each adapter to its layer's quantization, so it needs the full-precision base: the
  // base is loaded unquantized, LoftQ quantizes the layers it adapts, and the rest is quantized after.
  const ao = (adapterOptions?.options ?? {}) as Record<string, unknown>;
  const loftq = c.quantize !== undefined && (ao.initLoraWeights ?? ao.init_lora_weights) === 'loftq';
  const model = loadModel(c.model, { dtype: c.dtype, device: c.device, task: MODEL_TASK[c.task], numLabels, log, quantize: loftq ? undefined : c.quantize });
  try {
    assertFiniteParameters(model.namedParameters(), c.model, null);  // training from NaN weights only ever gives NaN
  } catch (e) {
    model.dispose();
    throw e;
  }
  log(`dtype ${model.dtype}${c.dtype === 'auto' ? ` (auto: ${autoDtype(c.device ?? 'cpu').reason})` : ''}, device ${c.device ?? 'cpu'}`);
  if (label2id) {
    model.config.label2id = label2id;
    model.config.id2label = Object.fromEntries(Object.entries(label2id).map(([k, v]) => [String(v), k]));
  }
  let peft: PeftModel | null = null;
  if (adapterOptions) {
    const head = MODEL_TASK[c.task] === 'causal-lm' ? null : model.namedModules().map(([p]) => p).filter((p) => /^(score|classifier)$/.test(p));
    const taskType = c.task === 'sequence-classification' ? 'SEQ_CLS' : c.task === 'token-classification' ? 'TOKEN_CLS' : 'CAUSAL_LM';
    const options = { modulesToSave: head && head.length ? head : null, taskType, ...adapterOptions.options, peftType: adapterOptions.peftType };
    // Options given as text (a prompt's init text) become token ids with the model's tokenizer.
    for (const [textKey, idsKey] of Object.entries(methodByName(c.method, true).method.textOptions ?? {})) {
      const text = (options as Record<string, unknown>)[textKey];
      if (typeof text === 'string' && (options as Record<string, unknown>)[idsKey] === undefined) (options as Record<string, unknown>)[idsKey] = await tok.encode(text);
    }
    // Sample batches of the training data for data-driven initialisations (CorDA, LT-SFT, SPT); others ignore them.
    // and the task's loss on them (LT-SFT's dense phase and SPT's sensitivities use the task, labels included).
    const sample = train.slice(0, 64);
    const batches: { inputIds: Tensor; attentionMask: Tensor; labels: Tensor }[] = [];
    for (let i = 0; i < sample.length; i += 8) {
      batches.push(tidy(() => {
        const t = toTensors(collate(sample.slice(i, i + 8), collateOptions(tok)));
        return { inputIds: keep(t.inputIds.to('int64', model.device)), attentionMask: keep(t.attentionMask.to('int64', model.device)), labels: keep(t.labels.to('int64', model.device)) };
      }));
    }
    const lossTask = MODEL_TASK[c.task] === 'causal-lm' ? 'causal-lm' : (c.task as 'sequence-classification' | 'token-classification');
    const taskLoss = (i: number) => {
      const b = batches[i]!;
      return lossParts(lossTask, model.forward({ inputIds: b.inputIds, attentionMask: b.attentionMask }).logits, b.labels).div(b.inputIds.shape[0]!);
    };
    try {
      peft = PeftModel.create(model, options as never, { seed: c.training?.seed ?? 0, data: batches.map((b) => b.inputIds), taskLoss });
    } finally {
      batches.forEach((b) => [b.inputIds, b.attentionMask, b.labels].forEach((t) => t.dispose()));
    }
    if (loftq) log(`LoftQ: ${quantizeModel(model, { format: c.quantize! })} more layers quantized to ${c.quantize}`);
    if (c.compose) composeWith(peft!, c.compose, log);
    log(`method ${c.method} (${adapterOptions.peftType})`);
    peft.printTrainableParameters(log);
  } else model.requiresGrad_(true);
  log(`data: ${train.length} training and ${evalSet.length} evaluation examples (${c.task})`);
  mkdirSync(c.output, { recursive: true });
  // A resumed run keeps the config it started with (and a refused resume changes nothing).
  if (!o.resume && main) writeFileAtomic(join(c.output, 'run_config.json'), new TextEncoder().encode(JSON.stringify(c, null, 2) + '\n'));
  const trainer = new Trainer({
    model, peft, train, eval: evalSet, collate: collateOptions(tok),
    config: { task: MODEL_TASK[c.task] === 'causal-lm' ? 'causal-lm' : (c.task as 'sequence-classification' | 'token-classification'), evalEvery: 50, ...c.training, outputDir: c.output },
    resume: o.resume, log,
  });
  try {
    const r = await trainer.train();
    log(`done: ${r.steps} steps (${r.stopped}), ${r.tokensPerSecond.toFixed(0)} tok/s; outputs in ${c.output} (final/, best/, metrics.jsonl, curve.html)`);
    return r;
  } finally {
    trainer.dispose();
    model.dispose();
  }
}
