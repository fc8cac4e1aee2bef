import * as hdr from 'hdr-histogram-js';
import type { LatencySummary } from './types.js';

/** An hour in microseconds: anything slower is clamped, not lost. */
const HIGHEST_US = 3_600_000_000;

/**
 * Latencies in microseconds in an HDR histogram (3 significant digits), small enough to travel
 * from a worker process to the parent as compressed base64.
 *
 * Coordinated omission: in open-loop runs every message is stamped with the time it was scheduled
 * to go, not the time it went, so a sender that fell behind (because the server stalled it) adds
 * the wait to every message it delayed, as a user on the schedule would have seen it.
 */
export class LatencyHistogram {
  readonly #histogram: hdr.Histogram;

  constructor(histogram?: hdr.Histogram) {
    this.#histogram = histogram ?? hdr.build({
      lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, numberOfSignificantValueDigits: 3, useWebAssembly: false,
    });
  }

  static decode(encoded: string): LatencyHistogram {
    return new LatencyHistogram(hdr.decodeFromCompressedBase64(encoded, 32, false));
  }

  record(latencyUs: number): void {
    this.#histogram.recordValue(Math.min(HIGHEST_US, Math.max(1, Math.round(latencyUs))));
  }

  add(other: LatencyHistogram): void {
    this.#histogram.add(other.#histogram);
  }

  get count(): number {
    return this.#histogram.totalCount;
  }

  encode(): string {
    return hdr.encodeIntoCompressedBase64(this.#histogram);
  }

  summary(): LatencySummary {
    const h = this.#histogram;
    const ms = (us: number) => (h.totalCount === 0 ? 0 : us / 1000);
    return {
      count: h.totalCount,
      mean: ms(h.mean),
      p50: ms(h.getValueAtPercentile(50)),
      p90: ms(h.getValueAtPercentile(90)),
      p99: ms(h.getValueAtPercentile(99)),
      p999: ms(h.getValueAtPercentile(99.9)),
      max: ms(h.maxValue),
    };
  }
}
