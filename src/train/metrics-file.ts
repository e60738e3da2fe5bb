// metrics.jsonl on resume. A run killed after its last checkpoint has logged steps the resumed run
// will log again; the file is cut back to the checkpoint's step (and a half-written last line is
// dropped) so that each step appears once. The rewrite is atomic: a kill during it leaves the old file.
import { existsSync, readFileSync } from 'node:fs';
import { writeFileAtomic } from '../io/atomic.js';

/** Keeps the lines of `file` whose step is at most `step`; returns how many lines were dropped. */
export function truncateMetrics(file: string, step: number): number {
  if (!existsSync(file)) return 0;
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim() !== '');
  const kept = lines.filter((l) => {
    try {
      const r = JSON.parse(l) as { step?: unknown };
      return typeof r.step === 'number' && r.step <= step;
    } catch {
      return false;  // a line cut short by the kill
    }
  });
  if (kept.length !== lines.length) writeFileAtomic(file, new TextEncoder().encode(kept.map((l) => l + '\n').join('')));
  return lines.length - kept.length;
}
