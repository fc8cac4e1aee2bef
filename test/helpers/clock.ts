import { createClock } from '@sinonjs/fake-timers';
import type { Clock, Timer } from '../../src/clock.js';

/** A clock that moves only when a test moves it; nothing in the process's own timers is faked. */
export interface FakeClock extends Clock {
  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way, in order,
   * with pending promise callbacks run before each timer and after the last.
   */
  advance(ms: number): Promise<void>;
  /** runs pending promise callbacks without moving time */
  settle(): Promise<void>;
  /** timers waiting to fire */
  pending(): number;
}

export function fakeClock(start = 1_000_000): FakeClock {
  const clock = createClock(start);
  return {
    now: () => clock.now,
    // Under Node, fake-timers hands out timer objects shaped like Node's (unref included).
    setTimeout: (callback, ms) => clock.setTimeout(callback, ms) as Timer,
    clearTimeout: (timer) => clock.clearTimeout(timer as ReturnType<typeof clock.setTimeout>),
    advance: async (ms) => {
      await clock.tickAsync(ms);
    },
    settle: async () => {
      await clock.tickAsync(0);
    },
    pending: () => clock.countTimers(),
  };
}
