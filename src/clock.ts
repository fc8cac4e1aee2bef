/**
 * Time as the delivery and protection code sees it. Everything that waits or compares
 * timestamps there (backoff, pacing, expiry, half-open, rate limits) asks its clock, so a test
 * can hand in a fake one and move time forward instead of sleeping and racing the machine.
 */
export interface Clock {
  /** ms since the epoch */
  now(): number;
  setTimeout(callback: () => void, ms: number): Timer;
  clearTimeout(timer: Timer): void;
}

/** What `Clock.setTimeout` returns; only the clock that made it can clear it. */
export interface Timer {
  /** lets the process exit while this timer waits */
  unref(): unknown;
}

/** The process's own clock: the default everywhere a clock can be passed. */
export const realClock: Clock = {
  now: () => Date.now(),
  // Through the globals on every call, so a test that fakes the global timers fakes this clock too.
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (timer) => clearTimeout(timer as NodeJS.Timeout),
};
