import { realClock, type Clock } from '../clock.js';
import { GatewayError } from '../errors.js';

/** `auth.backoff`, in ms. */
export interface BackoffPolicy {
  after: number;
  initial: number;
  max: number;
}

/** `auth.verification`. */
export interface VerificationLimits {
  concurrency: number;
  maxPending: number;
  maxPendingPerIp: number;
}

/** What the guard counts, for metrics and /admin/stats. */
export interface GuardCounters {
  /** credential checks refused without checking: their address was backing off */
  backedOff: number;
  /** addresses that started backing off */
  backoffsStarted: number;
  /** checks refused because too many from their address were waiting */
  perIpQueueFull: number;
  /** checks refused because the queue was full */
  queueFull: number;
}

interface Failures {
  count: number;
  /** ms since epoch; 0 while not backing off */
  until: number;
  /** ms since epoch of the last failure */
  last: number;
}

interface Waiting {
  run: () => void;
}

/** One address's checks: waiting in order, and how many run. */
interface Line {
  waiting: Waiting[];
  running: number;
  /** when its last check started, in checks started so far; 0 = never */
  lastServed: number;
}

/** addresses whose failures are remembered; the oldest are forgotten first past it */
export const MAX_TRACKED_ADDRESSES = 10_000;

/**
 * What stands between a flood of bad credentials and everyone else, for the gateway's lifetime
 * (reloads keep it):
 * - failed checks per remote address, and a back-off that doubles from `initial` to `max` once
 *   `after` have failed: while it lasts, that address's credentials are not checked at all, so
 *   guessing costs the guesser, not the hash workers; bounded to MAX_TRACKED_ADDRESSES;
 * - a queue for the slow hash checks (scrypt, bcrypt), one line per address, the line served
 *   longest ago first: an address with 400 checks waiting delays another address's first check
 *   by one check, not by 400.
 */
export class AuthGuard {
  readonly counters: GuardCounters = { backedOff: 0, backoffsStarted: 0, perIpQueueFull: 0, queueFull: 0 };
  readonly #failures = new Map<string, Failures>();
  readonly #lines = new Map<string, Line>();
  readonly #clock: Clock;
  readonly #maxAddresses: number;
  #pending = 0;
  #running = 0;
  #served = 0;

  constructor(options: { clock?: Clock; maxAddresses?: number } = {}) {
    this.#clock = options.clock ?? realClock;
    this.#maxAddresses = options.maxAddresses ?? MAX_TRACKED_ADDRESSES;
  }

  /** addresses backing off now, or with failures remembered */
  get trackedAddresses(): number {
    return this.#failures.size;
  }

  /** checks waiting for a slot */
  get pending(): number {
    return this.#pending;
  }

  /** Throws `rate_limited` when `address` is backing off. */
  admit(address: string): void {
    const entry = this.#failures.get(address);
    if (!entry || entry.until === 0) return;
    const left = entry.until - this.#clock.now();
    if (left <= 0) return;
    this.counters.backedOff++;
    throw new GatewayError('rate_limited', `too many failed credential checks from this address; retry in ${Math.ceil(left / 1000)} s`, { retryAfterMs: left });
  }

  /**
   * Counts a failed check; returns the back-off it started (ms), or 0. Failures are forgotten
   * once `max` passed without one. A success does not forget them: whoever holds one valid
   * credential could otherwise reset its own back-off between guesses.
   */
  failed(address: string, policy: BackoffPolicy): number {
    const now = this.#clock.now();
    let entry = this.#failures.get(address);
    if (entry) {
      this.#failures.delete(address);
      if (now - entry.last > policy.max) entry = undefined;
    } else if (this.#failures.size >= this.#maxAddresses) {
      this.#failures.delete(this.#failures.keys().next().value!);
    }
    entry ??= { count: 0, until: 0, last: now };
    // Most recently failed last, so the oldest are forgotten first.
    this.#failures.set(address, entry);
    entry.count++;
    entry.last = now;
    if (entry.count < policy.after) return 0;
    const backoff = Math.min(policy.max, policy.initial * 2 ** (entry.count - policy.after));
    entry.until = now + backoff;
    this.counters.backoffsStarted++;
    return backoff;
  }

  /**
   * Runs a slow check when its turn comes: among the addresses with checks waiting, the one
   * served longest ago (or never) goes next. Refuses with `rate_limited` when `address` already
   * has `maxPendingPerIp` waiting, `overloaded` when the whole queue is full.
   */
  verify<T>(address: string, check: () => Promise<T>, limits: VerificationLimits): Promise<T> {
    const existing = this.#lines.get(address);
    if (existing && existing.waiting.length >= limits.maxPendingPerIp) {
      this.counters.perIpQueueFull++;
      return Promise.reject(new GatewayError('rate_limited', `${limits.maxPendingPerIp} credential checks from this address are waiting already (auth.verification.maxPendingPerIp)`, { retryAfterMs: 1000 }));
    }
    if (this.#pending >= limits.maxPending) {
      this.counters.queueFull++;
      return Promise.reject(new GatewayError('overloaded', `${limits.maxPending} credential checks are waiting (auth.verification.maxPending)`, { retryAfterMs: 1000 }));
    }
    const line = existing ?? { waiting: [], running: 0, lastServed: 0 };
    if (!existing) this.#lines.set(address, line);
    return new Promise<T>((resolve, reject) => {
      line.waiting.push({
        run: () => {
          check().then(resolve, reject).finally(() => {
            this.#running--;
            line.running--;
            if (line.running === 0 && line.waiting.length === 0) this.#lines.delete(address);
            this.#next(limits);
          });
        },
      });
      this.#pending++;
      this.#next(limits);
    });
  }

  /** Starts waiting checks while slots are free, each from the line served longest ago. */
  #next(limits: VerificationLimits): void {
    while (this.#running < limits.concurrency) {
      let chosen: Line | undefined;
      for (const line of this.#lines.values()) {
        if (line.waiting.length > 0 && (chosen === undefined || line.lastServed < chosen.lastServed)) chosen = line;
      }
      if (!chosen) return;
      const waiting = chosen.waiting.shift()!;
      chosen.lastServed = ++this.#served;
      chosen.running++;
      this.#running++;
      this.#pending--;
      waiting.run();
    }
  }
}
