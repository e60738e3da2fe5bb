// The only module that touches the native addon (convention: only src/tensor/ talks to native/).
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { blasCoreType, readCpuInfo } from './cpu.js';

/** Opaque native tensor handle (a type-tagged N-API external). */
export type Handle = object & { readonly __handle: unique symbol };

// The addon's entries are typed loosely here and precisely in the Tensor API above it.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type NativeFn = (...args: any[]) => any;
export type NativeAddon = Record<string, NativeFn>;

function findAddon(): string {
  // dist/src/tensor/native.js -> <package root>/build/Release/adapterkit.node
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const p = join(dir, 'build', 'Release', 'adapterkit.node');
    if (existsSync(p)) return p;
    dir = dirname(dir);
  }
  throw new Error(
    'adapterkit: the native addon (build/Release/adapterkit.node) is not built.\n' +
      '  Build it with `npm install` (or `npx node-gyp rebuild`) in the adapterkit folder; it needs libtorch:\n' +
      '  `apt-get install -y libtorch-dev libopenblas0-pthread`, or LIBTORCH=/path/to/libtorch.',
  );
}

// OpenBLAS picks its kernels once, when the addon's libtorch loads it, from the CPU it detects or from
// OPENBLAS_CORETYPE. Older OpenBLAS builds misdetect newer CPUs and fall back to generic SSE3 kernels
// (4x slower float32 products, measured), so name the right kernel set first, unless the user did.
// This touches nothing else in the process: no threads, no allocator (see configureRuntime).
export const BLAS_CORETYPE_FORCED: string | null = (() => {
  if (process.env.OPENBLAS_CORETYPE) return null;
  const core = blasCoreType(readCpuInfo());
  if (core) process.env.OPENBLAS_CORETYPE = core;
  return core;
})();

// libtorch's intra-op pool (OpenMP) spin-waits between parallel regions by default, and on a machine
// with few cores those spinning threads take the cores from OpenBLAS's own threads and from the main
// thread: with passive waiting the demo's training steps ran 2.2x faster in float32 and 1.3x in bf16
// (2-core Xeon, measured; an AVX2 EPYC showed the same fight). Read once, when OpenMP loads, so it is
// set here, unless the user set it. It changes how our pool waits, nothing else in the process.
export const OMP_WAIT_POLICY_SET: boolean = (() => {
  if (process.env.OMP_WAIT_POLICY) return false;
  process.env.OMP_WAIT_POLICY = 'PASSIVE';
  return true;
})();

const require = createRequire(import.meta.url);
export const N: NativeAddon = require(findAddon()) as NativeAddon;
