// `adapterkit <command>`: thin; parses flags and calls the library. Commands arrive with the
// models, adapters, training and serving work; `--help` and `--version` are here from the start.
import { VERSION } from '../version.js';

interface Command {
  summary: string;
  run(args: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  info: {
    summary: 'print the engine: libtorch version, threads, CUDA',
    async run() {
      const ak = await import('../tensor/index.js');
      console.log(`adapterkit ${VERSION}`);
      console.log(`libtorch ${ak.torchVersion()}`);
      console.log(`threads ${ak.getNumThreads()}`);
      console.log(`cuda ${ak.cuda.isAvailable() ? `yes (${ak.cuda.deviceCount()} devices)` : 'no'}`);
      return 0;
    },
  },
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
  return c.run(rest);
}
