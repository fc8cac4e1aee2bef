import * as hdr from 'hdr-histogram-js';

/** A minute in microseconds: a slower observation is clamped to it, not lost. */
const HIGHEST_US = 60_000_000;

/** Latency percentiles of recent observations, in seconds. */
export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

function histogram(): hdr.Histogram {
  // Two significant digits: percentiles within 1 %, a few kilobytes per histogram.
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: HIGHEST_US, numberOfSignificantValueDigits: 2, bitBucketSize: 32, useWebAssembly: false });
}

/**
 * Latencies of the last few seconds by label (a protocol, a target), in HDR histograms: one per
 * second, merged when read. What matters during an incident is now, so old seconds leave the
 * window as `rotate()` moves on; the caller rotates once a second.
 */
export class LatencyWindow {
  readonly #slots: number;
  readonly #series = new Map<string, hdr.Histogram[]>();
  readonly #merged = histogram();
  #current = 0;

  /** `seconds`: how many one-second slots the window holds, the current one included. */
  constructor(seconds: number) {
    this.#slots = seconds;
  }

  record(label: string, seconds: number): void {
    let slots = this.#series.get(label);
    if (!slots) {
      slots = Array.from({ length: this.#slots }, histogram);
      this.#series.set(label, slots);
    }
    slots[this.#current]!.recordValue(Math.min(HIGHEST_US, Math.max(1, Math.round(seconds * 1e6))));
  }

  /** Starts the next second; the oldest one's observations leave the window. */
  rotate(): void {
    this.#current = (this.#current + 1) % this.#slots;
    for (const slots of this.#series.values()) slots[this.#current]!.reset();
  }

  /** Per label with observations in the window. */
  percentiles(): Record<string, Percentiles> {
    const out: Record<string, Percentiles> = {};
    for (const [label, slots] of this.#series) {
      const merged = this.#merged;
      merged.reset();
      for (const slot of slots) merged.add(slot);
      if (merged.totalCount === 0) continue;
      const at = (percentile: number) => merged.getValueAtPercentile(percentile) / 1e6;
      out[label] = { count: merged.totalCount, p50: at(50), p90: at(90), p99: at(99), max: merged.maxValue / 1e6 };
    }
    return out;
  }
}
