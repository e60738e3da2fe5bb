// bench:lora: forward throughput on the GPT-2-small shape (12 layers, 768 hidden, vocab 50257) for
// the base model, with one LoRA adapter (r=8 on c_attn, unmerged), and with a mixed batch where each
// of 8 rows uses a different adapter (gathered low-rank products, one pass per layer).
import { noGrad, tidy, randint, type DType } from '../src/index.js';
import { benchHeader } from './header.js';
import { createModel } from '../src/models/load.js';
import { PeftModel } from '../src/adapters/index.js';

const B = 8;
const T = 128;
const CONFIG = {
  model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 12,
  n_head: 12, activation_function: 'gelu_new', tie_word_embeddings: true,
};

function bestSeconds(f: () => void, reps = 3): number {
  f();
  let best = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = process.hrtime.bigint();
    f();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return best;
}

const info = benchHeader('bench:lora', `GPT-2 small shape, batch ${B} x seq ${T}`);
const dtype: DType = (process.argv[2] as DType | undefined) ?? (info.auto.dtype as DType);
console.log(`  dtype    ${dtype}`);
const model = createModel(CONFIG, { dtype, seed: 0 });
const ids = randint(0, 50257, [B, T], { seed: 1 });
const run = (f: () => void) => bestSeconds(() => noGrad(() => tidy(f)));
const tokens = B * T;
const base = run(() => { model.forward({ inputIds: ids }).logits.sum().item(); });
const peft = PeftModel.create(model, { r: 8, loraAlpha: 16, targetModules: ['c_attn'], initLoraWeights: false }, { seed: 0 });
const one = run(() => { peft.forward({ inputIds: ids }).logits.sum().item(); });
const names = Array.from({ length: 8 }, (_, i) => `a${i}`);
for (const n of names.slice(1)) peft.addAdapter(n, { r: 8, loraAlpha: 16, targetModules: ['c_attn'], initLoraWeights: false }, { seed: names.indexOf(n) });
peft.deleteAdapter('default');
peft.addAdapter('a0', { r: 8, loraAlpha: 16, targetModules: ['c_attn'], initLoraWeights: false }, { seed: 0 });
const mixed = run(() => { peft.forward({ inputIds: ids, adapterNames: names }).logits.sum().item(); });
const f = (s: number) => (tokens / s).toFixed(1).padStart(8);
console.log(`base                      ${f(base)} tok/s`);
console.log(`one LoRA (r=8, unmerged)  ${f(one)} tok/s   overhead x${(one / base).toFixed(3)}`);
console.log(`mixed batch, 8 adapters   ${f(mixed)} tok/s   overhead x${(mixed / base).toFixed(3)}`);
console.log(`lora_overhead=${(one / base).toFixed(3)} mixed8_overhead=${(mixed / base).toFixed(3)} base_tok_s=${(tokens / base).toFixed(1)}`);
peft.dispose();
ids.dispose();
