import type { BenchResult, ServerMedians } from './types.js';

/** The middle value; the mean of the two middle ones for an even count. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** One server's runs of a comparison, each figure the median over the runs that have it. */
export function mediansOf(runs: BenchResult[]): ServerMedians {
  const m = (pick: (r: BenchResult) => number | undefined) => {
    const values = runs.map(pick).filter((v): v is number => v !== undefined && Number.isFinite(v));
    return values.length ? median(values) : null;
  };
  return {
    runs: runs.length,
    receivedPerS: m((r) => r.receivedPerS) ?? 0,
    sentPerS: m((r) => r.sentPerS) ?? 0,
    p50: m((r) => r.latency.p50) ?? 0,
    p99: m((r) => r.latency.p99) ?? 0,
    p999: m((r) => r.latency.p999) ?? 0,
    peakRssBytes: m((r) => r.serverProcess?.peakRssBytes),
    rssPerConnectionBytes: m((r) => r.connections?.rssPerConnectionBytes),
    cpuUsPerMessage: m((r) => r.cpuUsPerMessage),
    lost: m((r) => (r.latencyKind === 'delivery' ? Math.max(0, r.expected - r.received) : 0)) ?? 0,
    errors: m((r) => r.errors) ?? 0,
    connected: m((r) => r.connections?.connected),
    wanted: m((r) => r.connections?.wanted),
    dropped: m((r) => r.connections?.dropped),
  };
}
