// The keys a training run config may have (top level, `data:` and `training:`), and the check that
// refuses any other with a "did you mean". A misspelt key ("learningRate") would otherwise keep the
// default silently and train something else than asked. The `adapter:` (and `lora:`) section is
// checked by the adapter method's own config.
import { rejectUnknownKeys } from '../io/config-keys.js';
import { DEFAULT_TRAINER } from './trainer.js';
import type { RunConfig } from './run.js';

export const RUN_KEYS = ['model', 'task', 'output', 'method', 'dtype', 'quantize', 'device', 'data', 'adapter', 'compose', 'lora', 'training'] as const;

export const DATA_KEYS = [
  'train', 'eval', 'valFraction', 'maxLength', 'blockSize', 'onBadRow', 'textField', 'labelField', 'promptField', 'responseField',
  'tokensField', 'tagsField',
] as const;

// Compile-time: the lists name exactly RunConfig's fields (a field added there must be added here).
type Exact<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const runKeysExact: Exact<(typeof RUN_KEYS)[number], keyof RunConfig> = true;
const dataKeysExact: Exact<(typeof DATA_KEYS)[number], keyof RunConfig['data']> = true;
void runKeysExact;
void dataKeysExact;

/** The trainer's own keys, less those the run sets (task from the run's task, outputDir from output). */
export const TRAINING_KEYS: readonly string[] = Object.keys(DEFAULT_TRAINER).filter((k) => k !== 'task' && k !== 'outputDir');

// Names from other tools (HF TrainingArguments, PEFT) that are not close in spelling to ours.
const RUN_ALIASES: Record<string, string> = {
  rank: 'lora.r', r: 'lora.r', lr: 'training.lr', learningrate: 'training.lr', epochs: 'training.epochs', outputdir: 'output',
  train: 'data.train', modelnameorpath: 'model',
};
const TRAINING_ALIASES: Record<string, string> = {
  learningrate: 'lr', numtrainepochs: 'epochs', gradientaccumulationsteps: 'gradAccum', perdevicetrainbatchsize: 'batchSize',
  lrschedulertype: 'schedule', maxgradnorm: 'maxGradNorm', warmup: 'warmupSteps', rank: 'lora.r', r: 'lora.r', outputdir: 'output (top level)',
  evalsteps: 'evalEvery', savesteps: 'saveEvery', loggingsteps: 'logEvery', earlystopping: 'earlyStoppingPatience',
};
const DATA_ALIASES: Record<string, string> = { validation: 'eval', trainfile: 'train', evalfile: 'eval', maxseqlength: 'maxLength' };

function section(c: Record<string, unknown>, key: string): Record<string, unknown> | null {
  const v = c[key];
  if (v === undefined || v === null) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw new Error(`training config: "${key}" must be a mapping of keys to values, got ${Array.isArray(v) ? 'a list' : JSON.stringify(v)}`);
  return v as Record<string, unknown>;
}

/** Throws on a key the run config does not know, at the top level, in `data:` or in `training:`. */
export function checkRunKeys(c: object): void {
  const raw = c as Record<string, unknown>;
  rejectUnknownKeys(raw, RUN_KEYS, 'training config', RUN_ALIASES);
  const data = section(raw, 'data');
  if (data) rejectUnknownKeys(data, DATA_KEYS, 'training config "data"', DATA_ALIASES);
  const training = section(raw, 'training');
  if (training) rejectUnknownKeys(training, TRAINING_KEYS, 'training config "training"', TRAINING_ALIASES);
  section(raw, 'lora');
  section(raw, 'adapter');
}
