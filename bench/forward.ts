// bench:forward: forward and generation throughput on a GPT-2-small-shaped random model (12 layers,
// 768 hidden, 12 heads, vocab 50257; forward at batch 4 x seq 256), float32 and bfloat16, next to
// the eager-PyTorch anchor's forward figure from the same run.
import { noGrad, tidy, randint, tensor } from '../src/index.js';
import { createModel } from '../src/models/load.js';
import { generate } from '../src/models/generate.js';
import { runAnchor } from './anchor.js';
import { benchHeader, nativeBf16 } from './header.js';

const B = 4;
const T = 256;
const CONFIG = {
  model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 12,
  n_head: 12, activation_function: 'gelu_new', tie_word_embeddings: true,
};

function seconds(f: () => void): number {
  const t0 = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function main(): Promise<void> {
  const info = benchHeader('bench:forward', `GPT-2 small shape, batch ${B} x seq ${T}`);
  const results: Record<string, { fwd: number; gen: number }> = {};
  // bfloat16 only where the CPU has it natively: emulated, one forward takes minutes.
  for (const dtype of nativeBf16(info) ? (['float32', 'bfloat16'] as const) : (['float32'] as const)) {
    const model = createModel(CONFIG, { dtype, seed: 0 });
    const ids = randint(0, 50257, [B, T], { seed: 1 });
    const run = () => noGrad(() => tidy(() => { model.forward({ inputIds: ids }).logits.sum().item(); }));
    run();  // warm-up
    const reps = 3;
    let best = Infinity;
    for (let i = 0; i < reps; i++) best = Math.min(best, seconds(run));
    const fwd = (B * T) / best;
    // Generation: one row, a 32-token prompt, 64 new tokens, greedy, with the KV cache.
    const prompt = tidy(() => tensor([Array.from({ length: 32 }, (_, i) => (i * 97) % 50257)], { dtype: 'int64' }));
    await generate(model, prompt, null, { maxNewTokens: 4 });  // warm-up
    const t0 = process.hrtime.bigint();
    const out = await generate(model, prompt, null, { maxNewTokens: 64 });
    const gen = out[0]!.length / (Number(process.hrtime.bigint() - t0) / 1e9);
    results[dtype] = { fwd, gen };
    console.log(`ours  ${dtype.padEnd(9)} forward ${fwd.toFixed(1).padStart(8)} tok/s   generation ${gen.toFixed(1).padStart(7)} tok/s (batch 1, KV cache)`);
    ids.dispose();
    prompt.dispose();
    model.dispose();
  }
  const f32 = runAnchor('fp32', ['--steps', '2']);
  const bf16 = nativeBf16(info) ? runAnchor('bf16', ['--steps', '2']) : null;
  if (f32) console.log(`torch fp32      forward ${f32.fwdTokS.toFixed(1).padStart(8)} tok/s   (${f32.line})`);
  if (bf16) console.log(`torch bf16      forward ${bf16.fwdTokS.toFixed(1).padStart(8)} tok/s   (${bf16.line}; autocast)`);
  const r = (a: number, b: number | undefined) => (b ? (a / b).toFixed(2) : 'n/a');
  const bf = results.bfloat16;
  console.log(`fwd_ratio_vs_torch_fp32=${r(results.float32!.fwd, f32?.fwdTokS)} fwd_ratio_vs_torch_bf16=${bf ? r(bf.fwd, bf16?.fwdTokS) : 'n/a'} ` +
    `fwd_tok_s_f32=${results.float32!.fwd.toFixed(1)} fwd_tok_s_bf16=${bf ? bf.fwd.toFixed(1) : 'n/a'} gen_tok_s_f32=${results.float32!.gen.toFixed(1)} gen_tok_s_bf16=${bf ? bf.gen.toFixed(1) : 'n/a'} cpu="${info.cpu.model}"`);
}

await main();
