import { realClock, type Clock, type Timer } from '../clock.js';
import { GatewayError, toGatewayError } from '../errors.js';
import { isExpired, type Message } from '../message.js';
import { TargetBreaker, type BreakerSettings, type BreakerTransition } from '../protection/breaker.js';
import { TokenBucket, type BucketSpec } from '../protection/token-bucket.js';
import type { RateBucket } from '../protection/rate-bucket.js';
import type { QueueOutcome, QueueRecord, TargetQueue } from '../queue/index.js';
import type { Target, TargetReply } from '../targets/target.js';
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
  /** cluster mode: the bucket every node's lane of this target takes from, in place of `rateLimit`'s own */
  sharedBucket?: RateBucket;
  breaker?: BreakerSettings;
  /**
   * What becomes of a record found in the queue with no sender behind it: one that recovery put
   * back after a restart. Asked when the lane first takes or evicts such a record.
   */
  recovered: (record: QueueRecord) => DeliveryOutcome;
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

/**
 * How a message this target gave up on ended, once the dispatcher has dealt with it. `unsettled`:
 * the dead-letter store refused it too; the queue store keeps it, so a disk store offers it
 * again at the next start.
 */
export type Settlement = 'deadLettered' | 'rerouted' | 'returned' | 'unsettled';

const STORE_OUTCOME: Readonly<Record<Settlement, QueueOutcome | undefined>> = {
  deadLettered: 'deadLettered',
  rerouted: 'rerouted',
  returned: 'returned',
  unsettled: undefined,
};

/**
 * Where every message a lane took is, at any moment:
 * accepted + adopted = delivered + expired + deadLettered + rerouted + returned + unsettled
 *                      + handedOver + queued + inFlight.
 */
export interface LaneStats {
  accepted: number;
  /** records this lane took over without accepting them: put back by recovery, or handed over by the lane it replaced */
  adopted: number;
  delivered: number;
  expired: number;
  /** given up here and written to the dead-letter store */
  deadLettered: number;
  /** given up here and taken by a fallback target */
  rerouted: number;
  /** a request whose failure went back to the waiting sender */
  returned: number;
  /** given up here and refused by the dead-letter store too: kept in the queue store, logged */
  unsettled: number;
  /** queued records passed to the lane that replaced this one in a reload */
  handedOver: number;
  queued: number;
  /** calls running, messages waiting out a retry backoff, and given-up messages being settled */
  inFlight: number;
  shed: number;
  retries: number;
}

/**
 * What becomes of one message a lane took. Exactly one of the three is called, once, by the lane
 * that ends the message's stay: after a reload that may be the lane that replaced the one that
 * accepted it.
 */
export interface DeliveryOutcome {
  delivered(reply: TargetReply): void;
  /**
   * Its expiry passed while it waited. Nothing returned: that ends it, a final state of its own
   * (counted as expired); or the settlement of its dead letter, when its rule asks for one.
   */
  expired(attempts: number): Promise<Settlement> | undefined;
  /**
   * The lane gave up on it. It stays in flight until `settle` says how it ended; the queue store
   * forgets it then, unless it ended `unsettled`.
   */
  failed(error: GatewayError, settle: (settlement: Promise<Settlement>) => void): void;
}

export interface SubmitOptions {
  /** how long the sender waits for the reply (requests): caps the call timeout and the retries */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** kept in memory only: the sender waits for the answer, so nobody would take it after a restart */
  transient?: boolean;
}

interface Job {
  record: QueueRecord;
  outcome: DeliveryOutcome;
  timeoutMs: number;
  /** ms since epoch after which a retry is pointless: the requester stopped waiting */
  deadline: number;
  signal: AbortSignal | undefined;
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
 * Everything between the router and one downstream: the target's queue in the queue store
 * (bounded in messages and bytes, ordered by priority, shedding the lowest), a concurrency limit,
 * a token bucket that paces calls, retries with backoff and a breaker. `submit` decides
 * synchronously, so a dispatch can check every target and then commit to all of them without an
 * await in between; the store's durability promise, when its sync policy has one, is returned
 * for the acknowledgement to wait for.
 *
 * A lane takes from its queue once started. A reload that replaces it starts the new lane with
 * this one as `previous`: the queued records and their senders' outcomes pass to the new lane,
 * records waiting out a retry follow when their backoff ends, and calls running finish here.
 */
export class TargetLane {
  readonly target: Target;
  readonly breaker: TargetBreaker | undefined;
  readonly #queue: TargetQueue;
  readonly #options: LaneOptions;
  readonly #clock: Clock;
  readonly #random: () => number;
  readonly #bucket: RateBucket | undefined;
  /** a take from a shared bucket is under way: the pump waits for its answer */
  #taking = false;
  /** a token a shared bucket granted, not used yet */
  #granted = false;
  /** the outcomes of the records ready in the queue; a record taken without one was recovered */
  #waiting = new Map<QueueRecord, Job>();
  #running = 0;
  #retrying = 0;
  #stats = { accepted: 0, adopted: 0, delivered: 0, expired: 0, shed: 0, retries: 0, deadLettered: 0, rerouted: 0, returned: 0, unsettled: 0, handedOver: 0 };
  #settling = 0;
  #idleWaiters: (() => void)[] = [];
  #paceTimer: Timer | undefined;
  readonly #retryTimers = new Set<Timer>();
  readonly #retryJobs = new Set<Job>();
  #shedding = false;
  /** taking from the queue: from `start` until a successor takes over */
  #active = false;
  #successor: TargetLane | undefined;
  #closed: GatewayError | undefined;
  /** aborts calls still running when the lane is closed at the end of a drain */
  readonly #abort = new AbortController();

  constructor(target: Target, queue: TargetQueue, options: LaneOptions) {
    this.target = target;
    this.#queue = queue;
    this.#options = options;
    this.#clock = options.clock ?? realClock;
    this.#random = options.random ?? Math.random;
    this.#bucket = options.sharedBucket ?? (options.rateLimit ? new TokenBucket(options.rateLimit, this.#clock.now()) : undefined);
    if (options.breaker) {
      this.breaker = new TargetBreaker(options.breaker, (t) => options.onBreakerTransition?.(target.name, t), this.#clock);
    }
  }

  get name(): string {
    return this.target.name;
  }

  get stats(): LaneStats {
    return { ...this.#stats, queued: this.#active ? this.#queue.size : 0, inFlight: this.#running + this.#retrying + this.#settling };
  }

  /**
   * Puts the lane in charge of its queue. With `previous` (the lane of the same target a reload
   * replaces), the records queued there are handed over; without, whatever the queue holds was
   * put back by recovery, and delivery of it begins.
   */
  start(previous?: TargetLane): void {
    if (this.#active || this.#closed) return;
    this.#active = true;
    if (previous) previous.#handOver(this);
    else this.#stats.adopted += this.#queue.size;
    // Records can arrive with nobody submitting: a cluster node taking over a dead node's records.
    this.#queue.onAvailable(() => this.#pump());
    this.#pump();
  }

  #handOver(successor: TargetLane): void {
    this.#active = false;
    this.#successor = successor;
    if (this.#paceTimer) this.#clock.clearTimeout(this.#paceTimer);
    this.#paceTimer = undefined;
    const queued = this.#queue.size;
    this.#stats.handedOver += queued;
    successor.#stats.adopted += queued;
    for (const [record, job] of this.#waiting) successor.#waiting.set(record, job);
    this.#waiting = new Map();
    this.#setShedding(false);
    this.#wakeIfIdle();
  }

  #hasRoom(): boolean {
    return this.#running < this.#options.concurrency || this.#queue.size < this.#options.maxQueue;
  }

  /** whether `submit` would take this message now (possibly by shedding lower priorities), storage faults aside */
  canAccept(message: Message): boolean {
    if (this.#closed) return false;
    return (this.#hasRoom() || this.#queue.hasBelow(message.priority)) && this.#queue.canAccept(message);
  }

  /**
   * Accepts the message, or throws `overloaded` at once with nothing changed. When the queue is
   * full, a message of higher priority evicts the newest of the lowest priority, whose outcome
   * fails with `shed`. Returns the promise the acknowledgement waits for when the store's sync
   * policy has one (it rejects with `overloaded` if the message cannot be made durable; the
   * message stays queued).
   */
  submit(message: Message, outcome: DeliveryOutcome, options: SubmitOptions = {}): Promise<void> | undefined {
    if (this.#closed) throw new GatewayError('overloaded', `target ${this.name} is stopping`, { retryAfterMs: 1000 });
    const full = !this.#hasRoom();
    if (full && !this.#queue.hasBelow(message.priority)) throw new GatewayError('overloaded', `target ${this.name} is at capacity`, { retryAfterMs: 1000 });
    const { record, durable, shed } = this.#queue.append(message, options.transient ? { transient: true } : undefined);
    this.#stats.accepted++;
    this.#waiting.set(record, {
      record,
      outcome,
      timeoutMs: Math.min(options.timeoutMs ?? Infinity, this.#options.timeoutMs),
      deadline: options.timeoutMs !== undefined ? this.#clock.now() + options.timeoutMs : Infinity,
      signal: options.signal,
    });
    for (const victim of shed) this.#shed(victim, message.priority);
    // Shedding by bytes made room by count too; otherwise the count bound needs a victim of its own.
    if (full && shed.length === 0) this.#shed(this.#queue.evict(message.priority)!, message.priority);
    if (this.#active) this.#pump();
    return durable;
  }

  #shed(victim: QueueRecord, priority: number): void {
    this.#stats.shed++;
    this.#setShedding(true);
    this.#giveUp(this.#jobOf(victim), new GatewayError('overloaded', `shed from the queue of ${this.name} for a message of priority ${priority}`, { shed: true }));
  }

  /** The job of a record just taken or evicted, which leaves the waiting ones. */
  #jobOf(record: QueueRecord): Job {
    const job = this.#waiting.get(record);
    if (job) {
      this.#waiting.delete(record);
      return job;
    }
    return { record, outcome: this.#options.recovered(record), timeoutMs: this.#options.timeoutMs, deadline: Infinity, signal: undefined };
  }

  #setShedding(shedding: boolean): void {
    if (this.#shedding === shedding) return;
    this.#shedding = shedding;
    this.#options.onShedding?.(this.name, shedding);
  }

  #pace(wait: number): void {
    this.#paceTimer = this.#clock.setTimeout(() => {
      this.#paceTimer = undefined;
      this.#pump();
    }, wait);
  }

  #pump(): void {
    while (this.#active && this.#running < this.#options.concurrency && this.#queue.size > 0 && this.#paceTimer === undefined) {
      if (this.#bucket && !this.#granted) {
        if (this.#taking) return;
        const wait = this.#bucket.take(this.#clock.now());
        if (typeof wait !== 'number') {
          this.#taking = true;
          void wait.then((later) => {
            this.#taking = false;
            this.#granted = later <= 0;
            if (later > 0) this.#pace(later);
            else this.#pump();
          });
          return;
        }
        if (wait > 0) {
          this.#pace(wait);
          return;
        }
      }
      this.#granted = false;
      const record = this.#queue.take();
      if (!record) break;
      const job = this.#jobOf(record);
      if (isExpired(record.message, this.#clock.now())) {
        this.#expire(job);
        continue;
      }
      this.#run(job);
    }
    if (this.#shedding && this.#queue.size < this.#options.maxQueue * 0.9) this.#setShedding(false);
    this.#wakeIfIdle();
  }

  #run(job: Job): void {
    const { record } = job;
    const message = record.message;
    this.#running++;
    // Counted before the call, so a crash during it still counts it after a restart.
    const attempt = this.#queue.recordAttempt(record);
    const signal = job.signal ? AbortSignal.any([job.signal, this.#abort.signal]) : this.#abort.signal;
    const span = tracingOn() ? startSpan(`junction.target ${this.name}`, message.traceparent, SpanKind.CLIENT, { 'junction.target': this.name, 'junction.attempt': attempt }) : undefined;
    const context = { timeoutMs: job.timeoutMs, signal, traceparent: span ? traceparentOf(span) : message.traceparent };
    const call = span
      ? () => this.target.deliver(message, context).then(
        (reply) => {
          endSpan(span);
          return reply;
        },
        (err: unknown) => {
          endSpan(span, err);
          throw err;
        },
      )
      : () => this.target.deliver(message, context);
    // Timed around the breaker, which refuses in no time while open: those count as fast failures.
    const started = performance.now();
    const result = this.breaker ? this.breaker.call(call) : call();
    result.then(
      (reply) => {
        this.#options.onCall?.(this.name, true, (performance.now() - started) / 1000);
        this.#running--;
        this.#stats.delivered++;
        this.#queue.settle(record, 'delivered');
        job.outcome.delivered(reply);
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
    return !this.#closed && policy !== undefined && job.record.attempts < policy.attempts
      && error.details.retryable === true && !error.details.breakerOpen
      && !isExpired(job.record.message, now) && now < job.deadline;
  }

  #retry(job: Job): void {
    this.#retrying++;
    this.#stats.retries++;
    this.#retryJobs.add(job);
    const timer = this.#clock.setTimeout(() => {
      this.#retryTimers.delete(timer);
      this.#retryJobs.delete(job);
      this.#retrying--;
      // Already accepted, so a retry goes back in even past the bounds.
      this.#queue.release(job.record);
      this.#current().#takeBack(job, this);
    }, backoff(this.#options.retry!, job.record.attempts, this.#random));
    this.#retryTimers.add(timer);
  }

  /** the lane in charge of this target's queue now: this one, or the last that replaced it */
  #current(): TargetLane {
    // Each step follows a reload that replaced a lane, so this ends within the number of reloads.
    return this.#successor ? this.#successor.#current() : this;
  }

  /** A record released after a retry backoff, back among the waiting ones of the lane in charge. */
  #takeBack(job: Job, from: TargetLane): void {
    this.#waiting.set(job.record, job);
    if (from !== this) {
      from.#stats.handedOver++;
      this.#stats.adopted++;
      from.#wakeIfIdle();
    }
    this.#pump();
  }

  /** Dropped and counted, unless its outcome dead-letters it: then it stays in flight until that settles. */
  #expire(job: Job): void {
    const deadLetter = job.outcome.expired(job.record.attempts);
    if (deadLetter) {
      this.#settling++;
      this.#settle(job, deadLetter);
      return;
    }
    this.#stats.expired++;
    this.#queue.settle(job.record, 'expired');
  }

  /** The message stays in flight until the outcome's `settle` says how it ended. */
  #giveUp(job: Job, error: GatewayError): void {
    this.#settling++;
    error.details.attempts = job.record.attempts;
    let settled = false;
    job.outcome.failed(error, (settlement) => {
      if (settled) return;
      settled = true;
      this.#settle(job, settlement);
    });
  }

  #settle(job: Job, settlement: Promise<Settlement>): void {
    void settlement.then((how) => {
      this.#settling--;
      this.#stats[how]++;
      const outcome = STORE_OUTCOME[how];
      if (outcome) this.#queue.settle(job.record, outcome);
      this.#wakeIfIdle();
    });
  }

  #isIdle(): boolean {
    return this.#running === 0 && this.#retrying === 0 && this.#settling === 0 && (!this.#active || this.#queue.size === 0);
  }

  #wakeIfIdle(): void {
    if (this.#isIdle()) for (const wake of this.#idleWaiters.splice(0)) wake();
  }

  /** resolves when nothing is queued (while in charge of the queue), running, waiting to retry or being settled */
  idle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /**
   * Stops accepting; queued messages (while in charge of the queue) and pending retries are given
   * up with the given error, and calls still running are aborted.
   */
  close(reason: GatewayError): void {
    this.#closed = reason;
    if (this.#paceTimer) this.#clock.clearTimeout(this.#paceTimer);
    this.#paceTimer = undefined;
    for (const timer of this.#retryTimers) this.#clock.clearTimeout(timer);
    this.#retryTimers.clear();
    this.#retrying = 0;
    for (const job of this.#retryJobs) this.#giveUp(job, copy(reason));
    this.#retryJobs.clear();
    if (this.#active) {
      // Each round takes a record out of the queue, so this ends within the queue's size.
      for (let record = this.#queue.take(); record; record = this.#queue.take()) this.#giveUp(this.#jobOf(record), copy(reason));
    }
    this.#abort.abort(reason);
    this.#wakeIfIdle();
    this.breaker?.shutdown();
  }
}
