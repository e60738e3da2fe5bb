// Engine-wide settings: threads, seeds, devices, grad mode, memory accounting. Importing adapterkit
// changes nothing in the process (no thread count, no allocator tuning): `configureRuntime` does,
// and the CLI and the trainer call it when they start.
import { N, BLAS_CORETYPE_FORCED } from './native.js';
import { run } from './tensor.js';
import { chooseDtype, readCpuInfo, settleByProbe, RELEVANT_FLAGS, type CpuInfo, type DtypeChoice } from './cpu.js';
import type { DType } from './dtype.js';

let configured = false;

/** Sets libtorch's intra-op thread count. */
export function setNumThreads(n: number): void {
  run('setNumThreads', [n], () => N.setNumThreads(n));
  configured = true;
}
export function getNumThreads(): number {
  return N.getNumThreads() as number;
}
/** Seeds the global generator (and every CUDA device's default generator) that rand/randn/randint/dropout/multinomial use without a per-call seed. */
export function manualSeed(seed: number): void {
  run('manualSeed', [seed], () => N.manualSeed(seed));
}
/** The libtorch version the addon was built against, e.g. "1.13.0". */
export function torchVersion(): string {
  return N.torchVersion() as string;
}

export const cuda = {
  /** True only when the linked libtorch has CUDA and a device is visible. */
  isAvailable(): boolean { return N.cudaAvailable() as boolean; },
  deviceCount(): number { return N.cudaDeviceCount() as number; },
  /** True when CUDA devices compute bfloat16 natively (compute capability 8.0+). */
  isBf16Supported(): boolean { return N.cudaBf16Supported() as boolean; },
};

/** Tensors currently held by live handles (disposed or collected handles are not counted). */
export function liveTensors(): number {
  return N.liveTensors() as number;
}

export function isGradEnabled(): boolean {
  return N.isGradEnabled() as boolean;
}
/** Runs `fn` with gradient recording off (no graph is built): evaluation and parameter updates. */
export function noGrad<T>(fn: () => T): T {
  const prev = N.isGradEnabled() as boolean;
  N.setGradEnabled(false);
  try {
    return fn();
  } finally {
    N.setGradEnabled(prev);
  }
}
/** Runs `fn` with gradient recording on, even inside noGrad. */
export function enableGrad<T>(fn: () => T): T {
  const prev = N.isGradEnabled() as boolean;
  N.setGradEnabled(true);
  try {
    return fn();
  } finally {
    N.setGradEnabled(prev);
  }
}

/**
 * Keeps freed tensor buffers in the C heap for reuse (default on): without it every large
 * temporary is a fresh mmap whose pages fault in again, which measured up to 6x slower on
 * attention. Off gives memory back to the OS sooner. Returns whether the allocator accepted it.
 */
/** Flush-to-zero for float32 denormals on every intra-op thread; false where the CPU cannot. */
export function setFlushDenormal(on: boolean): boolean {
  return N.setFlushDenormal(on) as boolean;
}

export function setAllocatorCaching(on: boolean): boolean {
  configured = true;
  return N.tuneAllocator(on) as boolean;
}

export interface RuntimeOptions {
  /** Intra-op threads; default: the physical cores (hyper-threads share the vector units). */
  threads?: number;
  /** Keep freed tensor buffers in the heap for reuse (see setAllocatorCaching); default true. */
  allocatorCaching?: boolean;
  /**
   * Flush float32 denormals to zero (as torch.set_flush_denormal(True)); default true. Denormal
   * operands cost ~13x per multiply on x86, and optimizer moments of tiny gradients are full of them.
   */
  flushDenormal?: boolean;
}

/**
 * Tunes the process for tensor work: the thread count and the allocator. The CLI and the Trainer
 * call it when they start; a library user calls it when they choose to (a server that wants its
 * memory back passes `allocatorCaching: false`, or does not call it). Returns what it set.
 */
export function configureRuntime(o: RuntimeOptions = {}): Required<RuntimeOptions> {
  const threads = o.threads ?? Math.max(1, readCpuInfo().physicalCores);
  if (!Number.isInteger(threads) || threads < 1) throw new RangeError(`configureRuntime: threads must be a positive integer, got ${threads}`);
  const allocatorCaching = o.allocatorCaching ?? true;
  const flushDenormal = o.flushDenormal ?? true;
  setNumThreads(threads);
  setAllocatorCaching(allocatorCaching);
  setFlushDenormal(flushDenormal);
  configured = true;
  return { threads, allocatorCaching, flushDenormal };
}

/** configureRuntime() with its defaults, unless the program already set threads or called it. */
export function configureRuntimeOnce(): void {
  if (!configured) configureRuntime();
}

export interface EngineInfo {
  cpu: CpuInfo;
  /** The feature flags that matter for speed, present on this CPU. */
  cpuFeatures: string[];
  /** e.g. "OpenBLAS 0.3.21 (SkylakeX kernels, forced)" or what libtorch's build says. */
  blas: string;
  /** ATen's vectorised kernels in use (DEFAULT, AVX2, AVX512). */
  cpuCapability: string;
  mkldnn: boolean;
  threads: number;
  torch: string;
  auto: DtypeChoice;
}

/** What the engine runs on: CPU model and features, BLAS, threads, and what dtype `auto` picks and why. */
export function engineInfo(): EngineInfo {
  const cpu = readCpuInfo();
  const e = N.engineInfo() as { buildConfig: string; mkldnn: boolean; openblasCore?: string; openblasConfig?: string };
  const blasBuild = /BLAS_INFO=(\w+)/.exec(e.buildConfig)?.[1];
  const blas = e.openblasConfig
    ? `${e.openblasConfig.split(/\s+/).slice(0, 2).join(' ')} (${e.openblasCore} kernels${BLAS_CORETYPE_FORCED ? ', chosen by adapterkit' : process.env.OPENBLAS_CORETYPE ? ', from OPENBLAS_CORETYPE' : ''})`
    : blasBuild ?? 'unknown';
  return {
    cpu, cpuFeatures: RELEVANT_FLAGS.filter((f) => cpu.flags.has(f)), blas,
    cpuCapability: /CPU capability usage: (\w+)/.exec(e.buildConfig)?.[1] ?? 'unknown',
    mkldnn: e.mkldnn, threads: getNumThreads(), torch: torchVersion(), auto: autoDtype('cpu'),
  };
}

const autoCache = new Map<string, DtypeChoice>();

/**
 * The dtype `auto` resolves to on a device: bfloat16 only where the hardware computes it natively,
 * else float32 (float16 on a CUDA GPU without bfloat16). Read from the CPU's features; where they do
 * not settle it, a GEMM probe (a few milliseconds) times both dtypes. Cached per device.
 */
export function autoDtype(device = 'cpu'): DtypeChoice {
  const kind = device.startsWith('cuda') ? 'cuda' : 'cpu';
  const hit = autoCache.get(kind);
  if (hit) return hit;
  let choice = kind === 'cuda' ? chooseDtype(readCpuInfo(), { kind: 'cuda', bf16: cuda.isBf16Supported() }) : chooseDtype(readCpuInfo());
  if (choice.ambiguous) choice = settleByProbe(choice, gemmProbe());
  autoCache.set(kind, choice);
  return choice;
}

/** Resolves a dtype option: 'auto' (or nothing) by `autoDtype`, anything else as given. */
export function resolveDtype(dtype: DType | 'auto' | undefined, device = 'cpu'): DType {
  return dtype === undefined || dtype === 'auto' ? autoDtype(device).dtype : dtype;
}

// Seconds per 256x512 @ 512x512 product in each dtype, timed in C++ (best of three after a warm-up).
function gemmProbe(): { float32: number; bfloat16: number } {
  const time = (dt: 'float32' | 'bfloat16'): number => {
    const a = N.randn([256, 512], 6, 'cpu', 1);
    const b = N.randn([512, 512], 6, 'cpu', 2);
    const [x, y] = dt === 'float32' ? [a, b] : [N.to(a, 15, undefined, false), N.to(b, 15, undefined, false)];
    let best = Infinity;
    try {
      for (let i = 0; i < 3; i++) best = Math.min(best, N.benchMatmul(x, y, 4) as number);
    } finally {
      for (const h of new Set([a, b, x, y])) N.dispose(h);
    }
    return best;
  };
  return { float32: time('float32'), bfloat16: time('bfloat16') };
}
