#!/usr/bin/env node
// adapterkit command-line entry: the CLI lives in src/cli (compiled to dist/src/cli).
import('../dist/src/cli/main.js')
  .then((m) => m.main(process.argv.slice(2)))
  .then((code) => { process.exitCode = code; })
  .catch((e) => {
    console.error(`adapterkit: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  });
