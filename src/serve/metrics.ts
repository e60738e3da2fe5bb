// Prometheus text exposition for the server's figures: counters, gauges and latency histograms.
export class Histogram {
  private readonly counts: number[];
  private sum = 0;
  private n = 0;
  constructor(readonly bounds: number[]) {
    this.counts = new Array<number>(bounds.length).fill(0);
  }
  observe(v: number): void {
    for (let i = 0; i < this.bounds.length; i++) if (v <= this.bounds[i]!) this.counts[i]!++;
    this.sum += v;
    this.n++;
  }
  /** Prometheus lines for `name` (cumulative buckets, +Inf, sum, count). */
  lines(name: string, help: string): string[] {
    const out = [`# HELP ${name} ${help}`, `# TYPE ${name} histogram`];
    this.bounds.forEach((b, i) => out.push(`${name}_bucket{le="${b}"} ${this.counts[i]}`));
    out.push(`${name}_bucket{le="+Inf"} ${this.n}`, `${name}_sum ${this.sum}`, `${name}_count ${this.n}`);
    return out;
  }
}

export function metric(name: string, type: 'counter' | 'gauge', help: string, value: number, labels: Record<string, string> = {}): string[] {
  const l = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',');
  return [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}${l ? `{${l}}` : ''} ${value}`];
}

/** One metric family with a series per label set (HELP and TYPE once, as Prometheus wants). */
export function metricFamily(name: string, type: 'counter' | 'gauge', help: string, series: [Record<string, string>, number][]): string[] {
  const out = [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`];
  for (const [labels, value] of series) {
    const l = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',');
    out.push(`${name}${l ? `{${l}}` : ''} ${value}`);
  }
  return out;
}
