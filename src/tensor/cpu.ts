// What this CPU can do fast, read at run time, and the choices that follow from it: the compute
// dtype `auto` means, and the OpenBLAS kernel set. Pure functions over an injectable `CpuInfo`, so the
// decisions are testable with any flag set; only `readCpuInfo()` touches the machine. This file must
// not import the native addon: `blasCoreType` runs before the addon (and OpenBLAS with it) is loaded.
import { readFileSync } from 'node:fs';
import { arch, cpus } from 'node:os';

export interface CpuInfo {
  /** e.g. "Intel(R) Xeon(R) Processor" or "AMD EPYC 7B13". */
  model: string;
  vendor: 'intel' | 'amd' | 'arm' | 'apple' | 'other';
  arch: string;
  /** Feature flags as the kernel names them (/proc/cpuinfo `flags` or `Features`), lower case. */
  flags: ReadonlySet<string>;
  logicalCores: number;
  /** Distinct (package, core) pairs; equals logicalCores when the kernel does not say. */
  physicalCores: number;
}

/** The feature flags that decide precision and kernels, in the order `adapterkit info` prints them. */
export const RELEVANT_FLAGS = ['avx2', 'fma', 'avx512f', 'avx512bw', 'avx512vl', 'avx512_bf16', 'amx_bf16', 'amx_tile', 'avx512_fp16', 'bf16', 'asimd', 'sve'] as const;

let cached: CpuInfo | null = null;

/** Reads /proc/cpuinfo on Linux (flags, model, cores); elsewhere what `os.cpus()` tells. Cached. */
export function readCpuInfo(): CpuInfo {
  if (cached) return cached;
  let text = '';
  try {
    text = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // not Linux: no feature flags
  }
  cached = parseCpuInfo(text, arch(), cpus());
  return cached;
}

/** Parses the text of /proc/cpuinfo (x86 or Arm layout). Exported for tests. */
export function parseCpuInfo(text: string, machineArch = arch(), osCpus: { model: string }[] = []): CpuInfo {
  const flags = new Set<string>();
  const cores = new Set<string>();
  let model = '';
  let vendorId = '';
  let logical = 0;
  let pkg = '0';
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i < 0) continue;
    const key = line.slice(0, i).trim().toLowerCase();
    const value = line.slice(i + 1).trim();
    if (key === 'processor') logical++;
    else if (key === 'flags' || key === 'features') {
      for (const f of value.split(/\s+/)) if (f) flags.add(f.toLowerCase());
    } else if ((key === 'model name' || key === 'cpu model') && !model) model = value;
    else if (key === 'vendor_id' && !vendorId) vendorId = value;
    else if (key === 'cpu implementer' && !vendorId) vendorId = `arm:${value}`;
    else if (key === 'physical id') pkg = value;
    else if (key === 'core id') cores.add(`${pkg}:${value}`);
  }
  if (!model) model = osCpus[0]?.model?.trim() || 'unknown CPU';
  if (!logical) logical = Math.max(1, osCpus.length);
  const vendor: CpuInfo['vendor'] = /GenuineIntel/i.test(vendorId) ? 'intel'
    : /AuthenticAMD|HygonGenuine/i.test(vendorId) ? 'amd'
    : /Apple/i.test(model) ? 'apple'
    : vendorId.startsWith('arm:') || machineArch === 'arm64' ? 'arm' : 'other';
  return { model, vendor, arch: machineArch, flags, logicalCores: logical, physicalCores: cores.size || logical };
}

export type ComputeDtype = 'float32' | 'bfloat16' | 'float16';

export interface DtypeChoice {
  dtype: ComputeDtype;
  /** One line: which features decided it. */
  reason: string;
  /** True when features alone do not settle it and a timing probe should (see `probeNeeded`). */
  ambiguous: boolean;
}

/**
 * The compute dtype `auto` picks for a device. bfloat16 only where the hardware multiplies it
 * natively: AMX (Sapphire Rapids and later: 700+ GFLOP/s on 2 cores, measured) or an Arm core with
 * the BF16 extension; a CPU without them emulates bf16 at a few GFLOP/s (4.8 measured on an AVX2
 * EPYC, against 128 for float32), so float32 there. AVX512_BF16 without AMX (Cooper Lake, Zen 4) has
 * native dot products but oneDNN's gain over float32 varies by shape: ambiguous, settled by a probe.
 * On CUDA: bfloat16 where the GPU supports it (compute capability 8.0+), else float16.
 */
export function chooseDtype(cpu: CpuInfo, device: { kind: 'cpu' } | { kind: 'cuda'; bf16: boolean } = { kind: 'cpu' }): DtypeChoice {
  if (device.kind === 'cuda') {
    return device.bf16
      ? { dtype: 'bfloat16', reason: 'CUDA device with native bfloat16 (compute capability >= 8.0)', ambiguous: false }
      : { dtype: 'float16', reason: 'CUDA device without bfloat16: float16', ambiguous: false };
  }
  const f = cpu.flags;
  if (f.has('amx_bf16')) return { dtype: 'bfloat16', reason: 'AMX (amx_bf16): bfloat16 matrix products run natively', ambiguous: false };
  if (cpu.arch === 'arm64' && f.has('bf16')) return { dtype: 'bfloat16', reason: 'Arm BF16 extension: native bfloat16 dot products', ambiguous: false };
  if (f.has('avx512_bf16')) return { dtype: 'float32', reason: 'AVX512_BF16 without AMX: bfloat16 gain depends on the shapes', ambiguous: true };
  if (f.size === 0) return { dtype: 'float32', reason: 'CPU features unknown (no /proc/cpuinfo)', ambiguous: true };
  const simd = f.has('avx512f') ? 'AVX-512' : f.has('avx2') ? 'AVX2' : f.has('asimd') ? 'NEON' : 'SSE';
  return { dtype: 'float32', reason: `no native bfloat16 (${simd} only): bfloat16 would be emulated, float32 is fastest`, ambiguous: false };
}

/**
 * Settles an ambiguous choice with timings of the same product in both dtypes (seconds each):
 * bfloat16 must be clearly faster (1.3x) to be worth its lost precision.
 */
export function settleByProbe(choice: DtypeChoice, seconds: { float32: number; bfloat16: number }): DtypeChoice {
  const speedup = seconds.float32 / seconds.bfloat16;
  const measured = `measured bfloat16 ${speedup.toFixed(2)}x float32`;
  return speedup >= 1.3
    ? { dtype: 'bfloat16', reason: `${choice.reason}; ${measured}`, ambiguous: false }
    : { dtype: 'float32', reason: `${choice.reason}; ${measured}`, ambiguous: false };
}

/**
 * The OpenBLAS kernel set to force, or null to leave OpenBLAS's own detection alone. OpenBLAS 0.3.21
 * (Debian 12) does not know CPUs newer than its release and falls back to its generic "Prescott"
 * SSE3 kernels: on an Emerald Rapids VM we measured float32 GEMM at 56 GFLOP/s with the detected
 * kernels and 222 with SkylakeX's. The forced set is the newest family every such CPU runs: SkylakeX
 * for AVX-512 (F, BW, VL, DQ), Zen or Haswell for AVX2 + FMA. Only x86 Linux; never on Arm.
 */
export function blasCoreType(cpu: CpuInfo): string | null {
  if (cpu.arch !== 'x64') return null;
  const f = cpu.flags;
  if (['avx512f', 'avx512bw', 'avx512vl', 'avx512dq'].every((x) => f.has(x))) return 'SkylakeX';
  if (f.has('avx2') && f.has('fma')) return cpu.vendor === 'amd' ? 'Zen' : 'Haswell';
  return null;
}
