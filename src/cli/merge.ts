// adapterkit merge: folds adapters into the base weights and writes a full HF checkpoint.
import { copyFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { saveModel } from '../models/load.js';
import { parseFlags, dtypeFlag, required } from './common.js';
import { loadWithAdapters, ADAPTER_FLAGS } from './model-args.js';
import { prepareOutputDir } from '../io/output-dir.js';

export const MERGE_USAGE = `usage: adapterkit merge --model DIR --adapter DIR --out DIR [--dtype float32|bfloat16|float16] [--force]
  --out must be a new or empty folder (--force: write into a non-empty one); never the model or adapter folder
${ADAPTER_FLAGS}`;

export async function mergeCommand(args: string[]): Promise<number> {
  const f = parseFlags(args, {
    model: { type: 'string' }, adapter: { type: 'string' }, 'adapter-weights': { type: 'string' }, combination: { type: 'string' },
    density: { type: 'string' }, out: { type: 'string' }, dtype: { type: 'string' }, force: { type: 'boolean' }, 'allow-nonfinite': { type: 'boolean' },
  }, MERGE_USAGE);
  const dir = required(f.str('model'), 'model', MERGE_USAGE);
  const out = required(f.str('out'), 'out', MERGE_USAGE);
  const adapters = required(f.str('adapter'), 'adapter', MERGE_USAGE);
  const dtype = dtypeFlag(f.str('dtype'));
  // Before loading anything: the output is never an input, and a non-empty folder needs --force.
  prepareOutputDir(out, {
    flag: '--out', force: f.bool('force'), forceFlag: '--force',
    inputs: [{ flag: '--model', path: dir }, ...adapters.split(',').filter((a) => a.trim()).map((a) => ({ flag: '--adapter', path: a.trim() }))],
  });
  const { model, peft } = loadWithAdapters(dir, {
    adapter: f.str('adapter'), weights: f.str('adapter-weights'), combination: f.str('combination'), density: f.str('density'), dtype: 'float32',
  }, { allowNonFinite: f.bool('allow-nonfinite') });
  try {
    const merged = peft!.mergeAndUnload();
    saveModel(merged, out, { dtype: dtype === 'auto' ? undefined : dtype });  // auto: as merged (float32)
    for (const file of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'generation_config.json']) {
      if (existsSync(join(dir, file))) copyFileSync(join(dir, file), join(out, file));
    }
    console.log(`merged ${f.str('adapter')} into ${dir}; wrote ${out}`);
    return 0;
  } finally {
    model.dispose();
  }
}
