import { realClock, type Clock, type Timer } from '../clock.js';
import { GatewayError, toGatewayError } from '../errors.js';
import { isExpired, type Message } from '../message.js';
import { TargetBreaker, type BreakerSettings, type BreakerTransition } from '../protection/breaker.js';
import { TokenBucket, type BucketSpec } from '../protection/token-bucket.js';
import type { Target, TargetReply } from '../targets/target.js';
import { PriorityQueue } from './priority-queue.js';
import { endSpan, SpanKind, startSpan, traceparentOf, tracingOn } from '../tracing.js';

export interface RetryPolicy {
  /** total attempts, including the first */
  attempts: number;
  backoffMs: number;
  maxBackoffMs: number;
}

export interface LaneOptions {
  concurrency: number;
  maxQueue: number;
  /** per-call timeout in ms */
  timeoutMs: number;
  retry?: RetryPolicy;
  /** paces calls to the downstream: messages wait in the queue for a token */
  rateLimit?: BucketSpec;
  breaker?: BreakerSettings;
  onBreakerTransition?: (target: string, transition: BreakerTransition) => void;
  /** called after every call to the downstream, with its duration */
  onCall?: (target: string, ok: boolean, seconds: number) => void;
  /** called when shedding starts (a queued message was evicted) or stops (queue below 90 %) */
  onShedding?: (target: string, shedding: boolean) => void;
  /** time for backoff, pacing, expiry and the breaker; the real clock unless a test fakes it */
  clock?: Clock;
  /** the jitter source for backoff: uniform in [0, 1), Math.random unless a test fixes it */
  random?: () => number;
}

/** How a message this target gave up on ended, once the dispatcher has dealt with it. */
export type Settlement = 'deadLettered' | 'rerouted' | 'returned' | 'lost';

/**
 * Where every message a lane accepted is, at any moment:
 * accepted = delivered + expired + deadLettered + rerouted + returned + lost + queued + inFlight.
 */
export interface LaneStats {
  accepted: number;
  delivered: number;
  expired: number;
  /** given up here and written to the dead-letter store */
  deadLettered: number;
  /** given up here and taken by a fallback target */
  rerouted: number;
  /** a request whose failure went back to the waiting sender */
  returned: number;
  /** the dead-letter store failed too: logged as an error; should stay 0 */
  lost: number;
  queued: number;
  /** calls running, messages waiting out a retry backoff, and given-up messages being settled */
  inFlight: number;
  shed: number;
  retries: number;
}

interface Job {
  message: Message;
  timeoutMs: number;
  /** ms since epoch after which a retry is pointless: the requester stopped waiting */
  deadline: number;
  signal: AbortSignal | undefined;
  attempts: number;
  resolve: (reply: TargetReply) => void;
  reject: (err: GatewayError) => void;
}

/** Each message gets its own error object: details such as `attempts` are per message. */
function copy(error: GatewayError): GatewayError {
  return new GatewayError(error.code, error.message, { ...error.details });
}

/** Full jitter (random in [0, cap]) so retrying clients do not synchronise. */
function backoff(policy: RetryPolicy, attempt: number, random: () => number): number {
  const cap = Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** (attempt - 1));
  return random() * cap;
}

/**
 * Everything between the router and one downstream: a bounded priority queue with shedding,
 * a concurrency limit, a token bucket that paces calls, retries with backoff and a breaker.
 * `submit` decides synchronously, so a dispatch can check every target and then commit to
 * all of them without an await in between.
 */
export class TargetLane {
  readonly target: Target;
  readonly breaker: TargetBreaker | undefined;
  readonly #options: LaneOptions;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #queue = new PriorityQueue<Job>();
  readonly #bucket: TokenBucket | undefined;
  #running = 0;
  #retrying = 0;
  #stats = { accepted: 0, delivered: 0, expired: 0, shed: 0, retries: 0, deadLettered: 0, rerouted: 0, returned: 0, lost: 0 };
  #settling = 0;
  #idleWaiters: (() => void)[] = [];
  #paceTimer: Timer | undefined;
  readonly #retryTimers = new Set<Timer>();
  readonly #retryJobs = new Set<Job>();
  #shedding = false;
  #closed: GatewayError | undefined;
  /** aborts calls still running when the lane is closed at the end of a drain */
  readonly #abort = new AbortController();

  constructor(target: Target, options: LaneOptions) {
    this.target = target;
    this.#options = options;
    this.#clock = options.clock ?? realClock;
    this.#random = options.random ?? Math.random;
    if (options.rateLimit) this.#bucket = new TokenBucket(options.rateLimit, this.#clock.now());
    if (options.breaker) {
      this.breaker = new TargetBreaker(options.breaker, (t) => options.onBreakerTransition?.(target.name, t), this.#clock);
    }
  }

  get name(): string {
    return this.target.name;
  }

  get stats(): LaneStats {
    return { ...this.#stats, queued: this.#queue.size, inFlight: this.#running + this.#retrying + this.#settling };
  }

  /** Records how a message this lane gave up on ended; until then it counts as in flight. */
  settle(outcome: Promise<Settlement>): void {
    void outcome.then((settlement) => {
      this.#settling--;
      this.#stats[settlement]++;
      this.#wakeIfIdle();
    });
  }

  #hasRoom(): boolean {
    return this.#running < this.#options.concurrency || this.#queue.size < this.#options.maxQueue;
  }

  /** whether `submit` would take a message of this priority (possibly by shedding a lower one) */
  canAccept(priority: number): boolean {
    if (this.#closed) return false;
    return this.#hasRoom() || this.#queue.hasBelow(priority);
  }

  /**
   * Accepts the message (returning the promise of its outcome) or throws `overloaded` at once.
   * When the queue is full, a message of higher priority evicts the newest of the lowest
   * priority, whose promise rejects with `shed`.
   */
  submit(message: Message, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<TargetReply> {
    if (this.#closed) throw new GatewayError('overloaded', `target ${this.name} is stopping`, { retryAfterMs: 1000 });
    if (!this.#hasRoom()) {
      const victim = this.#queue.popLowest(message.priority);
      if (!victim) throw new GatewayError('overloaded', `target ${this.name} is at capacity`, { retryAfterMs: 1000 });
      this.#stats.shed++;
      this.#setShedding(true);
      this.#giveUp(victim, new GatewayError('overloaded', `shed from the queue of ${this.name} for a message of priority ${message.priority}`, { shed: true }));
    }
    this.#stats.accepted++;
    const timeoutMs = Math.min(opts.timeoutMs ?? Infinity, this.#options.timeoutMs);
    return new Promise<TargetReply>((resolve, reject) => {
      this.#queue.push(message.priority, {
        message,
        timeoutMs,
        deadline: opts.timeoutMs !== undefined ? this.#clock.now() + opts.timeoutMs : Infinity,
        signal: opts.signal,
        attempts: 0,
        resolve,
        reject,
      });
      this.#pump();
    });
  }

  #setShedding(shedding: boolean): void {
    if (this.#shedding === shedding) return;
    this.#shedding = shedding;
    this.#options.onShedding?.(this.name, shedding);
  }

  #pump(): void {
    while (this.#running < this.#options.concurrency && this.#queue.size > 0 && this.#paceTimer === undefined) {
      if (this.#bucket) {
        const wait = this.#bucket.take(this.#clock.now());
        if (wait > 0) {
          this.#paceTimer = this.#clock.setTimeout(() => {
            this.#paceTimer = undefined;
            this.#pump();
          }, wait);
          return;
        }
      }
      const job = this.#queue.shift()!;
      if (isExpired(job.message, this.#clock.now())) {
        // Expired is a final state of its own: counted, not dead-lettered (DESIGN: dropped and counted).
        this.#stats.expired++;
        job.reject(new GatewayError('upstream_timeout', 'the message expired while queued', { expired: true }));
        continue;
      }
      this.#run(job);
    }
    if (this.#shedding && this.#queue.size < this.#options.maxQueue * 0.9) this.#setShedding(false);
    this.#wakeIfIdle();
  }

  #run(job: Job): void {
    this.#running++;
    job.attempts++;
    const signal = job.signal ? AbortSignal.any([job.signal, this.#abort.signal]) : this.#abort.signal;
    const span = tracingOn() ? startSpan(`junction.target ${this.name}`, job.message.traceparent, SpanKind.CLIENT, { 'junction.target': this.name, 'junction.attempt': job.attempts }) : undefined;
    const context = { timeoutMs: job.timeoutMs, signal, traceparent: span ? traceparentOf(span) : job.message.traceparent };
    const call = span
      ? () => this.target.deliver(job.message, context).then(
        (reply) => {
          endSpan(span);
          return reply;
        },
        (err: unknown) => {
          endSpan(span, err);
          throw err;
        },
      )
      : () => this.target.deliver(job.message, context);
    // Timed around the breaker, which refuses in no time while open: those count as fast failures.
    const started = performance.now();
    const attempt = this.breaker ? this.breaker.call(call) : call();
    attempt.then(
      (reply) => {
        this.#options.onCall?.(this.name, true, (performance.now() - started) / 1000);
        this.#running--;
        this.#stats.delivered++;
        job.resolve(reply);
        this.#pump();
      },
      (err: unknown) => {
        this.#options.onCall?.(this.name, false, (performance.now() - started) / 1000);
        this.#running--;
        const error = this.#closed ? copy(this.#closed) : toGatewayError(err);
        if (this.#shouldRetry(job, error)) this.#retry(job);
        else this.#giveUp(job, error);
        this.#pump();
      },
    );
  }

  #shouldRetry(job: Job, error: GatewayError): boolean {
    const policy = this.#options.retry;
    const now = this.#clock.now();
    return !this.#closed && policy !== undefined && job.attempts < policy.attempts
      && error.details.retryable === true && !error.details.breakerOpen
      && !isExpired(job.message, now) && now < job.deadline;
  }

  #retry(job: Job): void {
    this.#retrying++;
    this.#stats.retries++;
    this.#retryJobs.add(job);
    const timer = this.#clock.setTimeout(() => {
      this.#retryTimers.delete(timer);
      this.#retryJobs.delete(job);
      this.#retrying--;
      // Already accepted, so a retry goes back in even past maxQueue.
      this.#queue.push(job.message.priority, job);
      this.#pump();
    }, backoff(this.#options.retry!, job.attempts, this.#random));
    this.#retryTimers.add(timer);
  }

  /** The job leaves the queue but stays in flight until the dispatcher settles it. */
  #giveUp(job: Job, error: GatewayError): void {
    this.#settling++;
    error.details.attempts = job.attempts;
    job.reject(error);
  }

  #wakeIfIdle(): void {
    if (this.#running === 0 && this.#retrying === 0 && this.#settling === 0 && this.#queue.size === 0) {
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
  }

  /** resolves when nothing is queued, running, waiting to retry or being settled */
  idle(): Promise<void> {
    if (this.#running === 0 && this.#retrying === 0 && this.#settling === 0 && this.#queue.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Stops accepting; queued messages and pending retries are handed back with the given error. */
  close(reason: GatewayError): void {
    this.#closed = reason;
    if (this.#paceTimer) this.#clock.clearTimeout(this.#paceTimer);
    this.#paceTimer = undefined;
    for (const timer of this.#retryTimers) this.#clock.clearTimeout(timer);
    this.#retryTimers.clear();
    this.#retrying = 0;
    for (const job of this.#retryJobs) this.#giveUp(job, copy(reason));
    this.#retryJobs.clear();
    for (const job of this.#queue.drain()) this.#giveUp(job, copy(reason));
    this.#abort.abort(reason);
    this.#wakeIfIdle();
    this.breaker?.shutdown();
  }
}

