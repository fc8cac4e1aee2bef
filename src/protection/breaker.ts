import { realClock, type Clock, type Timer } from '../clock.js';
import { GatewayError, isGatewayError } from '../errors.js';

export type BreakerState = 'closed' | 'open' | 'half_open';

export interface BreakerSettings {
  errorThresholdPercentage: number;
  /** ms the breaker stays open before probing */
  resetTimeout: number;
  /** calls in the window before the breaker may open */
  volumeThreshold: number;
  /** ms of the statistics window */
  rollingCountTimeout: number;
  /** a successful call slower than this (ms) counts as a failure */
  slowCallThreshold?: number;
  /** trial calls let through when half-open; all must succeed to close */
  halfOpenProbes: number;
}

export interface BreakerTransition {
  state: BreakerState;
  at: number;
  reason: string;
}

/** A slow success, thrown so it counts as a failure, then unwrapped. */
class SlowCall<T> extends Error {
  constructor(readonly result: T, readonly ms: number) {
    super(`call took ${ms} ms`);
  }
}

interface Probes {
  started: number;
  succeeded: number;
}

/** the window is ten buckets, and moves one bucket at a time (opossum's default, which this breaker used before) */
const WINDOW_BUCKETS = 10;

/**
 * The calls started and the failures seen over the last rollingCountTimeout, in WINDOW_BUCKETS
 * buckets: the bucket of now takes the counts, and moving on drops the oldest bucket's.
 */
class RollingWindow {
  readonly #calls = new Array<number>(WINDOW_BUCKETS).fill(0);
  readonly #failures = new Array<number>(WINDOW_BUCKETS).fill(0);
  #current = 0;
  calls = 0;
  failures = 0;

  called(): void {
    this.#calls[this.#current]!++;
    this.calls++;
  }

  failed(): void {
    this.#failures[this.#current]!++;
    this.failures++;
  }

  /** Moves on by `buckets` buckets (a whole window at most: everything older is gone). */
  rotate(buckets: number): void {
    for (let i = Math.min(buckets, WINDOW_BUCKETS); i > 0; i--) {
      this.#current = (this.#current + 1) % WINDOW_BUCKETS;
      this.calls -= this.#calls[this.#current]!;
      this.failures -= this.#failures[this.#current]!;
      this.#calls[this.#current] = 0;
      this.#failures[this.#current] = 0;
    }
  }
}

/** A refusal the downstream gives on purpose (4xx, INVALID_ARGUMENT) says nothing about its health. */
function deliberate(err: unknown): boolean {
  return isGatewayError(err) && err.details.retryable === false;
}

/**
 * One circuit breaker per target: it opens when, after a failure, the window holds at least
 * volumeThreshold calls and more than errorThresholdPercentage of them failed (opossum's rule);
 * slow calls count as failures; half-open admits a configured number of probes and closes only
 * when all succeed; a forced state serves maintenance. All timing follows the clock it is given.
 *
 * It was opossum until opossum's `fire` proved to be most of the protection layer's cost: a
 * promise, an executor and two reactions, an arguments array and events for every downstream
 * call (about 1.2 KB of garbage each), with no way to count an outcome without it. Its judgement
 * is the rule above over ten counters, which this breaker already moved by its own clock.
 */
export class TargetBreaker {
  readonly #window = new RollingWindow();
  readonly #settings: BreakerSettings;
  readonly #onTransition: (t: BreakerTransition) => void;
  readonly #clock: Clock;
  /** the state the error rate and probes decide; a forced state overrides it */
  #state: BreakerState = 'closed';
  #probes: Probes | undefined;
  #resetTimer: Timer | undefined;
  #forced: 'open' | 'closed' | undefined;
  #last: BreakerTransition;
  readonly #bucketMs: number;
  #rotatedAt: number;
  readonly counts = { calls: 0, failures: 0, rejected: 0, slow: 0 };

  constructor(settings: BreakerSettings, onTransition: (t: BreakerTransition) => void, clock: Clock = realClock) {
    this.#settings = settings;
    this.#onTransition = onTransition;
    this.#clock = clock;
    this.#last = { state: 'closed', at: clock.now(), reason: 'created' };
    // At least 1 ms: a zero-length window must not turn the rotation arithmetic into NaN.
    this.#bucketMs = Math.max(1, settings.rollingCountTimeout / WINDOW_BUCKETS);
    this.#rotatedAt = clock.now();
  }

  get state(): BreakerState {
    return this.#forced ?? this.#state;
  }

  get lastTransition(): BreakerTransition {
    return this.#last;
  }

  get forced(): 'open' | 'closed' | undefined {
    return this.#forced;
  }

  #transition(state: BreakerState, reason: string): void {
    if (this.#last.state === state) return;
    this.#last = { state, at: this.#clock.now(), reason };
    this.#onTransition(this.#last);
  }

  #open(reason: string): void {
    this.#state = 'open';
    this.#probes = undefined;
    this.#stopResetTimer();
    // Unref'd: a breaker waiting to probe must not keep a stopped gateway alive.
    this.#resetTimer = this.#clock.setTimeout(() => this.#halfOpen(), this.#settings.resetTimeout);
    this.#resetTimer.unref();
    this.#transition('open', reason);
  }

  #halfOpen(): void {
    this.#resetTimer = undefined;
    this.#state = 'half_open';
    this.#probes = { started: 0, succeeded: 0 };
    this.#transition('half_open', `resetTimeout passed; letting ${this.#settings.halfOpenProbes} probe(s) through`);
  }

  /** Back to judging by the window, which keeps what it saw before this breaker opened. */
  #close(reason: string): void {
    this.#state = 'closed';
    this.#probes = undefined;
    this.#transition('closed', reason);
  }

  #stopResetTimer(): void {
    if (this.#resetTimer) this.#clock.clearTimeout(this.#resetTimer);
    this.#resetTimer = undefined;
  }

  /** Moves the window to the clock's present, a bucket at a time. */
  #rotate(): void {
    const passed = Math.floor((this.#clock.now() - this.#rotatedAt) / this.#bucketMs);
    if (passed <= 0) return;
    this.#rotatedAt += passed * this.#bucketMs;
    this.#window.rotate(passed);
  }

  /** A failure of a call made while closed: opens the breaker once the window says so. */
  #failedClosed(): void {
    this.#rotate();
    const window = this.#window;
    window.failed();
    // A call started while closed may fail after this breaker opened or was forced: old news.
    if (this.#state !== 'closed' || this.#forced) return;
    if (window.calls < this.#settings.volumeThreshold) return;
    if ((window.failures / window.calls) * 100 > this.#settings.errorThresholdPercentage) this.#open('error threshold reached');
  }

  /** Without a slowCallThreshold the call's own promise goes through untouched. */
  #judge<T>(call: () => Promise<T>): Promise<T> {
    const threshold = this.#settings.slowCallThreshold;
    if (threshold === undefined) return call();
    const started = this.#clock.now();
    return call().then((result) => {
      const ms = this.#clock.now() - started;
      if (ms <= threshold) return result;
      this.counts.slow++;
      throw new SlowCall(result, ms);
    });
  }

  #rejection(): GatewayError {
    this.counts.rejected++;
    return new GatewayError('upstream_unavailable', 'circuit breaker is open', { retryable: false, breakerOpen: true });
  }

  /**
   * Runs the call through the breaker, or refuses at once while it is open. Plain promise chains
   * rather than async functions: this is on every downstream call.
   */
  call<T>(call: () => Promise<T>): Promise<T> {
    if (this.#forced === 'open') return Promise.reject(this.#rejection());
    if (this.#forced === 'closed') return call();
    if (this.#state === 'closed') return this.#fire(call);
    const probes = this.#probes;
    if (!probes || probes.started >= this.#settings.halfOpenProbes) return Promise.reject(this.#rejection());
    probes.started++;
    return this.#probe(call, probes);
  }

  #fire<T>(call: () => Promise<T>): Promise<T> {
    this.counts.calls++;
    this.#rotate();
    this.#window.called();
    return this.#judge(call).catch((err: unknown) => {
      if (err instanceof SlowCall) {
        this.#failedClosed();
        return err.result as T;
      }
      if (!deliberate(err)) {
        this.counts.failures++;
        this.#failedClosed();
      }
      throw err;
    });
  }

  /**
   * Probes are not counted in the window, which judges only while this breaker is closed. The
   * breaker closes only after every probe succeeded; any failure (a slow call included) reopens it. A
   * deliberate refusal (4xx) proves the downstream answers, so it counts as a success here.
   */
  #probe<T>(call: () => Promise<T>, probes: Probes): Promise<T> {
    this.counts.calls++;
    return this.#judge(call).then(
      (result) => {
        this.#probeEnded(probes, true);
        return result;
      },
      (err: unknown) => {
        if (err instanceof SlowCall) {
          this.#probeEnded(probes, false);
          return err.result as T;
        }
        const refused = deliberate(err);
        if (!refused) this.counts.failures++;
        this.#probeEnded(probes, refused);
        throw err;
      },
    );
  }

  #probeEnded(probes: Probes, succeeded: boolean): void {
    // A probe of an earlier half-open round, or of one a force ended, decides nothing now.
    if (this.#probes !== probes) return;
    if (!succeeded) this.#open('probe failed');
    else if (++probes.succeeded >= this.#settings.halfOpenProbes) this.#close(`${probes.succeeded} probe(s) succeeded`);
  }

  /** Maintenance: hold the breaker open or closed until released with undefined, which closes it. */
  force(state: 'open' | 'closed' | undefined): void {
    this.#forced = state;
    if (state) {
      this.#stopResetTimer();
      this.#probes = undefined;
      this.#transition(state, 'forced by an operator');
    } else this.#close('released by an operator');
  }

  shutdown(): void {
    this.#stopResetTimer();
  }
}
