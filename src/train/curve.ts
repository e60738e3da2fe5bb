// The loss/eval curve as a self-contained HTML page (inline SVG, no scripts or network), written
// atomically next to metrics.jsonl.
import { writeFileAtomic } from '../io/atomic.js';

export interface CurvePoint { step: number; value: number }

function escape(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

function chart(title: string, series: { name: string; color: string; points: CurvePoint[] }[]): string {
  const W = 720, H = 280, L = 56, R = 16, T = 28, B = 36;
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.value));
  if (!all.length) return `<h2>${escape(title)}</h2><p>no data</p>`;
  const x0 = Math.min(...all.map((p) => p.step)), x1 = Math.max(...all.map((p) => p.step), x0 + 1);
  let y0 = Math.min(...all.map((p) => p.value)), y1 = Math.max(...all.map((p) => p.value));
  if (y1 - y0 < 1e-9) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x: number) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y: number) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => y0 + f * (y1 - y0));
  const grid = ticks.map((v) => `<line x1="${L}" x2="${W - R}" y1="${sy(v).toFixed(1)}" y2="${sy(v).toFixed(1)}" stroke="#e5e5e5"/><text x="${L - 6}" y="${(sy(v) + 4).toFixed(1)}" text-anchor="end" font-size="11">${v.toPrecision(3)}</text>`).join('');
  const lines = series.map((s) => {
    const pts = s.points.filter((p) => Number.isFinite(p.value)).map((p) => `${sx(p.step).toFixed(1)},${sy(p.value).toFixed(1)}`).join(' ');
    const dots = s.points.length <= 60 ? s.points.map((p) => `<circle cx="${sx(p.step).toFixed(1)}" cy="${sy(p.value).toFixed(1)}" r="2.5" fill="${s.color}"/>`).join('') : '';
    return `<polyline fill="none" stroke="${s.color}" stroke-width="1.8" points="${pts}"/>${dots}`;
  }).join('');
  const legend = series.map((s, i) => `<rect x="${L + i * 180}" y="8" width="12" height="3" fill="${s.color}"/><text x="${L + 16 + i * 180}" y="13" font-size="12">${escape(s.name)}</text>`).join('');
  return `<h2>${escape(title)}</h2><svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">${grid}<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#999"/><text x="${(W + L) / 2}" y="${H - 8}" text-anchor="middle" font-size="12">step (${x0} to ${x1})</text>${lines}${legend}</svg>`;
}

export function writeCurveHtml(path: string, title: string, train: CurvePoint[], evalLoss: CurvePoint[], evalMetric: { name: string; points: CurvePoint[] } | null): void {
  // Per-step losses are noisy: draw them faintly, with an exponential moving average on top.
  let ema = NaN;
  const smooth = train.map((p) => ({ step: p.step, value: (ema = Number.isNaN(ema) ? p.value : 0.9 * ema + 0.1 * p.value) }));
  const body = [
    chart('loss', [
      { name: 'train loss (per step)', color: '#bfdbfe', points: train },
      { name: 'train loss (smoothed)', color: '#2563eb', points: smooth },
      { name: 'eval loss', color: '#dc2626', points: evalLoss },
    ]),
    evalMetric ? chart(evalMetric.name, [{ name: `eval ${evalMetric.name}`, color: '#16a34a', points: evalMetric.points }]) : '',
  ].join('\n');
  const html = `<!doctype html><html><head><meta charset="utf-8"><title>${escape(title)}</title><style>body{font-family:sans-serif;margin:24px;color:#111}h1{font-size:20px}h2{font-size:15px;margin:18px 0 4px}</style></head><body><h1>${escape(title)}</h1>${body}</body></html>\n`;
  writeFileAtomic(path, new TextEncoder().encode(html));
}
