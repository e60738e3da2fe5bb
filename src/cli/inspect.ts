// adapterkit inspect: the tensors of a safetensors file or checkpoint folder (name, dtype, shape),
// the parameter count, and a config summary. A bad file gives its specific error and exit code 1.
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { CheckpointReader } from '../io/checkpoint.js';
import { readConfig } from '../models/config.js';
import { parseFlags, UsageError } from './common.js';

export const INSPECT_USAGE = 'usage: adapterkit inspect PATH   (a .safetensors file or a checkpoint folder) [--json]';

const SUMMARY_KEYS = [
  'model_type', 'architectures', 'vocab_size', 'hidden_size', 'n_embd', 'num_hidden_layers', 'n_layer', 'num_attention_heads',
  'n_head', 'num_key_value_heads', 'intermediate_size', 'max_position_embeddings', 'n_positions', 'rope_theta', 'rope_scaling',
  'tie_word_embeddings', 'torch_dtype',
];

export async function inspectCommand(args: string[]): Promise<number> {
  const f = parseFlags(args, { json: { type: 'boolean' } }, INSPECT_USAGE);
  const path = f.positionals[0];
  if (!path) throw new UsageError(INSPECT_USAGE);
  if (!existsSync(path)) throw new UsageError(`${path} does not exist`);
  const reader = CheckpointReader.open(path);
  try {
    const rows = reader.names().sort().map((n) => reader.info(n));
    const params = rows.reduce((s, r) => s + r.shape.reduce((a, b) => a * b, 1), 0);
    const bytes = rows.reduce((s, r) => s + r.byteLength, 0);
    let config: Record<string, unknown> | null = null;
    if (statSync(path).isDirectory() && existsSync(join(path, 'config.json'))) config = readConfig(join(path, 'config.json'));
    if (f.bool('json')) {
      console.log(JSON.stringify({ tensors: rows.map((r) => ({ name: r.name, dtype: r.dtype, shape: r.shape })), parameters: params, bytes, config }));
      return 0;
    }
    const w = Math.min(64, Math.max(...rows.map((r) => r.name.length), 4));
    for (const r of rows) console.log(`${r.name.padEnd(w)}  ${r.dtype.padEnd(8)}  [${r.shape.join(', ')}]`);
    console.log(`\n${rows.length} tensors, ${params.toLocaleString('en-US')} parameters, ${(bytes / 2 ** 20).toFixed(2)} MiB in ${reader.files.length} file(s)`);
    if (config) {
      console.log('\nconfig:');
      for (const k of SUMMARY_KEYS) if (config[k] !== undefined) console.log(`  ${k}: ${JSON.stringify(config[k])}`);
    }
    return 0;
  } finally {
    reader.close();
  }
}
