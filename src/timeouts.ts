/**
 * Waiting with a bound, the one way the gateway does it: a timer that is always cleared, so a
 * settled wait leaves nothing behind to keep the process or its memory alive.
 */

/** `work`'s outcome, or `timedOut()` thrown once `ms` have passed first. */
export function withTimeout<T>(work: Promise<T>, ms: number, timedOut: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut()), ms);
  });
  return Promise.race([work, expired]).finally(() => clearTimeout(timer));
}

/** Waits for `work` until `deadline` (ms since the epoch) at the latest; true when it finished in time. */
export function settledBy(work: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const expired = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), Math.max(0, deadline - Date.now()));
  });
  return Promise.race([work.then(() => true, () => true), expired]).finally(() => clearTimeout(timer));
}
