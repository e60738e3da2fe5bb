// Consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with
// Bounded Loads", SODA 2018) for the router: each replica sits on a ring at many virtual points; a key
// belongs to the first replica clockwise from its hash, and with the load bound a replica may hold at
// most ceil((1 + eps) * m / n) of the m requests in flight (the new one counted), else the key walks
// on clockwise. Removing a replica moves only its own keys: everyone else's first point is unchanged.
import { createHash } from 'node:crypto';

/** The first 32 bits of MD5: well spread and the same on every platform (speed is not an issue here). */
export function hash32(s: string): number {
  return createHash('md5').update(s).digest().readUInt32BE(0);
}

export class HashRing {
  /** Ring points sorted by position; `node` is the replica each belongs to. */
  private points: { pos: number; node: string }[] = [];
  private readonly nodeSet = new Set<string>();

  /** `vnodes` virtual points per replica: 100 keep the shares within a few percent of 1/n. */
  constructor(nodes: Iterable<string> = [], readonly vnodes = 100) {
    for (const n of nodes) this.add(n);
  }

  get nodes(): string[] {
    return [...this.nodeSet];
  }

  add(node: string): void {
    if (this.nodeSet.has(node)) return;
    this.nodeSet.add(node);
    for (let i = 0; i < this.vnodes; i++) this.points.push({ pos: hash32(`${node}#${i}`), node });
    // Ties (two points at one position) are broken by name, so the ring does not depend on insertion order.
    this.points.sort((a, b) => a.pos - b.pos || (a.node < b.node ? -1 : a.node > b.node ? 1 : 0));
  }

  remove(node: string): void {
    if (!this.nodeSet.delete(node)) return;
    this.points = this.points.filter((p) => p.node !== node);
  }

  /** Every replica once, in the order a key meets them walking clockwise from its hash. */
  walk(key: string): string[] {
    const n = this.points.length;
    if (!n) return [];
    const h = hash32(key);
    let lo = 0;
    let hi = n;  // first point with pos >= h (n: wrap to 0)
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.points[mid]!.pos < h) lo = mid + 1;
      else hi = mid;
    }
    const out: string[] = [];
    const seen = new Set<string>();
    for (let k = 0; k < n && seen.size < this.nodeSet.size; k++) {
      const node = this.points[(lo + k) % n]!.node;
      if (!seen.has(node)) {
        seen.add(node);
        out.push(node);
      }
    }
    return out;
  }

  /** The replica a key belongs to with no load bound (null: empty ring). */
  owner(key: string): string | null {
    return this.walk(key)[0] ?? null;
  }
}

/**
 * The load bound of Mirrokni et al.: with `inFlight` requests already placed on `replicas` replicas,
 * the next one may go to a replica holding fewer than ceil((1 + eps) * (inFlight + 1) / replicas).
 * Since the bound is at least the average, some replica is always under it.
 */
export function loadBound(inFlight: number, replicas: number, eps: number): number {
  return Math.ceil((1 + eps) * (inFlight + 1) / Math.max(1, replicas));
}

/**
 * Picks from `order` (a key's ring walk, only the replicas that may take it) the first one under the
 * load bound, preferring one for which `preferred` holds (the adapter is already resident there).
 * Null when `order` is empty.
 */
export function pickBounded(order: string[], load: (node: string) => number, eps: number, preferred: (node: string) => boolean = () => false): string | null {
  const total = order.reduce((s, n) => s + load(n), 0);
  const cap = loadBound(total, order.length, eps);
  const open = order.filter((n) => load(n) < cap);
  return open.find(preferred) ?? open[0] ?? null;
}
