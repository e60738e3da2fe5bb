// `adapterkit <command>`: thin; parses flags and calls the library. Commands arrive with the
// models, adapters, training and serving work. Each command module is loaded on demand.
import { VERSION } from '../version.js';
import { UsageError } from './common.js';

interface Command {
  summary: string;
  run(args: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  demo: { summary: 'LoRA-tune the embedded model on review sentiment: accuracy before and after', run: async (a) => (await import('./demo.js')).demoCommand(a) },
  generate: { summary: 'generate text from a checkpoint (--model DIR --prompt TEXT)', run: async (a) => (await import('./generate.js')).generateCommand(a) },
  score: { summary: 'per-token log-probabilities (--model DIR --text TEXT | --ids 1,2,3)', run: async (a) => (await import('./score.js')).scoreCommand(a) },
  train: { summary: 'fine-tune with an adapter method (LoRA, IA3, bottleneck, prefix, …) or fully, from a JSON/YAML config and flags', run: async (a) => (await import('./train.js')).trainCommand(a) },
  launch: { summary: 'run a command (train) on several processes, data-parallel (--nproc N [--nnodes --node-rank --master] -- train …)', run: async (a) => (await import('./launch.js')).launchCommand(a) },
  serve: { summary: 'serve the base model and many adapters over an OpenAI-compatible HTTP API (--model --adapters --port)', run: async (a) => (await import('./serve.js')).serveCommand(a) },
  route: { summary: 'one OpenAI-compatible front over several serve replicas, adapters routed by consistent hashing (--replicas URL,URL)', run: async (a) => (await import('./route.js')).routeCommand(a) },
  merge: { summary: 'fold adapter(s) into the base and write a full checkpoint (--model --adapter --out)', run: async (a) => (await import('./merge.js')).mergeCommand(a) },
  inspect: { summary: 'list the tensors of a safetensors file or checkpoint folder', run: async (a) => (await import('./inspect.js')).inspectCommand(a) },
  'init-model': { summary: 'write a random HF-format checkpoint (--arch TYPE --out DIR)', run: async (a) => (await import('./init-model.js')).initModelCommand(a) },
  info: { summary: 'the engine (CPU, BLAS, threads, CUDA, auto dtype); with --model DIR [--quantize F], weight memory per dtype', run: async (a) => (await import('./info.js')).infoCommand(a) },
};

function help(): string {
  const lines = [
    `adapterkit ${VERSION}: parameter-efficient fine-tuning for TypeScript, on libtorch`,
    '',
    'usage: adapterkit <command> [options]',
    '',
    'commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(12)} ${c.summary}`),
    '',
    'options:',
    '  -h, --help     show this help',
    '  -v, --version  print the version',
  ];
  return lines.join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (cmd === undefined || cmd === '-h' || cmd === '--help' || cmd === 'help') {
    console.log(help());
    return 0;
  }
  if (cmd === '-v' || cmd === '--version') {
    console.log(VERSION);
    return 0;
  }
  const c = COMMANDS[cmd];
  if (!c) {
    console.error(`adapterkit: unknown command "${cmd}"\n\n${help()}`);
    return 2;
  }
  // launch's own flags end at "--"; what follows is the launched command's.
  const own = cmd === 'launch' && rest.includes('--') ? rest.slice(0, rest.indexOf('--')) : rest;
  if (own.includes('--help') || own.includes('-h')) {
    const usage = await usageOf(cmd);
    console.log(usage ?? c.summary);
    return 0;
  }
  try {
    // The CLI owns its process: threads to the physical cores, freed buffers kept for reuse.
    // Under a launcher, OMP_NUM_THREADS is this process's share of the cores (as torchrun sets it).
    const omp = Number(process.env.OMP_NUM_THREADS);
    if (cmd !== 'launch') (await import('../tensor/index.js')).configureRuntime(Number.isInteger(omp) && omp > 0 ? { threads: omp } : {});
    return await c.run(rest);
  } catch (e) {
    // Every failure is one clear line (or a usage block) and a non-zero exit, never a stack dump.
    console.error(`adapterkit ${cmd}: ${e instanceof Error ? e.message : String(e)}`);
    return e instanceof UsageError ? 2 : 1;
  }
}

async function usageOf(cmd: string): Promise<string | null> {
  switch (cmd) {
    case 'generate': return (await import('./generate.js')).GENERATE_USAGE;
    case 'score': return (await import('./score.js')).SCORE_USAGE;
    case 'inspect': return (await import('./inspect.js')).INSPECT_USAGE;
    case 'init-model': return (await import('./init-model.js')).INIT_USAGE;
    case 'merge': return (await import('./merge.js')).MERGE_USAGE;
    case 'train': return (await import('./train.js')).TRAIN_USAGE();
    case 'serve': return (await import('./serve.js')).SERVE_USAGE;
    case 'route': return (await import('./route.js')).ROUTE_USAGE;
    case 'launch': return (await import('./launch.js')).LAUNCH_USAGE;
    case 'demo': return (await import('./demo.js')).DEMO_USAGE;
    case 'info': return (await import('./info.js')).INFO_USAGE;
    default: return null;
  }
}
