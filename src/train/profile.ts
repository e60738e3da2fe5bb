// `train --profile`: where a run's time went, per phase of the loop (data, forward + backward,
// optimizer, evaluation, checkpoints) and, inside libtorch, per op family (matrix products,
// elementwise math, copies and casts, ...), so a slow run says what to fix.
import { startOpProfiler, stopOpProfiler, groupByFamily, type OpTime } from '../tensor/index.js';

export class PhaseClock {
  private readonly seconds = new Map<string, number>();
  private readonly t0 = performance.now();

  constructor(readonly enabled: boolean) {
    if (enabled) startOpProfiler();
  }

  /** Runs `fn`, charging its wall time to `phase` (just runs it when profiling is off). */
  time<T>(phase: string, fn: () => T): T {
    if (!this.enabled) return fn();
    const t = performance.now();
    try {
      return fn();
    } finally {
      this.seconds.set(phase, (this.seconds.get(phase) ?? 0) + (performance.now() - t) / 1000);
    }
  }

  /** Stops the op profiler and returns the report's lines (empty when profiling is off). */
  report(): string[] {
    if (!this.enabled) return [];
    const ops = stopOpProfiler();
    const wall = (performance.now() - this.t0) / 1000;
    const phases = [...this.seconds].sort((a, b) => b[1] - a[1]);
    const accounted = phases.reduce((s, [, v]) => s + v, 0);
    const lines = [`profile: ${wall.toFixed(1)} s of training wall time`];
    for (const [name, v] of phases) lines.push(`  ${name.padEnd(26)} ${v.toFixed(2).padStart(8)} s  ${pct(v, wall)}`);
    lines.push(`  ${'other (logging, yields)'.padEnd(26)} ${(wall - accounted).toFixed(2).padStart(8)} s  ${pct(wall - accounted, wall)}`);
    const inTorch = ops.reduce((s, o) => s + o.seconds, 0);
    lines.push(`  libtorch ops (self time, ${inTorch.toFixed(1)} s in all):`);
    for (const f of groupByFamily(ops)) lines.push(`    ${f.name.padEnd(28)} ${f.seconds.toFixed(2).padStart(8)} s  ${pct(f.seconds, inTorch)}  ${f.calls} calls`);
    lines.push('  top ops:');
    for (const o of ops.slice(0, 8) as OpTime[]) lines.push(`    ${o.name.padEnd(28)} ${o.seconds.toFixed(2).padStart(8)} s  ${o.calls} calls`);
    return lines;
  }
}

const pct = (v: number, of: number) => `${((100 * v) / Math.max(1e-9, of)).toFixed(1).padStart(5)}%`;
