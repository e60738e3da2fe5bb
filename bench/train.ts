// bench:train: LoRA training steps (forward, backward, AdamW on the adapters) on the GPT-2-small
// shape (12 layers, 768 hidden, vocab 50257, seq 256, batch 4, r=8 on c_attn), base in the dtype
// `auto` picks on this CPU with float32 adapters; tokens/s and peak RSS next to the eager-PyTorch
// anchor from the same invocation: fp32 always, bf16 autocast where this CPU has native bf16 (else
// it is emulated and skipped). Last line:
//   train_ratio_vs_torch_bf16=<a|n/a> train_ratio_vs_torch_fp32=<b> train_ratio_vs_torch_best=<c> train_tok_s=… dtype=…
import { readFileSync } from 'node:fs';
import { tidy, randint, manualSeed, autoDtype, type DType, type Device } from '../src/index.js';
import { createModel } from '../src/models/load.js';
import { PeftModel } from '../src/adapters/index.js';
import { AdamW, paramGroups } from '../src/train/index.js';
import { linearCrossEntropy } from '../src/index.js';
import { runAnchor } from './anchor.js';
import { benchHeader, nativeBf16 } from './header.js';

const B = 4;
const T = 256;
const STEPS = Number(process.env.BENCH_STEPS ?? 5);
const CONFIG = {
  model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 12,
  n_head: 12, activation_function: 'gelu_new', tie_word_embeddings: true, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0,
};

function peakRssMB(): number {
  // VmHWM: the resident-set high-water mark of this process.
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : process.memoryUsage().rss / 2 ** 20;
}

function ours(dtype: DType, device: Device): number {
  const model = createModel(CONFIG, { dtype, device, seed: 0 });
  const peft = PeftModel.create(model, { r: 8, loraAlpha: 16, targetModules: ['c_attn'] }, { seed: 0 });
  const named = model.namedParameters().filter(([, t]) => t.requiresGrad);
  const opt = new AdamW(paramGroups(named), { lr: 1e-4 });
  const ids = randint(0, 50257, [B, T + 1], { seed: 1, device });
  const x = ids.narrow(1, 0, T).contiguous();
  const y = ids.narrow(1, 1, T).contiguous();
  model.train();
  const step = () => tidy(() => {
    manualSeed(0);
    // The anchor's loss (mean cross-entropy over every position, labels already shifted), with the LM
    // head fused into the loss: the (B*T, V) float32 logits are never formed.
    const hidden = peft.forward({ inputIds: x, skipLmHead: true }).hiddenStates;  // (B, T, C)
    const head = model.lmHeadWeight()!;  // (V, C), tied to wte
    const loss = linearCrossEntropy(hidden.reshape(B * T, -1), head, y.reshape(-1)).div(B * T);
    loss.backward();
    opt.step();
    opt.zeroGrad();
    return loss.item();
  });
  step();  // warm-up: the first steps build the matrix-product kernels for each shape
  step();
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < STEPS; i++) step();
  const s = Number(process.hrtime.bigint() - t0) / 1e9 / STEPS;
  opt.dispose();
  peft.dispose();
  return (B * T) / s;
}

const info = benchHeader('bench:train', `GPT-2 small, batch ${B} x seq ${T}, LoRA r=8 on c_attn, ${STEPS} steps`);
// BENCH_DEVICE=cuda runs ours on the GPU (scripts/device-check.sh); the anchor is CPU-only then.
const device = (process.env.BENCH_DEVICE ?? 'cpu') as Device;
const dtype = autoDtype(device).dtype as DType;
const tok = ours(dtype, device);
const rss = peakRssMB();
console.log(`ours  ${dtype} base + f32 LoRA${device === 'cpu' ? '' : ` (${device})`}`.padEnd(29) + ` train ${tok.toFixed(1).padStart(7)} tok/s   peak RSS ${rss.toFixed(0)} MB`);
const onCpu = device === 'cpu';
const steps = ['--steps', String(STEPS)];
// The anchor twice: as a PyTorch user runs it, and with the two process settings adapterkit makes
// (OpenBLAS kernels for this CPU, passive OpenMP waiting), which speed PyTorch up as well.
const f32 = onCpu ? runAnchor('fp32', steps, 'user') : null;
const bf16 = onCpu && nativeBf16(info) ? runAnchor('bf16', steps, 'user') : null;
const f32t = onCpu ? runAnchor('fp32', steps, 'tuned') : null;
const bf16t = onCpu && nativeBf16(info) ? runAnchor('bf16', steps, 'tuned') : null;
const show = (label: string, a: { trainTokS: number; line: string } | null) => { if (a) console.log(`${label.padEnd(29)} train ${a.trainTokS.toFixed(1).padStart(7)} tok/s   (${a.line})`); };
show('torch fp32', f32);
show('torch bf16 (autocast)', bf16);
show('torch fp32, tuned env', f32t);
show('torch bf16 (autocast), tuned env', bf16t);
if (onCpu && !nativeBf16(info)) console.log('torch bf16 (autocast)         skipped: this CPU has no native bfloat16 (emulated, ~25x slower than fp32)');
if (!onCpu) console.log('torch anchor                  skipped: the anchor script runs on the CPU only');
const ratio = (a: { trainTokS: number } | null) => (a ? (tok / a.trainTokS).toFixed(2) : 'n/a');
const best = (...xs: ({ trainTokS: number } | null)[]) => xs.filter((a): a is { trainTokS: number } => a !== null).sort((a, b) => b.trainTokS - a.trainTokS)[0] ?? null;
console.log(`train_ratio_vs_torch_bf16=${ratio(bf16)} train_ratio_vs_torch_fp32=${ratio(f32)} train_ratio_vs_torch_best=${ratio(best(f32, bf16))} ` +
  `train_ratio_vs_torch_best_tuned_env=${ratio(best(f32t, bf16t))} train_tok_s=${tok.toFixed(1)} torch_bf16_tok_s=${bf16 ? bf16.trainTokS.toFixed(1) : 'n/a'} ` +
  `torch_fp32_tok_s=${f32 ? f32.trainTokS.toFixed(1) : 'n/a'} dtype=${dtype} device=${device} cpu="${info.cpu.model}"`);
