// adapterkit generate: text generation from a checkpoint folder, optionally streamed.
import { loadWithAdapters, ADAPTER_FLAGS } from './model-args.js';
import { generateStream, contextLength, type GenerateOptions } from '../models/generate.js';
import { readGenerationConfig, generationDefaults } from '../models/generation-config.js';
import { HFTokenizer } from '../tokenizer/tokenizer.js';
import { tensor, tidy } from '../tensor/index.js';
import { parseFlags, numberFlag, dtypeFlag, required, UsageError } from './common.js';

export const GENERATE_USAGE = `usage: adapterkit generate --model DIR --prompt TEXT [options]
  --max-new-tokens N     (default: generation_config.json's max_new_tokens / max_length, else 32)
  --sample / --greedy    sample, or decode greedily (default: generation_config.json's do_sample, else greedy)
  --temperature T  --top-k K  --top-p P  --repetition-penalty R  --seed N
  --stop TEXT            stop when the output contains TEXT (repeatable)
  --stop-id N            stop at this token id (repeatable; EOS, and every eos_token_id of generation_config.json, always stop)
  --chat                 wrap the prompt in the tokenizer's chat template as a user message
  --dtype auto|float32|bfloat16|float16 (auto: bfloat16 only where the CPU/GPU computes it natively)
  --stream               print tokens as they come
${ADAPTER_FLAGS}`;

export async function generateCommand(args: string[]): Promise<number> {
  const f = parseFlags(args, {
    model: { type: 'string' }, prompt: { type: 'string' }, 'max-new-tokens': { type: 'string' }, sample: { type: 'boolean' }, greedy: { type: 'boolean' },
    temperature: { type: 'string' }, 'top-k': { type: 'string' }, 'top-p': { type: 'string' }, 'repetition-penalty': { type: 'string' },
    seed: { type: 'string' }, stop: { type: 'string', multiple: true }, 'stop-id': { type: 'string', multiple: true },
    chat: { type: 'boolean' }, dtype: { type: 'string' }, stream: { type: 'boolean' },
    adapter: { type: 'string' }, 'adapter-weights': { type: 'string' }, combination: { type: 'string' }, density: { type: 'string' }, setup: { type: 'string' },
    'allow-nonfinite': { type: 'boolean' },
  }, GENERATE_USAGE);
  const dir = required(f.str('model'), 'model', GENERATE_USAGE);
  const prompt = required(f.str('prompt'), 'prompt', GENERATE_USAGE);
  const tok = HFTokenizer.fromDir(dir);
  const { model } = loadWithAdapters(dir, {
    adapter: f.str('adapter'), weights: f.str('adapter-weights'), combination: f.str('combination'), density: f.str('density'), setup: f.str('setup'),
    dtype: dtypeFlag(f.str('dtype')), task: 'causal-lm',
  }, { allowNonFinite: f.bool('allow-nonfinite') });
  try {
    const text = f.bool('chat') ? tok.applyChatTemplate([{ role: 'user', content: prompt }]) : prompt;
    const ids = await tok.encode(text);
    if (ids.length === 0) throw new UsageError('the prompt encodes to no tokens');
    const stopStrings = f.list('stop');
    if (stopStrings.some((s) => s === '')) throw new UsageError('--stop must not be empty: an empty stop string matches before the first token');
    const vocab = Number(model.config.vocab_size);
    const stopIds = f.list('stop-id').map((s) => numberFlag(s, 'stop-id', { int: true, min: 0, max: vocab - 1 })!);
    if (tok.eosTokenId !== null) stopIds.push(tok.eosTokenId);
    if (f.bool('sample') && f.bool('greedy')) throw new UsageError('--sample and --greedy exclude each other');
    // Flags win; what they leave open comes from generation_config.json (HF's defaults for this checkpoint).
    const o: GenerateOptions = generationDefaults(readGenerationConfig(dir), {
      maxNewTokens: numberFlag(f.str('max-new-tokens'), 'max-new-tokens', { int: true, min: 1 }),
      doSample: f.bool('sample') ? true : f.bool('greedy') ? false : undefined,
      // HF's ranges. Below 1e-4 a temperature overflows float32 logits to infinity (NaN probabilities).
      temperature: numberFlag(f.str('temperature'), 'temperature', { min: 1e-4 }),
      topK: numberFlag(f.str('top-k'), 'top-k', { int: true, min: 0 }),
      topP: numberFlag(f.str('top-p'), 'top-p', { above: 0, max: 1 }),
      repetitionPenalty: numberFlag(f.str('repetition-penalty'), 'repetition-penalty', { above: 0 }),
      seed: numberFlag(f.str('seed'), 'seed', { int: true, min: 0 }),
      stopIds,
      stopWhen: stopStrings.length ? async (_r, newIds) => { const s = await tok.decode(newIds); return stopStrings.some((x) => s.includes(x)); } : undefined,
    }, ids.length);
    o.maxNewTokens ??= 32;
    const input = tidy(() => tensor([ids], { dtype: 'int64' }));
    const produced: number[] = [];
    let shown = '';
    for await (const step of generateStream(model, input, null, o)) {
      const t = step.tokens[0];
      if (t === null || t === undefined) continue;
      produced.push(t);
      if (f.bool('stream')) {
        const s = cut(await tok.decode(produced), stopStrings);
        // Print only the settled prefix: a partial UTF-8 sequence decodes to U+FFFD until complete.
        if (!s.endsWith('\uFFFD') && s.startsWith(shown)) {
          process.stdout.write(s.slice(shown.length));
          shown = s;
        }
      }
    }
    const final = cut(await tok.decode(produced), stopStrings);
    const ctx = contextLength(model);
    if (ctx !== null && ids.length + produced.length >= ctx && produced.length < o.maxNewTokens! && !(o.stopIds ?? []).includes(produced[produced.length - 1]!)) {
      console.error(`note: stopped at the model's context limit (${ctx} positions) after ${produced.length} new tokens`);
    }
    if (f.bool('stream')) process.stdout.write(final.slice(shown.length) + '\n');
    else console.log(final);
    input.dispose();
    return 0;
  } finally {
    model.dispose();
  }
}

/** The text up to (not including) the first stop string. */
function cut(s: string, stops: readonly string[]): string {
  let end = s.length;
  for (const x of stops) {
    const i = s.indexOf(x);
    if (i >= 0 && i < end) end = i;
  }
  return s.slice(0, end);
}
