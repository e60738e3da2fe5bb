// bench:engine: what the TypeScript binding costs. Matrix products through the Tensor API next to
// the same product timed in a C++ loop inside the addon (no N-API in the loop), and the per-call
// overhead of a small op. Best of several interleaved rounds, so background noise hurts both sides
// alike. Last line: gemm_ts_over_cpp=<ratio, in the dtype auto picks> small_op_us=<microseconds>
import { randn, noGrad, tensor, type DType, type Tensor } from '../src/index.js';
import { benchHeader } from './header.js';
import { N } from '../src/tensor/native.js';

const ROUNDS = 5;

function timeTs(a: Tensor, b: Tensor, iters: number): number {
  a.matmul(b).dispose();  // warm-up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < iters; i++) a.matmul(b).dispose();
  return Number(process.hrtime.bigint() - t0) / 1e9 / iters;
}

function gemm(m: number, k: number, n: number, dtype: DType): { ts: number; cpp: number } {
  const a = randn([m, k], { dtype, seed: 1 });
  const b = randn([k, n], { dtype, seed: 2 });
  const flop = 2 * m * k * n;
  const probe = timeTs(a, b, 1);
  const iters = Math.max(3, Math.round(0.25 / probe));
  let ts = Infinity;
  let cpp = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    ts = Math.min(ts, timeTs(a, b, iters));
    cpp = Math.min(cpp, N.benchMatmul!(a.handle, b.handle, iters) as number);
  }
  a.dispose();
  b.dispose();
  return { ts: flop / ts / 1e9, cpp: flop / cpp / 1e9 };
}

function smallOpUs(): { op: number; noop: number } {
  const x = tensor([1]);
  const y = tensor([2]);
  const iters = 200_000;
  let best = Infinity;
  let noop = Infinity;
  for (let r = 0; r < ROUNDS; r++) {
    let t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) x.add(y).dispose();
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / 1e3 / iters);
    t0 = process.hrtime.bigint();
    for (let i = 0; i < iters; i++) N.noop!();
    noop = Math.min(noop, Number(process.hrtime.bigint() - t0) / 1e3 / iters);
  }
  x.dispose();
  y.dispose();
  return { op: best, noop };
}

noGrad(() => {
  const info = benchHeader('bench:engine', 'matrix products through TypeScript vs C++, per-call overhead');
  console.log('product               dtype     TS GFLOP/s  C++ GFLOP/s  TS/C++');
  const ratios: number[] = [];
  for (const [m, k, n] of [[512, 768, 3072], [1024, 1024, 1024]] as const) {
    for (const dtype of ['float32', 'bfloat16'] as const) {
      const r = gemm(m, k, n, dtype);
      const ratio = r.ts / r.cpp;
      if (dtype === info.auto.dtype) ratios.push(ratio);
      console.log(`${`${m}x${k}x${n}`.padEnd(22)}${dtype.padEnd(10)}${r.ts.toFixed(1).padStart(10)}${r.cpp.toFixed(1).padStart(13)}${ratio.toFixed(3).padStart(8)}`);
    }
  }
  const s = smallOpUs();
  console.log(`small op (add of two 1-element tensors, result disposed): ${s.op.toFixed(2)} us per call; bare N-API call: ${s.noop.toFixed(3)} us`);
  const geo = Math.sqrt(ratios[0]! * ratios[1]!);
  console.log(`gemm_ts_over_cpp=${geo.toFixed(3)} dtype=${info.auto.dtype} small_op_us=${s.op.toFixed(2)} cpu="${info.cpu.model}"`);
});
