/** Cumulative counts the dashboard draws rates from, read once a second. */
export interface Tallies {
  /** messages routed, by ingress protocol */
  received: Record<string, number>;
  /** messages routed, by winning rule ("default" when none matched) */
  routes: Record<string, number>;
  /** refusals answered, all protocols */
  rejected: number;
  /** calls a target completed plus publishes to subscribers */
  delivered: number;
}

/** What happened in one interval between two samples. */
export interface HistoryPoint {
  /** ms since epoch at the end of the interval */
  t: number;
  /** the interval's length in ms */
  dt: number;
  received: Record<string, number>;
  rejected: number;
  delivered: number;
}

/**
 * The last few minutes of the gateway's counters as per-interval counts, kept on the server so a
 * dashboard opened now draws the minutes before it too. Pure: the admin listener samples it once
 * a second, a test calls `sample` with the times it likes.
 */
export class History {
  readonly #capacity: number;
  readonly #points: HistoryPoint[] = [];
  /** per-rule counts of the same intervals, newest last, for match rates */
  readonly #routes: { dt: number; counts: Record<string, number> }[] = [];
  #last: { t: number; tallies: Tallies } | undefined;

  /** `capacity`: how many intervals are kept. */
  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  sample(t: number, tallies: Tallies): void {
    const last = this.#last;
    this.#last = { t, tallies };
    if (!last || t <= last.t) return;
    this.#points.push({
      t,
      dt: t - last.t,
      received: delta(tallies.received, last.tallies.received),
      // A lane replaced by a reload counts from zero again: its sum may drop.
      rejected: Math.max(0, tallies.rejected - last.tallies.rejected),
      delivered: Math.max(0, tallies.delivered - last.tallies.delivered),
    });
    this.#routes.push({ dt: t - last.t, counts: delta(tallies.routes, last.tallies.routes) });
    if (this.#points.length > this.#capacity) {
      this.#points.shift();
      this.#routes.shift();
    }
  }

  /** oldest first */
  points(): readonly HistoryPoint[] {
    return this.#points;
  }

  /** Messages per second each rule matched over the newest `intervals` intervals. */
  routeRates(intervals: number): Record<string, number> {
    const recent = this.#routes.slice(-intervals);
    const ms = recent.reduce((sum, r) => sum + r.dt, 0);
    const out: Record<string, number> = {};
    for (const { counts } of recent) for (const [route, n] of Object.entries(counts)) out[route] = (out[route] ?? 0) + n;
    for (const route of Object.keys(out)) out[route] = ms > 0 ? (out[route]! * 1000) / ms : 0;
    return out;
  }
}

/** Only the labels that moved; a counter that restarted (a new lane) counts from zero. */
function delta(now: Record<string, number>, before: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [label, n] of Object.entries(now)) {
    const moved = n - (before[label] ?? 0);
    if (moved !== 0) out[label] = moved < 0 ? n : moved;
  }
  return out;
}
