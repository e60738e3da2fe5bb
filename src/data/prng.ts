// A small seeded PRNG for data order (never Math.random, so a run is reproducible from its seed and
// a resumed run sees the same order). mulberry32 (Tommy Ettinger, public domain): 32-bit state,
// passes PractRand to 2^32 outputs — plenty for shuffling; not for cryptography.

/** A generator of floats in [0, 1) from a 32-bit seed. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Hashes integers into one 32-bit seed (murmur3's finalizer per part), so that (seed, epoch) pairs
 * give unrelated streams: seed+epoch would make (1, 2) and (2, 1) shuffle alike.
 */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    if (!Number.isSafeInteger(p)) throw new Error(`seed parts must be safe integers, got ${p}`);
    // Both 32-bit halves, so seeds past 2^32 still differ.
    for (const w of [p >>> 0, Math.floor(p / 4294967296) >>> 0]) {
      h = Math.imul(h ^ w, 0x85ebca6b);
      h ^= h >>> 13;
      h = Math.imul(h, 0xc2b2ae35);
      h ^= h >>> 16;
    }
  }
  return h >>> 0;
}

/** An integer in [0, n); the float's 2^-32 resolution makes the bias negligible for data sizes. */
export function randInt(rand: () => number, n: number): number {
  return Math.floor(rand() * n);
}

/** Fisher–Yates, in place; returns the array. */
export function shuffleInPlace<T>(a: T[], rand: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = randInt(rand, i + 1);
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

/** A random permutation of 0..n-1. */
export function permutation(n: number, rand: () => number): number[] {
  return shuffleInPlace(Array.from({ length: n }, (_, i) => i), rand);
}
