import { createRequire } from 'node:module';

export interface PromSample {
  labels?: Record<string, string>;
  value?: string;
  buckets?: Record<string, string>;
  count?: string;
  sum?: string;
}

export interface PromFamily {
  name: string;
  help: string;
  type: string;
  metrics: PromSample[];
}

const require = createRequire(import.meta.url);
/** A third-party Prometheus text-format parser: if our exposition were malformed, it would throw. */
const parsePrometheusTextFormat = require('parse-prometheus-text-format') as (text: string) => PromFamily[];

export interface Scrape {
  families: Map<string, PromFamily>;
  text: string;
}

export async function scrape(adminUrl: string, headers: Record<string, string> = {}): Promise<Scrape> {
  const response = await fetch(`${adminUrl}/metrics`, { headers });
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
  return parseScrape(await response.text());
}

/** /metrics text as `scrape` returns it, for a test that fetched it itself (over TLS, say). */
export function parseScrape(text: string): Scrape {
  return { text, families: new Map(parsePrometheusTextFormat(text).map((family) => [family.name, family])) };
}

/** The value of the counter or gauge sample whose labels include all of `labels`; 0 when there is none. */
export function sample({ families }: Scrape, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(name);
  const found = family?.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
  return Number(found?.value ?? 0);
}

/**
 * A histogram's observation count, read from its `_count` line (the parser above validates the
 * text but drops a labelled histogram's count and labels).
 */
export function histogramCount({ text }: Scrape, name: string, labels: Record<string, string>): number {
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_count{`)) continue;
    if (Object.entries(labels).every(([k, v]) => line.includes(`${k}="${v}"`))) return Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return 0;
}
