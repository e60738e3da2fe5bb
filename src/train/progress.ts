// A progress bar for long work: step/total, a smoothed loss, tokens/s, ETA and peak RSS. On a terminal it
// redraws one line; elsewhere (CI, pipes) it prints a line every `every` steps.
export interface ProgressFields {
  step: number;
  total: number;
  loss?: number;
  lr?: number;
  tokPerSec?: number;
  extra?: string;
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  const h = Math.floor(m / 60);
  const ss = String(Math.floor(s % 60)).padStart(2, '0');
  return h ? `${h}:${String(m % 60).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

export class ProgressBar {
  private readonly start = Date.now();
  private readonly tty: boolean;
  private lastPrinted = -1;
  constructor(private readonly label: string, private readonly out: NodeJS.WriteStream = process.stderr, private readonly every = 10) {
    this.tty = Boolean(out.isTTY) && !process.env.CI;
  }
  update(f: ProgressFields): void {
    const frac = f.total > 0 ? Math.min(1, f.step / f.total) : 0;
    const elapsed = (Date.now() - this.start) / 1000;
    const eta = frac > 0 ? (elapsed * (1 - frac)) / frac : Infinity;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const parts = [
      `${this.label} ${bar} ${f.step}/${f.total}`,
      f.loss !== undefined ? `loss ${f.loss.toFixed(4)}` : '',
      f.lr !== undefined ? `lr ${f.lr.toExponential(2)}` : '',
      f.tokPerSec !== undefined ? `${f.tokPerSec.toFixed(0)} tok/s` : '',
      `${fmtTime(elapsed)}<${fmtTime(eta)}`,
      // The process's peak resident memory so far (what a quantized base saves shows here).
      `peak RSS ${Math.round(process.resourceUsage().maxRSS / 1024)} MiB`,
      f.extra ?? '',
    ].filter(Boolean);
    const line = parts.join('  ');
    if (this.tty) this.out.write(`\r${line}\x1b[K`);
    else if (f.step === f.total || f.step - this.lastPrinted >= this.every) {
      this.out.write(line + '\n');
      this.lastPrinted = f.step;
    }
  }
  done(): void {
    if (this.tty) this.out.write('\n');
  }
}
