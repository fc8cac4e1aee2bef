import CircuitBreaker from 'opossum';
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

/**
 * One circuit breaker per target. Opossum keeps the rolling window and decides when to open;
 * this adds what it lacks: slow calls counted as failures, a half-open state that admits a
 * configured number of probes (opossum admits exactly one) and closes only when all succeed,
 * and a forced state for maintenance.
 */
export class TargetBreaker {
  readonly #breaker: CircuitBreaker<[Call], unknown>;
  readonly #settings: BreakerSettings;
  readonly #onTransition: (t: BreakerTransition) => void;
  #probes: { started: number; succeeded: number } | undefined;
  #forced: 'open' | 'closed' | undefined;
  #last: BreakerTransition = { state: 'closed', at: Date.now(), reason: 'created' };
  readonly counts = { calls: 0, failures: 0, rejected: 0, slow: 0 };

  constructor(settings: BreakerSettings, onTransition: (t: BreakerTransition) => void) {
    this.#settings = settings;
    this.#onTransition = onTransition;
    this.#breaker = new CircuitBreaker((call: Call) => this.#judge(call), {
      // Each target enforces its own per-call timeout; a timeout reaches here as a failure.
      timeout: false,
      errorThresholdPercentage: settings.errorThresholdPercentage,
      resetTimeout: settings.resetTimeout,
      volumeThreshold: settings.volumeThreshold,
      rollingCountTimeout: settings.rollingCountTimeout,
      // The percentile machinery sorts every sample on each failure; we keep our own histograms.
      rollingPercentilesEnabled: false,
      enableSnapshots: false,
      // A refusal the downstream gives on purpose (4xx, INVALID_ARGUMENT) says nothing about its health.
      errorFilter: (err: unknown) => isGatewayError(err) && err.details.retryable === false,
    });
    this.#breaker.on('open', () => {
      this.#probes = undefined;
      this.#transition('open', 'error threshold reached or probe failed');
    });
    this.#breaker.on('halfOpen', () => {
      this.#probes = { started: 0, succeeded: 0 };
      this.#transition('half_open', `resetTimeout passed; letting ${settings.halfOpenProbes} probe(s) through`);
    });
  }

  get state(): BreakerState {
    if (this.#forced) return this.#forced;
    if (this.#probes) return 'half_open';
    return this.#breaker.opened ? 'open' : 'closed';
  }

  get lastTransition(): BreakerTransition {
    return this.#last;
  }

  get forced(): 'open' | 'closed' | undefined {
    return this.#forced;
  }

  #transition(state: BreakerState, reason: string): void {
    if (this.#last.state === state) return;
    this.#last = { state, at: Date.now(), reason };
    this.#onTransition(this.#last);
  }

  /** Without a slowCallThreshold the call's own promise goes through untouched. */
  #judge(call: Call): Promise<unknown> {
    const threshold = this.#settings.slowCallThreshold;
    if (threshold === undefined) return call();
    const started = Date.now();
    return call().then((result) => {
      const ms = Date.now() - started;
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
    const probes = this.#probes;
    if (probes) {
      if (probes.started >= this.#settings.halfOpenProbes) return Promise.reject(this.#rejection());
      probes.started++;
      return this.#probe(call, probes);
    }
    return this.#fire(call);
  }

  #fire<T>(call: () => Promise<T>): Promise<T> {
    this.counts.calls++;
    return (this.#breaker.fire(call) as Promise<T>).catch((err: unknown) => {
      if (err instanceof SlowCall) return err.result as T;
      if ((err as { code?: string }).code === 'EOPENBREAKER') {
        this.counts.calls--;
        throw this.#rejection();
      }
      if (!(isGatewayError(err) && err.details.retryable === false)) this.counts.failures++;
      throw err;
    });
  }

  /**
   * The first probe goes through opossum (which closes on its success); the others run beside
   * it. The breaker is only fully closed after every probe succeeded; any failure reopens it.
   */
  async #probe<T>(call: () => Promise<T>, probes: { started: number; succeeded: number }): Promise<T> {
    const first = probes.started === 1;
    let failed = false;
    try {
      if (first) return await this.#fire(call);
      this.counts.calls++;
      try {
        return (await this.#judge(call)) as T;
      } catch (err) {
        if (err instanceof SlowCall) {
          failed = true;
          return err.result as T;
        }
        if (!(isGatewayError(err) && err.details.retryable === false)) {
          this.counts.failures++;
          failed = true;
        }
        throw err;
      }
    } catch (err) {
      // A deliberate refusal (4xx) proves the downstream answers; anything else is a failed probe.
      failed ||= !(isGatewayError(err) && err.details.retryable === false && !err.details.breakerOpen);
      throw err;
    } finally {
      if (this.#probes === probes) {
        if (failed) {
          this.#probes = undefined;
          this.#breaker.open();
        } else if (++probes.succeeded >= this.#settings.halfOpenProbes) {
          this.#probes = undefined;
          this.#transition('closed', `${probes.succeeded} probe(s) succeeded`);
        }
      }
    }
  }

  /** Maintenance: hold the breaker open or closed until released with undefined. */
  force(state: 'open' | 'closed' | undefined): void {
    this.#forced = state;
    if (state) this.#transition(state, 'forced by an operator');
    else {
      this.#breaker.close();
      this.#probes = undefined;
      this.#transition('closed', 'released by an operator');
    }
  }

  shutdown(): void {
    this.#breaker.shutdown();
  }
}
