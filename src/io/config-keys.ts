// Unknown keys in configuration objects. A misspelt key ("learningRate" for "lr") silently keeps
// the default and trains something else than asked, so typed configs refuse keys they do not know,
// naming the closest known key. Shared by every config that is data (train runs, adapter configs).

/** Levenshtein distance between `a` and `b`, case-insensitive, stopping early past `limit`. */
export function editDistance(a: string, b: string, limit = Infinity): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  if (Math.abs(a.length - b.length) > limit) return limit + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      const v = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      cur.push(v);
      best = Math.min(best, v);
    }
    if (best > limit) return limit + 1;
    prev = cur;
  }
  return prev[b.length]!;
}

const norm = (s: string) => s.toLowerCase().replace(/[-_]/g, '');

/**
 * The known key closest to `key`, or null when none is close: same letters ignoring case, "_" and
 * "-" (learning_rate / learningRate), then edit distance up to about a third of the length, then a
 * known key that contains the word or is contained in it ("rank" -> "r" is not guessed).
 */
export function suggestKey(key: string, known: readonly string[], aliases: Readonly<Record<string, string>> = {}): string | null {
  const alias = aliases[key] ?? aliases[norm(key)];
  if (alias !== undefined) return alias;
  const exact = known.find((k) => norm(k) === norm(key));
  if (exact !== undefined) return exact;
  const limit = Math.max(1, Math.floor(key.length / 3));
  let best: string | null = null;
  let bestD = limit + 1;
  for (const k of known) {
    const d = editDistance(norm(key), norm(k), limit);
    if (d < bestD) { best = k; bestD = d; }
  }
  return best;
}

/**
 * Throws when `obj` has keys outside `known`: `${where}: unknown key "learningRate" (did you mean
 * "lr"?)`, listing the known keys when nothing is close. `aliases` maps common names from other
 * tools to ours (e.g. {learning_rate: 'lr'}).
 */
export function rejectUnknownKeys(obj: object, known: readonly string[], where: string, aliases: Readonly<Record<string, string>> = {}): void {
  const unknown = Object.keys(obj).filter((k) => !known.includes(k));
  if (!unknown.length) return;
  const parts = unknown.map((k) => {
    const s = suggestKey(k, known, aliases);
    return s ? `"${k}" (did you mean "${s}"?)` : `"${k}"`;
  });
  const anyHint = unknown.some((k) => suggestKey(k, known, aliases) !== null);
  throw new Error(`${where}: unknown key${unknown.length > 1 ? 's' : ''} ${parts.join(', ')}${anyHint ? '' : `; known keys: ${known.join(', ')}`}`);
}
