// adapterkit train: a training run from a JSON or YAML config file, with flags on top.
import { NotRegularFileError, readRegularFile } from '../io/files.js';
import { parse as parseYaml } from 'yaml';
import { runTraining, type RunConfig } from '../train/run.js';
import { checkRunKeys } from '../train/run-keys.js';
import { parseFlags, numberFlag, UsageError } from './common.js';
import { adapterMethodList, methodByName } from '../adapters/index.js';
import { initProcessGroup, destroyProcessGroup, launchEnv } from '../distributed/process-group.js';

/** Every method name --method takes, grouped by method, for the usage text. */
function methodLines(): string {
  return adapterMethodList().map((m) => `    ${m.names.join(' | ')}\n        ${m.summary}`).join('\n');
}

export const TRAIN_USAGE = () => `usage: adapterkit train [--config FILE.json|yaml] [options]
  --model DIR             HF checkpoint folder (config.json, *.safetensors, tokenizer.json)
  --data FILE             training data (.jsonl, .csv, .txt)   --eval-data FILE
  --task T                causal-lm (default), instruction, sequence-classification, token-classification
  --method NAME           an adapter method (below) or full (default lora)   --output DIR (required)
  --targets a,b|all-linear  modules to adapt (methods that wrap layers)
  --r N --alpha N --dropout P   rank, scaling and dropout where the method has them (LoRA, Hydra, …)
  --dora --rslora         LoRA variants     --reduction N  bottleneck reduction factor   --virtual-tokens N  prompt/prefix length
  --adapter-options JSON  any option of the method, e.g. '{"nonLinearity":"gelu"}' (PEFT's snake_case names work too)
  --lr X --epochs N --max-steps N --batch-size N --grad-accum N --schedule constant|linear|cosine
  --warmup-steps N --eval-every N --save-every N --early-stopping N --seed N --dtype auto|float32|bfloat16 --device cpu|cuda
  --quantize nf4|fp4|int8|int4 (QLoRA: the frozen base quantized, the adapter trains on top; with init_lora_weights "loftq", LoftQ)
  --max-length N --skip-bad-rows --resume --gradient-checkpointing
  --overwrite             replace an earlier run in --output (otherwise a non-empty --output is refused)
  --skip-nonfinite        skip steps with a NaN/infinite loss or gradient (default: stop with an error)
  --backend gloo|nccl --dist-timeout SECONDS   data-parallel under adapterkit launch (env RANK, WORLD_SIZE,
                          MASTER_ADDR, MASTER_PORT): --batch-size is per process; a collective waits at most
                          --dist-timeout (default 1800) for its peers
  exit status: 0 done, 1 error, 2 usage, 130 stopped by Ctrl-C (SIGINT), 143 by SIGTERM (both save a checkpoint first)
config file fields: model, task, method, dtype, quantize, output, data{train,eval,valFraction,maxLength,blockSize,...},
  adapter{the method's options}, lora{r,loraAlpha,...: LoRA's options}, training{lr,epochs,maxSteps,batchSize,gradAccum,...}
adapter methods:
${methodLines()}`;

function readConfigFile(path: string): Partial<RunConfig> {
  let text: string;
  try {
    text = readRegularFile(path, '--config', 'utf8');
  } catch (e) {
    throw new UsageError(e instanceof NotRegularFileError ? e.message : `cannot read --config ${path}: ${(e as Error).message}`);
  }
  try {
    const v = /\.ya?ml$/i.test(path) ? parseYaml(text) : JSON.parse(text);
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('the top level must be an object');
    checkRunKeys(v);  // unknown or misspelt keys, before flags are merged in
    return v as Partial<RunConfig>;
  } catch (e) {
    throw new UsageError(`--config ${path}: ${(e as Error).message}`);
  }
}

export async function trainCommand(args: string[]): Promise<number> {
  const s = { type: 'string' } as const;
  const b = { type: 'boolean' } as const;
  const f = parseFlags(args, {
    config: s, model: s, data: s, 'eval-data': s, task: s, method: s, output: s, r: s, alpha: s, dropout: s, targets: s, dora: b, rslora: b,
    reduction: s, 'virtual-tokens': s, 'adapter-options': s,
    lr: s, epochs: s, 'max-steps': s, 'batch-size': s, 'grad-accum': s, schedule: s, 'warmup-steps': s, 'eval-every': s, 'save-every': s,
    'early-stopping': s, seed: s, dtype: s, quantize: s, device: s, profile: b, 'max-length': s, 'skip-bad-rows': b, resume: b, overwrite: b, 'skip-nonfinite': b, 'no-progress': b, 'gradient-checkpointing': b,
    backend: s, 'dist-timeout': s,
  }, TRAIN_USAGE());
  const c: Partial<RunConfig> = f.str('config') ? readConfigFile(f.str('config')!) : {};
  c.data = { ...(c.data ?? { train: '' }) };
  const adapter: Record<string, unknown> = { ...(c.adapter ?? {}) };
  c.training = { ...(c.training ?? {}) };
  const str = (k: string) => f.str(k);
  const num = (k: string, int = false) => numberFlag(f.str(k), k, { int, min: 0 });
  if (str('model')) c.model = str('model');
  if (str('data')) c.data.train = str('data')!;
  if (str('eval-data')) c.data.eval = str('eval-data');
  if (str('task')) c.task = str('task') as RunConfig['task'];
  if (str('method')) c.method = str('method') as RunConfig['method'];
  if (str('output')) c.output = str('output');
  if (str('dtype')) c.dtype = str('dtype') as RunConfig['dtype'];
  if (str('device')) c.device = str('device') as RunConfig['device'];
  if (str('quantize')) c.quantize = str('quantize') as RunConfig['quantize'];
  if (f.bool('profile')) c.training.profile = true;
  if (str('max-length')) c.data.maxLength = num('max-length', true);
  if (f.bool('skip-bad-rows')) c.data.onBadRow = 'skip';
  // Method flags: each method says which it takes (flag -> its config key); others are refused by name.
  const methodName = c.method ?? 'lora';
  const m = methodName === 'full' ? null : methodByName(methodName, false);
  const methodFlag = (flag: string, value: unknown) => {
    const key = m?.method.cliFlags?.[flag];
    if (!key) throw new UsageError(`--${flag} does not apply to method "${methodName}"${m ? ` (its flags: ${Object.keys(m.method.cliFlags ?? {}).map((k) => `--${k}`).join(', ') || 'none'}; others via --adapter-options)` : ''}`);
    adapter[key] = value;
  };
  if (str('adapter-options')) {
    let v: unknown;
    try {
      v = JSON.parse(str('adapter-options')!);
    } catch (e) {
      throw new UsageError(`--adapter-options must be a JSON object: ${(e as Error).message}`);
    }
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new UsageError('--adapter-options must be a JSON object, e.g. \'{"r": 8}\'');
    Object.assign(adapter, v);
  }
  if (str('r')) methodFlag('r', num('r', true));
  if (str('alpha')) methodFlag('alpha', num('alpha'));
  if (str('dropout')) methodFlag('dropout', num('dropout'));
  if (str('reduction')) methodFlag('reduction', num('reduction'));
  if (str('virtual-tokens')) methodFlag('virtual-tokens', num('virtual-tokens', true));
  if (str('targets')) adapter.targetModules = str('targets') === 'all-linear' ? 'all-linear' : str('targets')!.split(',');
  if (f.bool('dora')) methodFlag('dora', true);
  if (f.bool('rslora')) methodFlag('rslora', true);
  if (Object.keys(adapter).length) c.adapter = adapter;
  const t = c.training;
  if (str('lr')) t.lr = num('lr');
  if (str('epochs')) t.epochs = num('epochs');
  if (str('max-steps')) t.maxSteps = num('max-steps', true);
  if (str('batch-size')) t.batchSize = num('batch-size', true);
  if (str('grad-accum')) t.gradAccum = num('grad-accum', true);
  if (str('schedule')) t.schedule = str('schedule') as 'linear';
  if (str('warmup-steps')) t.warmupSteps = num('warmup-steps', true);
  if (str('eval-every')) t.evalEvery = num('eval-every', true);
  if (str('save-every')) t.saveEvery = num('save-every', true);
  if (str('early-stopping')) t.earlyStoppingPatience = num('early-stopping', true);
  if (str('seed')) t.seed = num('seed', true);
  if (f.bool('no-progress')) t.progress = false;
  if (f.bool('gradient-checkpointing')) t.gradientCheckpointing = true;
  if (f.bool('skip-nonfinite')) t.onNonFiniteLoss = 'skip';
  // Under adapterkit launch (or torchrun): join the group first; only rank 0 prints.
  const env = launchEnv();
  const backend = str('backend') ?? 'gloo';
  if (backend !== 'gloo' && backend !== 'nccl') throw new UsageError(`--backend must be gloo or nccl, got "${backend}"`);
  const timeoutMs = Math.round(1000 * (numberFlag(str('dist-timeout'), 'dist-timeout', { above: 0 }) ?? 1800));
  const pg = env ? initProcessGroup({ rank: env.rank, worldSize: env.worldSize, masterAddr: env.masterAddr, masterPort: env.masterPort, backend, timeoutMs,
    ...(process.env.GLOO_SOCKET_IFNAME ? { interface: process.env.GLOO_SOCKET_IFNAME } : {}),  // torchrun's name, for hosts with several networks
  }) : null;
  const log = pg && pg.rank !== 0 ? () => {} : (s: string) => console.log(s);
  // One GPU per process on a machine: "cuda" means this process's own, cuda:LOCAL_RANK (as torchrun users do).
  if (env && c.device === 'cuda') c.device = `cuda:${env.localRank}`;
  try {
    const r = await runTraining(c, { resume: f.bool('resume'), overwrite: f.bool('overwrite'), log });
    // Stopped by a signal (after saving): the shell's 128 + signal number, so scripts can tell.
    if (r.stopped === 'signal') return r.signal === 'SIGTERM' ? 143 : 130;
  } catch (e) {
    if (/training config: .* is required/.test((e as Error).message)) throw new UsageError(`${(e as Error).message}\n\n${TRAIN_USAGE()}`);
    throw e;
  } finally {
    if (pg) destroyProcessGroup();
  }
  return 0;
}
