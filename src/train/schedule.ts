// Learning-rate schedules with warm-up, as HF transformers' get_*_schedule_with_warmup:
// warm-up rises linearly from 0; then constant, linear decay to 0, or half-cosine to 0.
export type ScheduleKind = 'constant' | 'linear' | 'cosine';

export interface Schedule {
  kind: ScheduleKind;
  peak: number;
  warmupSteps: number;
  totalSteps: number;
}

/** The learning rate for optimizer step `step` (0-based: the first update uses lrAt(0)). */
export function lrAt(s: Schedule, step: number): number {
  if (step < s.warmupSteps) return (s.peak * step) / Math.max(1, s.warmupSteps);
  if (s.kind === 'constant') return s.peak;
  const progress = (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps);
  if (s.kind === 'linear') return s.peak * Math.max(0, 1 - progress);
  return s.peak * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}
