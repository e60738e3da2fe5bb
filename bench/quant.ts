// bench:quant: quantized bases (nf4, fp4, int8, int4) against the unquantized base in the dtype
// `auto` picks on this CPU. For a GPT-2-small-shaped and a LLaMA-shaped model (random weights):
// weight memory (the quantized Linear layers, and the whole model), forward tokens/s and LoRA
// training tokens/s; on the embedded model: validation perplexity (the blocks held out when it was
// pretrained). Last line:
//   quant: nf4_mem_ratio=<nf4 bytes / bf16 bytes of the quantized layers> nf4_ppl_increase=<%> nf4_train_tok_s_ratio=<vs the base dtype>
import { tidy, randint, manualSeed, crossEntropy, tensor, noGrad, type DType } from '../src/index.js';
import { createModel, loadModel } from '../src/models/load.js';
import { defaultModelDir } from '../src/models/default-model.js';
import { PeftModel } from '../src/adapters/index.js';
import { AdamW, paramGroups } from '../src/train/index.js';
import { linearCrossEntropy } from '../src/index.js';
import { quantizeModel, quantizableLayers, weightMemory } from '../src/quant/model.js';
import { QuantLinear } from '../src/quant/linear.js';
import type { QuantFormat } from '../src/quant/weight.js';
import { HFTokenizer } from '../src/tokenizer/tokenizer.js';
import { loadPretrainCorpus } from '../src/data/corpus.js';
import { fromObjects, buildCausalLm, trainValSplit } from '../src/data/index.js';
import type { PretrainedModel } from '../src/models/types.js';
import { benchHeader } from './header.js';

const FORMATS: QuantFormat[] = ['int8', 'nf4', 'fp4', 'int4'];
const B = 4;
const T = 128;
const STEPS = Number(process.env.BENCH_STEPS ?? 7);

const GPT2 = {
  model_type: 'gpt2', architectures: ['GPT2LMHeadModel'], vocab_size: 50257, n_positions: 1024, n_embd: 768, n_layer: 12,
  n_head: 12, activation_function: 'gelu_new', tie_word_embeddings: true, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0,
};
// A 7B-like proportion at 1/4 of the width and 1/4 of the depth: GQA, SwiGLU, untied head.
const LLAMA = {
  model_type: 'llama', architectures: ['LlamaForCausalLM'], vocab_size: 32000, hidden_size: 1024, intermediate_size: 2816,
  num_hidden_layers: 8, num_attention_heads: 16, num_key_value_heads: 4, hidden_act: 'silu', max_position_embeddings: 2048,
  rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: false,
};

interface Row { model: string; format: string; layerBytes: number; modelBytes: number; fwd: number; train: number }

// The median of n timed calls after a warm-up call: one slow step (another job, a page fault)
// does not move it.
const time = (f: () => void, n: number): number => {
  f();
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = process.hrtime.bigint();
    f();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9);
  }
  return ts.sort((a, b) => a - b)[Math.floor(n / 2)]!;
};

function measure(name: string, config: Record<string, unknown>, dtype: DType, format: QuantFormat | null, targets: string[]): Row {
  const model = createModel(config, { dtype, seed: 0 });
  const layerElems = quantizableLayers(model).reduce((n, [, m]) => n + m.inFeatures * m.outFeatures, 0);
  if (format) quantizeModel(model, { format });
  const mem = weightMemory(model);
  const layerBytes = format ? model.namedModules().reduce((n, [, m]) => n + (m instanceof QuantLinear ? m.weightBytes() : 0), 0) : layerElems * 2;
  const vocab = Number(config.vocab_size);
  const ids = randint(0, vocab, [B, T + 1], { seed: 1 });
  const x = ids.narrow(1, 0, T).contiguous();
  const y = ids.narrow(1, 1, T).contiguous();
  model.eval();
  const fwd = time(() => noGrad(() => tidy(() => { model.forward({ inputIds: x, skipLmHead: true }); })), STEPS);
  const peft = PeftModel.create(model, { r: 8, loraAlpha: 16, targetModules: targets }, { seed: 0 });
  const opt = new AdamW(paramGroups(model.namedParameters().filter(([, t]) => t.requiresGrad)), { lr: 1e-4 });
  model.train();
  const train = time(() => tidy(() => {
    manualSeed(0);
    const hidden = peft.forward({ inputIds: x, skipLmHead: true }).hiddenStates;  // (B, T, C)
    const loss = linearCrossEntropy(hidden.reshape(B * T, -1), model.lmHeadWeight()!, y.reshape(-1)).div(B * T);
    loss.backward();
    opt.step();
    opt.zeroGrad();
  }), STEPS);
  opt.dispose();
  peft.dispose();
  for (const t of [ids, x, y]) t.dispose();
  return { model: name, format: format ?? dtype, layerBytes, modelBytes: mem.totalBytes, fwd: (B * T) / fwd, train: (B * T) / train };
}

// The embedded model's held-out blocks, rebuilt as scripts/build-default-model.ts split them.
async function validationBlocks(dir: string, max: number): Promise<number[][]> {
  const tok = HFTokenizer.fromDir(dir);
  const corpus = loadPretrainCorpus();
  const records = fromObjects(corpus.documents.map((text) => ({ text })), 'corpus');
  const built = await buildCausalLm(records, tok, { blockSize: 128, packed: true, addSpecialTokens: false, appendEos: true });
  const { validation } = trainValSplit(built.examples, { valFraction: 0.02, seed: 0 });
  return validation.slice(0, max).map((e) => e.inputIds);
}

function perplexity(model: PretrainedModel, blocks: number[][]): number {
  let sum = 0;
  let n = 0;
  for (let i = 0; i < blocks.length; i += 8) {
    sum += noGrad(() => tidy(() => {
      const ids = tensor(blocks.slice(i, i + 8), { dtype: 'int64' });
      const logits = model.forward({ inputIds: ids }).logits;  // (b, T, V)
      const V = logits.shape[2]!;
      const L = ids.shape[1]!;
      const nll = crossEntropy(logits.narrow(1, 0, L - 1).reshape(-1, V).to('float32'), ids.narrow(1, 1, L - 1).reshape(-1), { reduction: 'sum' }).item();
      n += ids.shape[0]! * (L - 1);
      return nll;
    }));
  }
  return Math.exp(sum / n);
}

const e = benchHeader('bench:quant', 'quantized bases: memory, forward and LoRA-training speed, perplexity');
const base = e.auto.dtype as DType;
const rows: Row[] = [];
for (const [name, cfg, targets] of [['gpt2-small', GPT2, ['c_attn']], ['llama-shaped', LLAMA, ['q_proj', 'v_proj']]] as const) {
  for (const f of [null, ...FORMATS]) {
    const r = measure(name, cfg, base, f, [...targets]);
    rows.push(r);
    console.log(`  ${name.padEnd(13)} ${r.format.padEnd(9)} layers ${(r.layerBytes / 2 ** 20).toFixed(1).padStart(7)} MiB  model ${(r.modelBytes / 2 ** 20).toFixed(1).padStart(7)} MiB  forward ${r.fwd.toFixed(0).padStart(6)} tok/s  LoRA training ${r.train.toFixed(0).padStart(6)} tok/s`);
  }
}

const dir = defaultModelDir();
const blocks = await validationBlocks(dir, Number(process.env.BENCH_PPL_BLOCKS ?? 96));
const ppl = new Map<string, number>();
for (const f of [null, ...FORMATS]) {
  const m = loadModel(dir, { dtype: base, quantize: f ?? undefined });
  ppl.set(f ?? base, perplexity(m, blocks));
  m.dispose();
  console.log(`  embedded      ${(f ?? base).padEnd(9)} validation perplexity ${ppl.get(f ?? base)!.toFixed(2)} on ${blocks.length} held-out blocks of 128 tokens`);
}

console.log('\n| model | weights | quantized layers | whole model | forward tok/s | LoRA training tok/s | vs base |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) {
  const b = rows.find((x) => x.model === r.model && x.format === base)!;
  console.log(`| ${r.model} | ${r.format} | ${(r.layerBytes / 2 ** 20).toFixed(1)} MiB (${(r.layerBytes / b.layerBytes).toFixed(3)}) | ${(r.modelBytes / 2 ** 20).toFixed(1)} MiB (${(r.modelBytes / b.modelBytes).toFixed(3)}) | ${r.fwd.toFixed(0)} | ${r.train.toFixed(0)} | ${(r.train / b.train).toFixed(2)}x |`);
}
console.log('\n| embedded model | ' + [...ppl.keys()].join(' | ') + ' |');
console.log('|---|' + [...ppl.keys()].map(() => '---|').join(''));
console.log('| validation perplexity | ' + [...ppl.values()].map((v) => v.toFixed(2)).join(' | ') + ' |');

// The headline figures on the LLaMA-shaped model (the shape QLoRA is used on).
const lb = rows.find((r) => r.model === 'llama-shaped' && r.format === base)!;
const ln = rows.find((r) => r.model === 'llama-shaped' && r.format === 'nf4')!;
const memRatio = ln.layerBytes / lb.layerBytes;
const pplInc = (100 * (ppl.get('nf4')! - ppl.get(base)!)) / ppl.get(base)!;
console.log(`\nbase dtype ${base}; memory ratios are against the same layers in bfloat16 (2 bytes per weight)`);
console.log(`quant: nf4_mem_ratio=${memRatio.toFixed(3)} nf4_ppl_increase=${pplInc.toFixed(2)}% nf4_train_tok_s_ratio=${(ln.train / lb.train).toFixed(2)}`);
