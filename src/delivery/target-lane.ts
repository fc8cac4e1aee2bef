import { GatewayError } from '../errors.js';
import type { Message } from '../message.js';
import type { Target, TargetReply } from '../targets/target.js';
import { PriorityQueue } from './priority-queue.js';

export interface LaneOptions {
  concurrency: number;
  maxQueue: number;
  /** per-call timeout in ms */
  timeoutMs: number;
}

/** Counters behind the accounting invariant: accepted = delivered + failed + queued + inFlight. */
export interface LaneStats {
  accepted: number;
  delivered: number;
  failed: number;
  queued: number;
  inFlight: number;
}

interface Job {
  message: Message;
  timeoutMs: number;
  signal: AbortSignal | undefined;
  resolve: (reply: TargetReply) => void;
  reject: (err: unknown) => void;
}

/**
 * Everything between the router and one downstream: a bounded priority queue and a
 * concurrency limit. `submit` decides synchronously, so a dispatch can check every target
 * and then commit to all of them without an await in between.
 */
export class TargetLane {
  readonly target: Target;
  readonly #options: LaneOptions;
  readonly #queue = new PriorityQueue<Job>();
  #inFlight = 0;
  #stats = { accepted: 0, delivered: 0, failed: 0 };
  #idleWaiters: (() => void)[] = [];
  #closed = false;

  constructor(target: Target, options: LaneOptions) {
    this.target = target;
    this.#options = options;
  }

  get name(): string {
    return this.target.name;
  }

  get stats(): LaneStats {
    return { ...this.#stats, queued: this.#queue.size, inFlight: this.#inFlight };
  }

  canAccept(): boolean {
    return !this.#closed && (this.#inFlight < this.#options.concurrency || this.#queue.size < this.#options.maxQueue);
  }

  /**
   * Accepts the message (returning the promise of its outcome) or throws `overloaded` at once.
   * `timeoutMs` lowers the per-call timeout for a caller that cannot wait that long.
   */
  submit(message: Message, opts: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<TargetReply> {
    if (!this.canAccept()) {
      throw new GatewayError('overloaded', `target ${this.name} is at capacity`, { retryAfterMs: 1000 });
    }
    this.#stats.accepted++;
    return new Promise<TargetReply>((resolve, reject) => {
      const job: Job = {
        message,
        timeoutMs: Math.min(opts.timeoutMs ?? Infinity, this.#options.timeoutMs),
        signal: opts.signal,
        resolve,
        reject,
      };
      if (this.#inFlight < this.#options.concurrency) this.#run(job);
      else this.#queue.push(message.priority, job);
    });
  }

  #run(job: Job): void {
    this.#inFlight++;
    this.target.deliver(job.message, { timeoutMs: job.timeoutMs, signal: job.signal }).then(
      (reply) => {
        this.#stats.delivered++;
        this.#finish();
        job.resolve(reply);
      },
      (err: unknown) => {
        this.#stats.failed++;
        this.#finish();
        job.reject(err);
      },
    );
  }

  #finish(): void {
    this.#inFlight--;
    const next = this.#queue.shift();
    if (next) this.#run(next);
    else if (this.#inFlight === 0) {
      for (const wake of this.#idleWaiters.splice(0)) wake();
    }
  }

  /** resolves when nothing is queued or in flight */
  idle(): Promise<void> {
    if (this.#inFlight === 0 && this.#queue.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** stops accepting; queued jobs are handed back (rejected with the given error) */
  close(reason: GatewayError): void {
    this.#closed = true;
    for (const job of this.#queue.drain()) {
      this.#stats.failed++;
      job.reject(reason);
    }
  }
}
