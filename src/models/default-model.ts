// Where the embedded default model lives: assets/default-model in the package (built by
// scripts/build-default-model.ts and committed).
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function defaultModelDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    const p = join(dir, 'assets', 'default-model');
    if (existsSync(join(p, 'config.json'))) return p;
    dir = dirname(dir);
  }
  throw new Error('the embedded default model (assets/default-model) is missing from this install; rebuild it with `npm run build:default-model`');
}
