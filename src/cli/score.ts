// adapterkit score: per-token log-probabilities of a text (or of token ids) under a causal LM.
import { loadWithAdapters, ADAPTER_FLAGS } from './model-args.js';
import { score } from '../models/generate.js';
import { HFTokenizer } from '../tokenizer/tokenizer.js';
import { parseFlags, dtypeFlag, required, UsageError } from './common.js';

export const SCORE_USAGE = `usage: adapterkit score --model DIR (--text TEXT | --ids 1,2,3) [--json] [--dtype D]
  --json   the last line is {"ids":[...],"logprobs":[...],"nll":x}, logprobs[i] = log p(ids[i+1] | ids[0..i])
  --ids    needs no tokenizer file
${ADAPTER_FLAGS}`;

export async function scoreCommand(args: string[]): Promise<number> {
  const f = parseFlags(args, {
    model: { type: 'string' }, text: { type: 'string' }, ids: { type: 'string' }, json: { type: 'boolean' }, dtype: { type: 'string' },
    adapter: { type: 'string' }, 'adapter-weights': { type: 'string' }, combination: { type: 'string' }, density: { type: 'string' }, setup: { type: 'string' },
    'allow-nonfinite': { type: 'boolean' },
  }, SCORE_USAGE);
  const dir = required(f.str('model'), 'model', SCORE_USAGE);
  const text = f.str('text');
  const idsFlag = f.str('ids');
  if ((text === undefined) === (idsFlag === undefined)) throw new UsageError(`give exactly one of --text or --ids\n\n${SCORE_USAGE}`);
  let ids: number[];
  let tok: HFTokenizer | null = null;
  if (idsFlag !== undefined) {
    // Strict: Number() would read "" as 0 ("1,,2", a trailing comma) and accept "0x10" or "1e2".
    ids = idsFlag.split(',').map((s, i) => {
      if (!/^\d+$/.test(s.trim()) || !Number.isSafeInteger(Number(s))) {
        throw new UsageError(`--ids must be comma-separated token ids (decimal integers >= 0), got "${idsFlag}" (item ${i + 1} is ${s.trim() === '' ? 'empty' : `"${s}"`})`);
      }
      return Number(s);
    });
  } else {
    tok = HFTokenizer.fromDir(dir);
    ids = await tok.encode(text!);
  }
  if (ids.length < 2) throw new UsageError('scoring needs at least two tokens');
  const { model } = loadWithAdapters(dir, {
    adapter: f.str('adapter'), weights: f.str('adapter-weights'), combination: f.str('combination'), density: f.str('density'), setup: f.str('setup'),
    dtype: dtypeFlag(f.str('dtype')), task: 'causal-lm',
  }, { allowNonFinite: f.bool('allow-nonfinite') });
  try {
    const vocab = Number(model.config.vocab_size);
    const bad = ids.find((i) => i >= vocab);
    if (bad !== undefined) throw new UsageError(`token id ${bad} is outside the vocabulary (vocab_size ${vocab})`);
    const r = score(model, ids);
    if (!f.bool('json')) {
      for (let i = 0; i < r.logprobs.length; i++) {
        const t = tok ? JSON.stringify(tok.idToToken(ids[i + 1]!)) : String(ids[i + 1]);
        console.log(`${String(i + 1).padStart(5)}  ${t.padEnd(20)} ${r.logprobs[i]!.toFixed(4)}`);
      }
      console.log(`nll ${r.nll.toFixed(4)}  perplexity ${Math.exp(r.nll).toFixed(3)}  tokens ${ids.length}`);
    }
    if (f.bool('json')) console.log(JSON.stringify(r));
    return 0;
  } finally {
    model.dispose();
  }
}
