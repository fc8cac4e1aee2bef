import { MAX_PRIORITY } from '../message.js';
import { Fifo } from './fifo.js';

/** What a subscriber's buffer needs to know of what it holds. */
export interface Buffered {
  /** 0–9 for deliveries; CONTROL_PRIORITY for the protocol's own answers */
  readonly priority: number;
  /** a qos 0 delivery: may be dropped for a slow subscriber; qos 1 deliveries and answers may not */
  readonly droppable: boolean;
  /** what it counts against the subscriber's byte bound */
  readonly bytes: number;
}

/** Answers to the subscriber's own requests (acks, replies, errors, pongs) rank above every delivery. */
export const CONTROL_PRIORITY = MAX_PRIORITY + 1;

export interface BufferLimits {
  messages: number;
  bytes: number;
}

export type AddOutcome =
  /** buffered; `dropped` buffered qos 0 deliveries made room for it */
  | { queued: true; dropped: number }
  /** the item was a qos 0 delivery ranking below everything droppable: dropped itself */
  | { queued: false; dropped: 1 }
  /** no room, and nothing may be dropped to make some: the subscriber is too slow */
  | { queued: false; dropped: 0 };

interface Entry<T> {
  seq: number;
  item: T;
}

/**
 * What waits for one slow subscriber, on every protocol: the one slow-consumer policy.
 * - Bounded in items and bytes; an empty buffer takes one item whatever its size, so a large
 *   payload cannot wedge a subscriber.
 * - Items leave highest priority first, in arrival order within a priority (answers before any
 *   delivery).
 * - To make room, qos 0 deliveries are dropped, lowest priority first and the oldest of a
 *   priority first: fresher data wins. An incoming qos 0 delivery of a priority below every
 *   droppable one buffered is dropped itself. qos 1 deliveries and answers are never dropped:
 *   when they do not fit, the subscriber is too slow and its protocol ends it.
 */
export class SubscriberBuffer<T extends Buffered> {
  /** read on every add, so limits a reload changes apply at once */
  readonly #limits: () => BufferLimits;
  /** index: priority * 2 + (droppable ? 0 : 1) */
  readonly #fifos: Fifo<Entry<T>>[] = Array.from({ length: (CONTROL_PRIORITY + 1) * 2 }, () => new Fifo<Entry<T>>());
  #seq = 0;
  #size = 0;
  #bytes = 0;

  constructor(limits: () => BufferLimits) {
    this.#limits = limits;
  }

  get size(): number {
    return this.#size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Buffers `item`, dropping qos 0 deliveries to make it fit. `heldElsewhere` is what the
   * subscriber already holds outside this buffer (a socket's own send buffer) and counts against
   * the byte bound too.
   */
  add(item: T, heldElsewhere = 0): AddOutcome {
    const limits = this.#limits();
    let dropped = 0;
    while (this.#size > 0 && !this.#fits(item, heldElsewhere, limits)) {
      const victim = this.#lowestDroppable();
      if (victim === undefined || (item.droppable && item.priority < victim)) break;
      this.#take(this.#fifos[victim * 2]!);
      dropped++;
    }
    if (this.#size > 0 && !this.#fits(item, heldElsewhere, limits)) {
      return item.droppable ? { queued: false, dropped: 1 } : { queued: false, dropped: 0 };
    }
    this.#fifos[item.priority * 2 + (item.droppable ? 0 : 1)]!.push({ seq: this.#seq++, item });
    this.#size++;
    this.#bytes += item.bytes;
    return { queued: true, dropped };
  }

  /** the next item to send: highest priority, then oldest */
  shift(): T | undefined {
    for (let priority = CONTROL_PRIORITY; priority >= 0; priority--) {
      const droppable = this.#fifos[priority * 2]!;
      const kept = this.#fifos[priority * 2 + 1]!;
      const a = droppable.first;
      const b = kept.first;
      if (a === undefined && b === undefined) continue;
      return this.#take(b === undefined || (a !== undefined && a.seq < b.seq) ? droppable : kept);
    }
    return undefined;
  }

  /** Releases everything at once (the subscriber is gone). */
  clear(): void {
    for (let i = 0; i < this.#fifos.length; i++) this.#fifos[i] = new Fifo<Entry<T>>();
    this.#size = 0;
    this.#bytes = 0;
  }

  #fits(item: T, heldElsewhere: number, limits: BufferLimits): boolean {
    return this.#size < limits.messages && this.#bytes + heldElsewhere + item.bytes <= limits.bytes;
  }

  #lowestDroppable(): number | undefined {
    for (let priority = 0; priority <= MAX_PRIORITY; priority++) {
      if (this.#fifos[priority * 2]!.size > 0) return priority;
    }
    return undefined;
  }

  #take(fifo: Fifo<Entry<T>>): T {
    const { item } = fifo.shift()!;
    this.#size--;
    this.#bytes -= item.bytes;
    return item;
  }
}
