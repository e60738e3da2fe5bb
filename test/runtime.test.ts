// The runtime and hardware choices: CPU feature parsing, the dtype `auto` picks for injected flag sets
// (AVX2-only EPYC, AMX Xeon, Cooper Lake, Arm, CUDA), the OpenBLAS kernel set, importing the package
// leaves threads and the allocator alone (checked in child processes), flush-to-zero, the op
// profiler, and length-sorted evaluation that gives each example the prediction it gets alone.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  parseCpuInfo, chooseDtype, settleByProbe, blasCoreType, autoDtype, resolveDtype, engineInfo, full, randn, tidy, noGrad,
  startOpProfiler, stopOpProfiler, groupByFamily, opFamily, loadModel, PeftModel, configureRuntime,
} from '../src/index.js';
import { Trainer } from '../src/train/index.js';
import { lengthSortedBatches } from '../src/train/eval-batches.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const LLAMA = join(root, 'test/fixtures/hf-ref/llama');

const x86 = (model: string, vendor: string, flags: string, cores = 2) => Array.from({ length: cores }, (_, i) =>
  `processor\t: ${i}\nvendor_id\t: ${vendor}\nmodel name\t: ${model}\nphysical id\t: 0\ncore id\t\t: ${i}\nflags\t\t: ${flags}\n`).join('\n');
const EPYC = x86('AMD EPYC 7B13', 'AuthenticAMD', 'fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2');
const SPR = x86('Intel(R) Xeon(R) Platinum 8481C', 'GenuineIntel', 'sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16 amx_bf16 amx_tile amx_int8 avx512_fp16');
const CPL = x86('Intel(R) Xeon(R) Platinum 8380H', 'GenuineIntel', 'sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl avx512_bf16');
const SKX = x86('Intel(R) Xeon(R) Gold 6148', 'GenuineIntel', 'sse2 avx fma avx2 avx512f avx512dq avx512bw avx512vl');
const HASWELL = x86('Intel(R) Core(TM) i7-4770', 'GenuineIntel', 'sse2 avx fma avx2');
const ARM_BF16 = 'processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh rng bti\nCPU implementer\t: 0x41\n';
const ARM_OLD = 'processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid\nCPU implementer\t: 0x41\n';

test('cpuinfo parsing: model, vendor, flags, physical cores (hyper-threads counted once)', () => {
  const epyc = parseCpuInfo(EPYC, 'x64');
  assert.equal(epyc.model, 'AMD EPYC 7B13');
  assert.equal(epyc.vendor, 'amd');
  assert.ok(epyc.flags.has('avx2') && !epyc.flags.has('avx512f'));
  assert.equal(epyc.logicalCores, 2);
  // Two hyper-threads of one core: 2 logical CPUs, 1 physical core.
  const ht = parseCpuInfo(x86('Intel', 'GenuineIntel', 'avx2', 1) + '\n' + x86('Intel', 'GenuineIntel', 'avx2', 1).replace('processor\t: 0', 'processor\t: 1'), 'x64');
  assert.equal(ht.logicalCores, 2);
  assert.equal(ht.physicalCores, 1);
  const arm = parseCpuInfo(ARM_BF16, 'arm64', [{ model: 'Neoverse-V1' }]);
  assert.equal(arm.vendor, 'arm');
  assert.equal(arm.model, 'Neoverse-V1');
  assert.ok(arm.flags.has('bf16'));
});

test('dtype auto: bfloat16 only where the hardware computes it natively', () => {
  const cases: [string, string, string, 'float32' | 'bfloat16', boolean][] = [
    ['AVX2-only AMD EPYC', EPYC, 'x64', 'float32', false],
    ['Haswell (AVX2)', HASWELL, 'x64', 'float32', false],
    ['Skylake-SP (AVX-512, no bf16)', SKX, 'x64', 'float32', false],
    ['Sapphire Rapids (AMX)', SPR, 'x64', 'bfloat16', false],
    ['Cooper Lake (AVX512_BF16, no AMX): ambiguous', CPL, 'x64', 'float32', true],
    ['Arm with BF16', ARM_BF16, 'arm64', 'bfloat16', false],
    ['Arm without BF16', ARM_OLD, 'arm64', 'float32', false],
    ['no /proc/cpuinfo: ambiguous', '', 'x64', 'float32', true],
  ];
  for (const [name, text, arch, dtype, ambiguous] of cases) {
    const c = chooseDtype(parseCpuInfo(text, arch));
    assert.equal(c.dtype, dtype, name);
    assert.equal(c.ambiguous, ambiguous, name);
    assert.ok(c.reason.length > 10, name);
  }
  assert.equal(chooseDtype(parseCpuInfo(EPYC, 'x64'), { kind: 'cuda', bf16: true }).dtype, 'bfloat16');
  assert.equal(chooseDtype(parseCpuInfo(EPYC, 'x64'), { kind: 'cuda', bf16: false }).dtype, 'float16');
  // A probe settles the ambiguous case: bfloat16 must be clearly (1.3x) faster.
  const amb = chooseDtype(parseCpuInfo(CPL, 'x64'));
  assert.equal(settleByProbe(amb, { float32: 1.0, bfloat16: 0.5 }).dtype, 'bfloat16');
  assert.equal(settleByProbe(amb, { float32: 1.0, bfloat16: 0.9 }).dtype, 'float32');
  assert.equal(settleByProbe(amb, { float32: 1.0, bfloat16: 20 }).dtype, 'float32');  // emulated
});

test('OpenBLAS kernel set: SkylakeX for AVX-512, Zen/Haswell for AVX2, none on Arm or old CPUs', () => {
  assert.equal(blasCoreType(parseCpuInfo(SPR, 'x64')), 'SkylakeX');
  assert.equal(blasCoreType(parseCpuInfo(SKX, 'x64')), 'SkylakeX');
  assert.equal(blasCoreType(parseCpuInfo(EPYC, 'x64')), 'Zen');
  assert.equal(blasCoreType(parseCpuInfo(HASWELL, 'x64')), 'Haswell');
  assert.equal(blasCoreType(parseCpuInfo(x86('Old', 'GenuineIntel', 'sse2 sse4_2'), 'x64')), null);
  assert.equal(blasCoreType(parseCpuInfo(ARM_BF16, 'arm64')), null);
});

test('this machine: auto resolves to what its features say; engineInfo names CPU, BLAS and the reason', () => {
  const e = engineInfo();
  assert.ok(e.cpu.model.length > 0);
  assert.ok(e.auto.reason.length > 0);
  assert.ok(['float32', 'bfloat16'].includes(e.auto.dtype));
  assert.equal(resolveDtype('auto'), autoDtype().dtype);
  assert.equal(resolveDtype(undefined), autoDtype().dtype);
  assert.equal(resolveDtype('float16'), 'float16');
  if (!e.cpu.flags.has('amx_bf16') && !e.cpu.flags.has('avx512_bf16') && e.cpu.arch === 'x64') assert.equal(e.auto.dtype, 'float32');
  // loadModel's default dtype is auto.
  const m = loadModel(LLAMA);
  assert.equal(m.dtype, autoDtype().dtype);
  m.dispose();
});

// Runs a script in a fresh node process (the package imported from dist) and returns its JSON output.
function child(script: string, env: Record<string, string> = {}): Record<string, number> {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, ...env }, encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, number>;
}
const rssProbe = (configure: boolean) => `
  import { readFileSync } from 'node:fs';
  const ak = await import(${JSON.stringify(join(root, 'dist/src/index.js'))});
  ${configure ? 'ak.configureRuntime();' : ''}
  const rss = () => Number(readFileSync('/proc/self/statm', 'utf8').split(' ')[1]) * 4096;
  const t = ak.full([6 * 1024 * 1024], 1);   // 24 MiB, every page touched
  const before = rss();
  t.dispose();
  console.log(JSON.stringify({ threads: ak.getNumThreads(), freed: before - rss() }));`;

test('importing adapterkit leaves threads and the allocator alone; configureRuntime sets them', () => {
  const plain = child(rssProbe(false), { OMP_NUM_THREADS: '1' });
  assert.equal(plain.threads, 1, 'import must not change the thread count');
  assert.ok(plain.freed > 16 * 1024 * 1024, `a freed 24 MiB buffer goes back to the OS after a plain import (freed ${plain.freed} bytes)`);
  const tuned = child(rssProbe(true), { OMP_NUM_THREADS: '1' });
  assert.ok(tuned.threads >= 1);
  assert.ok(tuned.freed < 8 * 1024 * 1024, `configureRuntime keeps freed buffers for reuse (freed ${tuned.freed} bytes)`);
});

test('flush-to-zero: denormal float32 operands are zero when on, kept when off', () => {
  const probe = () => tidy(() => full([4], 1e-40).mul(1).sum().item());
  configureRuntime({ flushDenormal: false });
  assert.ok(probe() > 0);
  configureRuntime({ flushDenormal: true });
  assert.equal(probe(), 0);
});

test('op profiler: self time per op, grouped into families', () => {
  startOpProfiler();
  tidy(() => randn([64, 64]).matmul(randn([64, 64])).relu().sum());
  const ops = stopOpProfiler();
  const mm = ops.find((o) => o.name === 'aten::mm');
  assert.ok(mm && mm.calls >= 1 && mm.seconds >= 0, JSON.stringify(ops.slice(0, 5)));
  assert.equal(opFamily('aten::mm'), 'matrix products');
  assert.equal(opFamily('AddmmBackward0'), 'matrix products');
  assert.equal(opFamily('aten::_softmax'), 'attention / softmax');
  assert.equal(opFamily('aten::copy_'), 'copies and casts');
  const fam = groupByFamily(ops);
  assert.ok(fam.some((f) => f.name === 'matrix products'));
  assert.equal(stopOpProfiler().length, 0, 'off after stop');
});

test('length-sorted evaluation batches: each index once, shortest first, within row and token limits', () => {
  const lengths = [5, 90, 3, 40, 40, 7, 12, 96, 1, 33];
  const batches = lengthSortedBatches(lengths, 3, 120);
  assert.deepEqual(batches.flat().sort((a, b) => a - b), lengths.map((_, i) => i));
  const flat = batches.flat().map((i) => lengths[i]!);
  assert.deepEqual(flat, [...flat].sort((a, b) => a - b));
  for (const b of batches) {
    assert.ok(b.length <= 3);
    assert.ok(b.length === 1 || b.length * Math.max(...b.map((i) => lengths[i]!)) <= 120);
  }
  assert.throws(() => lengthSortedBatches(lengths, 0, 100), /at least 1/);
});

test('evaluate: length-sorted batches give each example the prediction it gets alone, in input order', () => noGrad(() => {
  const model = loadModel(LLAMA, { dtype: 'float32', task: 'sequence-classification', numLabels: 3, seed: 1 });
  const peft = PeftModel.create(model, { r: 2, targetModules: ['q_proj'], modulesToSave: ['score'], taskType: 'SEQ_CLS' }, { seed: 0 });
  const vocab = 96;  // the fixture's vocab_size
  const examples = Array.from({ length: 13 }, (_, i) => ({ inputIds: Array.from({ length: 2 + ((i * 7) % 11) }, (_, j) => 4 + ((i * 31 + j * 17) % (vocab - 4))), label: i % 3 }));
  const trainer = new Trainer({ model, peft, train: examples, eval: examples, collate: { padId: 0 }, config: { task: 'sequence-classification', evalBatchSize: 4, evalTokens: 24, progress: false } });
  const r = trainer.evaluate();
  const alone = examples.map((e) => trainer.evaluate([e]).predictions![0]);
  assert.deepEqual(r.predictions, alone);
  const acc = alone.filter((p, i) => p === examples[i]!.label).length / examples.length;
  assert.ok(Math.abs(r.accuracy! - acc) < 1e-12);
  trainer.dispose();
  peft.dispose();
}));
