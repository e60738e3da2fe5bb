// What every benchmark prints first: the machine it ran on (CPU model and the features that decide
// precision, BLAS and its kernel set, threads, libtorch) and the dtype `auto` picks there, so no
// figure is ever quoted without its CPU. Benchmarks are programs: they configure the runtime.
import { configureRuntime, engineInfo, cuda, type EngineInfo } from '../src/index.js';

export function benchHeader(name: string, what: string): EngineInfo {
  configureRuntime();
  const e = engineInfo();
  console.log(`adapterkit ${name}: ${what}`);
  console.log(`  cpu      ${e.cpu.model} (${e.cpu.physicalCores} cores; ${e.cpuFeatures.join(' ') || 'no avx2/avx512/amx'})`);
  console.log(`  engine   libtorch ${e.torch}, ATen ${e.cpuCapability}, BLAS ${e.blas}, ${e.threads} threads${cuda.isAvailable() ? `, cuda x${cuda.deviceCount()}` : ''}`);
  console.log(`  auto     ${e.auto.dtype} (${e.auto.reason})`);
  return e;
}

/** True when this CPU multiplies bfloat16 natively (else bf16 is emulated, ~25x slower than float32). */
export function nativeBf16(e: EngineInfo): boolean {
  return e.auto.dtype === 'bfloat16';
}
