// The output folder of a training run, decided before anything is loaded. A new run never lands in
// an existing run's folder (its latest, best/, final/ would be replaced and metrics.jsonl would mix
// two runs) unless `overwrite` says so, as HF's overwrite_output_dir; then the earlier run's outputs
// are removed first, and only those: other files in the folder are left as they are. A resume needs
// a checkpoint to resume from. Skipped data rows are reported here too, counted by reason.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { prepareOutputDir, removeStaleTemporaries } from '../io/output-dir.js';
import type { SkipReport } from '../data/index.js';
import { findResumeCheckpoint } from './checkpoint.js';

/** What a training run writes into its output folder (and all that --overwrite removes). */
export const RUN_OUTPUTS = ['checkpoints', 'best', 'final', 'metrics.jsonl', 'curve.html', 'run_config.json'] as const;

export function prepareRunOutput(output: string, model: string, o: { resume?: boolean; overwrite?: boolean }, log: (s: string) => void): void {
  if (o.resume && o.overwrite) throw new Error('--resume and --overwrite contradict each other: resume continues the run in --output, overwrite replaces it');
  if (o.resume) {
    const found = findResumeCheckpoint(join(output, 'checkpoints'));
    if (!found) {
      throw new Error(`--resume: ${output} has no checkpoint to resume from (no complete step-* folder in ${join(output, 'checkpoints')}); drop --resume to start a new run`);
    }
    // A killed run may have left temporaries beside any of its outputs.
    for (const d of ['', 'checkpoints', 'final', 'best']) removeStaleTemporaries(join(output, d));
    return;
  }
  const had = prepareOutputDir(output, { flag: '--output', force: o.overwrite, forceFlag: '--overwrite (or --resume to continue the run there)', inputs: [{ flag: '--model', path: model }] });
  if (had) {
    const removed = RUN_OUTPUTS.filter((f) => {
      const p = join(output, f);
      try {
        rmSync(p, { recursive: true });
        return true;
      } catch {
        return false;
      }
    });
    if (removed.length) log(`--overwrite: removed the earlier run's ${removed.join(', ')} from ${output}`);
  }
}

/** One line per data file with skipped rows: the exact count, by reason, and the first place. */
export function reportSkipped(file: string, reports: SkipReport[], log: (s: string) => void): void {
  const total = reports.reduce((n, r) => n + r.skipped, 0);
  if (!total) return;
  const by: Record<string, number> = {};
  for (const r of reports) for (const [k, v] of Object.entries(r.byReason ?? {})) by[k] = (by[k] ?? 0) + v;
  const kinds = Object.entries(by).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${v} ${k}`);
  const first = reports.flatMap((r) => r.reasons)[0];
  log(`skipped ${total} bad rows in ${file}: ${kinds.join(', ')}${first ? ` (first: ${first})` : ''}`);
}
