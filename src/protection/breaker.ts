import { EventEmitter } from 'node:events';
import CircuitBreaker from 'opossum';
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

/** A slow success, thrown through opossum so it counts as a failure, then unwrapped. */
class SlowCall<T> extends Error {
  constructor(readonly result: T, readonly ms: number) {
    super(`call took ${ms} ms`);
  }
}

type Call = () => Promise<unknown>;

interface Probes {
  started: number;
  succeeded: number;
}

/** opossum's default: the window is ten buckets, and moves one bucket at a time */
const WINDOW_BUCKETS = 10;

/** A refusal the downstream gives on purpose (4xx, INVALID_ARGUMENT) says nothing about its health. */
function deliberate(err: unknown): boolean {
  return isGatewayError(err) && err.details.retryable === false;
}

/**
 * One circuit breaker per target. Opossum keeps the rolling window and decides when to open;
 * this adds what it lacks: slow calls counted as failures, a half-open state that admits a
 * configured number of probes (opossum admits exactly one) and closes only when all succeed,
 * and a forced state for maintenance. All timing follows the clock it is given: the window
 * moves and the breaker half-opens by that clock, not by opossum's own timers.
 */
export class TargetBreaker {
  readonly #breaker: CircuitBreaker<[Call], unknown>;
  readonly #settings: BreakerSettings;
  readonly #onTransition: (t: BreakerTransition) => void;
  readonly #clock: Clock;
  /** the state the error rate and probes decide; a forced state overrides it */
  #state: BreakerState = 'closed';
  #probes: Probes | undefined;
  #resetTimer: Timer | undefined;
  #forced: 'open' | 'closed' | undefined;
  #last: BreakerTransition;
  /** drives opossum's window: one `rotate` per bucket the clock has moved past */
  readonly #rotation = new EventEmitter();
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
    this.#breaker = new CircuitBreaker((call: Call) => this.#judge(call), {
      // Each target enforces its own per-call timeout; a timeout reaches here as a failure.
      timeout: false,
      errorThresholdPercentage: settings.errorThresholdPercentage,
      // Opossum still arms its own (unref'd) timer when it opens; its half-open is never
      // consulted: calls only reach opossum while this breaker is closed.
      resetTimeout: settings.resetTimeout,
      volumeThreshold: settings.volumeThreshold,
      rollingCountTimeout: settings.rollingCountTimeout,
      rollingCountBuckets: WINDOW_BUCKETS,
      rotateBucketController: this.#rotation,
      // The percentile machinery sorts every sample on each failure; we keep our own histograms.
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      errorFilter: deliberate,
    });
    this.#breaker.on('open', () => {
      // A call started while closed may fail after this breaker opened or was forced: old news.
      if (this.#state === 'closed' && !this.#forced) this.#open('error threshold reached');
    });
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
    // Unref'd like opossum's: a breaker waiting to probe must not keep a stopped gateway alive.
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

  /** Back to opossum's judgement; its window keeps what it saw before this breaker opened. */
  #close(reason: string): void {
    this.#state = 'closed';
    this.#probes = undefined;
    this.#breaker.close();
    this.#transition('closed', reason);
  }

  #stopResetTimer(): void {
    if (this.#resetTimer) this.#clock.clearTimeout(this.#resetTimer);
    this.#resetTimer = undefined;
  }

  /** Moves opossum's window to the clock's present, a bucket at a time (at most a whole window). */
  #rotate(): void {
    const passed = Math.floor((this.#clock.now() - this.#rotatedAt) / this.#bucketMs);
    if (passed <= 0) return;
    this.#rotatedAt += passed * this.#bucketMs;
    for (let i = Math.min(passed, WINDOW_BUCKETS); i > 0; i--) this.#rotation.emit('rotate');
  }

  /** Without a slowCallThreshold the call's own promise goes through untouched. */
  #judge(call: Call): Promise<unknown> {
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
    return (this.#breaker.fire(call) as Promise<T>).catch((err: unknown) => {
      if (err instanceof SlowCall) return err.result as T;
      if (!deliberate(err)) this.counts.failures++;
      throw err;
    });
  }

  /**
   * Probes run beside opossum, which has no say while this breaker is not closed. The breaker
   * closes only after every probe succeeded; any failure (a slow call included) reopens it. A
   * deliberate refusal (4xx) proves the downstream answers, so it counts as a success here.
   */
  #probe<T>(call: () => Promise<T>, probes: Probes): Promise<T> {
    this.counts.calls++;
    return this.#judge(call).then(
      (result) => {
        this.#probeEnded(probes, true);
        return result as T;
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
    this.#breaker.shutdown();
  }
}
