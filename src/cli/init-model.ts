// adapterkit init-model: a random HF-format checkpoint with a byte-level tokenizer.
import { initModel } from '../models/init-model.js';
import { parseFlags, numberFlag, required } from './common.js';

export const INIT_USAGE = `usage: adapterkit init-model --arch TYPE --out DIR [--layers N --hidden N --heads N --vocab N --seed N --max-positions N] [--force]
  --out must be a new or empty folder (--force: overwrite the checkpoint in it)
  TYPE: gpt2, llama, mistral, qwen2, bert, roberta, xlm-roberta`;

export async function initModelCommand(args: string[]): Promise<number> {
  const f = parseFlags(args, {
    arch: { type: 'string' }, out: { type: 'string' }, layers: { type: 'string' }, hidden: { type: 'string' }, heads: { type: 'string' },
    vocab: { type: 'string' }, seed: { type: 'string' }, 'max-positions': { type: 'string' }, force: { type: 'boolean' },
  }, INIT_USAGE);
  const int = (n: string, min = 1) => numberFlag(f.str(n), n, { int: true, min });
  const config = initModel({
    arch: required(f.str('arch'), 'arch', INIT_USAGE),
    out: required(f.str('out'), 'out', INIT_USAGE),
    layers: int('layers'), hidden: int('hidden'), heads: int('heads'), vocab: int('vocab'), seed: int('seed', 0), maxPositions: int('max-positions'), force: f.bool('force'),
  });
  console.log(`wrote a random ${String(config.model_type)} checkpoint to ${f.str('out')} (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)`);
  return 0;
}
