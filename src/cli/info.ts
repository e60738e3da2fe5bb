// `adapterkit info`: the engine (CPU, BLAS, threads, CUDA, the dtype auto picks) and, with --model,
// a model's parameter memory per dtype and quantized format (--quantize shows what a format saves).
import { VERSION } from '../version.js';
import { parseFlags, dtypeFlag, UsageError } from './common.js';

export const INFO_USAGE = `usage: adapterkit info [--model DIR [--quantize nf4|fp4|int8|int4] [--dtype D]]
  without --model: the engine (CPU features, BLAS, threads, CUDA, the dtype auto picks)
  with --model:    the model's weight memory per dtype and quantized format`;

const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;

export async function infoCommand(args: string[]): Promise<number> {
  const f = parseFlags(args, { model: { type: 'string' }, quantize: { type: 'string' }, dtype: { type: 'string' } }, INFO_USAGE);
  const ak = await import('../tensor/index.js');
  const e = ak.engineInfo();
  console.log(`adapterkit ${VERSION}`);
  console.log(`libtorch   ${e.torch} (ATen kernels ${e.cpuCapability}, oneDNN ${e.mkldnn ? 'yes' : 'no'})`);
  console.log(`cpu        ${e.cpu.model} (${e.cpu.arch}, ${e.cpu.physicalCores} cores, ${e.cpu.logicalCores} threads)`);
  console.log(`features   ${e.cpuFeatures.join(' ') || 'none of avx2/avx512/amx/bf16'}`);
  console.log(`blas       ${e.blas}`);
  console.log(`threads    ${e.threads}`);
  console.log(`cuda       ${ak.cuda.isAvailable() ? `yes (${ak.cuda.deviceCount()} devices, bfloat16 ${ak.cuda.isBf16Supported() ? 'yes' : 'no'})` : 'no'}`);
  console.log(`dtype auto ${e.auto.dtype}: ${e.auto.reason}`);
  if (ak.cuda.isAvailable()) console.log(`dtype auto on cuda ${ak.autoDtype('cuda').dtype}: ${ak.autoDtype('cuda').reason}`);
  const dir = f.str('model');
  if (dir === undefined) {
    if (f.str('quantize') !== undefined) throw new UsageError('--quantize needs --model DIR');
    return 0;
  }
  const { loadModel } = await import('../models/load.js');
  const { weightMemory } = await import('../quant/model.js');
  const { parseQuantFormat } = await import('../quant/weight.js');
  const q = f.str('quantize');
  const model = loadModel(dir, { dtype: dtypeFlag(f.str('dtype')), quantize: q === undefined ? undefined : parseQuantFormat(q) });
  try {
    const mem = weightMemory(model);
    console.log(`\nmodel      ${dir} (${model.modelType}, ${model.dtype}${q ? `, linear layers ${q}` : ''})`);
    console.log(`${'kind'.padEnd(10)} ${'elements'.padStart(14)} ${'memory'.padStart(14)} ${'bits/elem'.padStart(9)}`);
    for (const r of mem.rows) console.log(`${r.kind.padEnd(10)} ${r.elements.toLocaleString('en-US').padStart(14)} ${mib(r.bytes).padStart(14)} ${((8 * r.bytes) / r.elements).toFixed(2).padStart(9)}`);
    console.log(`${'total'.padEnd(10)} ${mem.rows.reduce((n, r) => n + r.elements, 0).toLocaleString('en-US').padStart(14)} ${mib(mem.totalBytes).padStart(14)}`);
  } finally {
    model.dispose();
  }
  return 0;
}
