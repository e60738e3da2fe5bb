// Intra-op threads per serving step, measured rather than guessed. A decode step of a small model is
// hundreds of tiny ops: on the 2-core Xeon this was written on, two OpenMP threads made the embedded
// model's 32-row decode step 60% slower than one (10.4 ms against 6.3 ms: waking the second thread
// costs more than it saves), while a GPT-2-small step, whose LM head is a 1 GMAC product, gains from
// every core. Where the line falls depends on the CPU, the model and the batch, so the engine asks
// this tuner: steps are grouped by phase and size (a power-of-two bucket of tokens), each group tries
// every candidate count a few times, keeps the one with the lowest median time per token, and tries
// again now and then (the machine's load changes). Candidates: 1, 2, 4, ... up to the threads the
// program configured (the most the engine may use). With one candidate there is nothing to tune.

export interface ThreadTunerOptions {
  /** Measured steps per candidate before choosing (default 5). */
  trials?: number;
  /** Steps of a group after which it is measured again (default 2000). */
  revisitSteps?: number;
  /** Only `max`: no tuning (a thread count the user fixed). */
  fixed?: boolean;
}

interface Group {
  samples: Map<number, number[]>;
  chosen: number | null;
  since: number;
}

export class ThreadTuner {
  readonly candidates: number[];
  private readonly groups = new Map<string, Group>();
  private readonly trials: number;
  private readonly revisit: number;

  constructor(readonly max: number, o: ThreadTunerOptions = {}) {
    if (!Number.isInteger(max) || max < 1) throw new RangeError(`ThreadTuner: max threads must be a positive integer, got ${max}`);
    const c: number[] = [];
    for (let n = 1; n < max && !o.fixed; n *= 2) c.push(n);
    c.push(max);
    this.candidates = c;
    this.trials = o.trials ?? 5;
    this.revisit = o.revisitSteps ?? 2000;
    if (!Number.isInteger(this.trials) || this.trials < 1) throw new RangeError(`ThreadTuner: trials must be a positive integer, got ${this.trials}`);
  }

  /** The group of a step: its phase and tokens (rows x positions) rounded up to a power of two. */
  static key(phase: 'prefill' | 'decode', tokens: number): string {
    return `${phase}:${2 ** Math.ceil(Math.log2(Math.max(1, tokens)))}`;
  }

  /** Threads for the next step of this group: the chosen count, or the next candidate to measure. */
  pick(key: string): number {
    if (this.candidates.length === 1) return this.max;
    let g = this.groups.get(key);
    if (!g) this.groups.set(key, (g = { samples: new Map(this.candidates.map((n) => [n, []])), chosen: null, since: 0 }));
    if (g.chosen !== null) {
      if (g.since++ < this.revisit) return g.chosen;
      g.chosen = null;
      for (const s of g.samples.values()) s.length = 0;
    }
    // Round-robin over the candidates, the least-measured first (so drift hits every candidate alike).
    let next = this.candidates[0]!;
    for (const n of this.candidates) if (g.samples.get(n)!.length < g.samples.get(next)!.length) next = n;
    return next;
  }

  /** Records a step of `tokens` tokens that took `ms` with `threads` threads. */
  record(key: string, threads: number, ms: number, tokens: number): void {
    const g = this.groups.get(key);
    if (!g || g.chosen !== null) return;
    const s = g.samples.get(threads);
    if (!s || !(ms >= 0) || tokens < 1) return;
    s.push(ms / tokens);
    if ([...g.samples.values()].some((x) => x.length < this.trials)) return;
    let best = this.candidates[0]!;
    for (const n of this.candidates) if (median(g.samples.get(n)!) < median(g.samples.get(best)!)) best = n;
    g.chosen = best;
    g.since = 0;
  }

  /** The count chosen for each group measured so far (for /v1/stats and the benchmarks). */
  chosen(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, g] of [...this.groups].sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))) if (g.chosen !== null) out[k] = g.chosen;
    return out;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}
