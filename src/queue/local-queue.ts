import { PriorityQueue } from '../delivery/priority-queue.js';
import { GatewayError } from '../errors.js';
import { MAX_PRIORITY, type Message } from '../message.js';
import { appendFrameBytes } from './codec.js';
import type { Segment } from './segment-log.js';
import type { AppendOptions, Appended, QueueLimits, QueueOutcome, QueueRecord, QueueStore, RecoveryReport, TargetQueue } from './store.js';

type RecordState = 'ready' | 'held' | 'settled';

export class LocalRecord implements QueueRecord {
  readonly queue: LocalTargetQueue;
  readonly message: Message;
  /** its size in a segment file, which is also what the byte bound counts */
  readonly bytes: number;
  /** kept in memory only: a QoS 0 message, or one appended as transient */
  readonly transient: boolean;
  attempts: number;
  state: RecordState = 'ready';
  /** the disk journal's name for it, unique within its log */
  seq = 0;
  /** the segment file holding its latest copy; undefined while it lives in memory only */
  segment: Segment | undefined;

  constructor(queue: LocalTargetQueue, message: Message, bytes: number, attempts: number, transient: boolean) {
    this.queue = queue;
    this.message = message;
    this.bytes = bytes;
    this.attempts = attempts;
    this.transient = transient;
  }

  get target(): string {
    return this.queue.target;
  }
}

/** What a persistent local store does at each step of a record's life; memory stores have none. */
export interface Journal {
  /**
   * Stores a new record before it is queued, or throws `overloaded` when the storage refuses it;
   * returns the promise the acknowledgement waits for when the sync policy needs one.
   */
  append(record: LocalRecord): Promise<void> | undefined;
  attempt(record: LocalRecord): void;
  settle(record: LocalRecord, outcome: QueueOutcome): void;
}

const NOTHING_SHED: readonly QueueRecord[] = Object.freeze([]);

/** One target's queue in this process: the ordering, the byte bound and the record states. */
export class LocalTargetQueue implements TargetQueue {
  readonly target: string;
  readonly #journal: Journal | undefined;
  readonly #ready = new PriorityQueue<LocalRecord>();
  /** bytes of ready records per priority, so the room shedding could make is known at once */
  readonly #bytesAt: number[] = new Array<number>(MAX_PRIORITY + 1).fill(0);
  #bytes = 0;
  #held = 0;
  #maxBytes = Infinity;
  #closed = false;
  #onAvailable: (() => void) | undefined;

  constructor(target: string, journal: Journal | undefined) {
    this.target = target;
    this.#journal = journal;
  }

  get size(): number {
    return this.#ready.size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get held(): number {
    return this.#held;
  }

  limit(limits: QueueLimits): void {
    this.#maxBytes = limits.maxBytes ?? Infinity;
  }

  append(message: Message, options?: AppendOptions): Appended {
    if (this.#closed) throw new GatewayError('overloaded', `the queue of ${this.target} is closed`, { retryAfterMs: 1000 });
    const bytes = appendFrameBytes(this.target, message);
    const excess = this.#excess(message.priority, bytes);
    if (excess === undefined) throw new GatewayError('overloaded', `the queue of ${this.target} is full`, { retryAfterMs: 1000 });
    const record = new LocalRecord(this, message, bytes, 0, options?.transient === true || message.qos === 0);
    // Stored before anything is evicted, so a refused write leaves the queue as it was.
    const durable = this.#journal?.append(record);
    const shed = excess > 0 ? this.#shed(message.priority, excess) : NOTHING_SHED;
    this.#push(record);
    return durable ? { record, durable, shed } : { record, shed };
  }

  canAccept(message: Message): boolean {
    return !this.#closed && this.#excess(message.priority, appendFrameBytes(this.target, message)) !== undefined;
  }

  hasBelow(priority: number): boolean {
    for (let p = 0; p < priority; p++) if (this.#bytesAt[p]! > 0) return true;
    return false;
  }

  /** bytes to evict before a record of this priority and size fits, or undefined when it cannot */
  #excess(priority: number, bytes: number): number | undefined {
    if (this.#ready.size === 0) return 0;
    const excess = this.#bytes + bytes - this.#maxBytes;
    if (excess <= 0) return excess;
    let below = 0;
    for (let p = 0; p < priority; p++) below += this.#bytesAt[p]!;
    return below >= excess ? excess : undefined;
  }

  #shed(priority: number, excess: number): QueueRecord[] {
    const shed: QueueRecord[] = [];
    for (let freed = 0; freed < excess;) {
      const victim = this.evict(priority);
      if (!victim) break;
      freed += (victim as LocalRecord).bytes;
      shed.push(victim);
    }
    return shed;
  }

  take(): QueueRecord | undefined {
    if (this.#closed) return undefined;
    const record = this.#ready.shift();
    if (record) this.#hold(record);
    return record;
  }

  evict(priority: number): QueueRecord | undefined {
    const record = this.#ready.popLowest(priority);
    if (record) this.#hold(record);
    return record;
  }

  release(record: QueueRecord): void {
    const held = this.#own(record, 'held');
    this.#held--;
    held.state = 'ready';
    this.#push(held);
  }

  recordAttempt(record: QueueRecord): number {
    const held = this.#own(record, 'held');
    held.attempts++;
    this.#journal?.attempt(held);
    return held.attempts;
  }

  settle(record: QueueRecord, outcome: QueueOutcome): void {
    if ((record as LocalRecord).state === 'settled') return;
    const held = this.#own(record, 'held');
    held.state = 'settled';
    this.#held--;
    this.#journal?.settle(held, outcome);
  }

  onAvailable(listener: () => void): void {
    this.#onAvailable = listener;
  }

  /** Puts back a record found by recovery, without storing it again. */
  restore(record: LocalRecord): void {
    this.#push(record);
  }

  /** Queues records that arrived from elsewhere (a takeover) and tells the listener. */
  arrive(records: readonly LocalRecord[]): void {
    if (records.length === 0) return;
    for (const record of records) this.#push(record);
    this.#onAvailable?.();
  }

  close(): void {
    this.#closed = true;
  }

  #push(record: LocalRecord): void {
    const priority = record.message.priority;
    this.#ready.push(priority, record);
    this.#bytesAt[priority]! += record.bytes;
    this.#bytes += record.bytes;
  }

  #hold(record: LocalRecord): void {
    this.#bytesAt[record.message.priority]! -= record.bytes;
    this.#bytes -= record.bytes;
    this.#held++;
    record.state = 'held';
  }

  #own(record: QueueRecord, state: RecordState): LocalRecord {
    if (!(record instanceof LocalRecord) || record.queue !== this) {
      throw new Error(`record ${record.message.id} does not belong to the queue of ${this.target}`);
    }
    if (record.state !== state) throw new Error(`record ${record.message.id} is ${record.state}, not ${state}`);
    return record;
  }
}

/** The queues of a store that lives in this process, one per target. */
export abstract class LocalQueueStore implements QueueStore {
  abstract readonly recovery: RecoveryReport;
  readonly #journal: Journal | undefined;
  readonly #queues = new Map<string, LocalTargetQueue>();
  #closed = false;

  constructor(journal: Journal | undefined) {
    this.#journal = journal;
  }

  queue(target: string, limits?: QueueLimits): LocalTargetQueue {
    let queue = this.#queues.get(target);
    if (!queue) {
      queue = new LocalTargetQueue(target, this.#journal);
      if (this.#closed) queue.close();
      this.#queues.set(target, queue);
    }
    if (limits) queue.limit(limits);
    return queue;
  }

  protected closeQueues(): void {
    this.#closed = true;
    for (const queue of this.#queues.values()) queue.close();
  }

  abstract close(): Promise<void>;
}
