import { Fifo, MAX_PRIORITY, type Message } from '../../src/index.js';

export interface BufferLimits {
  messages: number;
  bytes: number;
}

interface Entry {
  seq: number;
  message: Message;
}

export type AddOutcome =
  /** buffered; `dropped` older qos 0 deliveries made room for it */
  | { ok: true; dropped: number }
  /** the incoming delivery was qos 0 and of the lowest priority: dropped instead */
  | { ok: false; droppedIncoming: true }
  /** full of deliveries that may not be dropped: the subscriber is too slow */
  | { ok: false; droppedIncoming: false };

/**
 * Deliveries waiting for a slow subscriber, in arrival order, bounded in messages and payload
 * bytes. When full it makes room by dropping qos 0 deliveries, lowest priority first and the
 * oldest of a priority first (fresher data wins); qos 1 deliveries are never dropped.
 *
 * One FIFO per (priority, droppable) pair; a global sequence number restores arrival order
 * on the way out, so dropping never has to search or leave holes behind.
 */
export class DeliveryBuffer {
  readonly #limits: BufferLimits;
  /** index: priority * 2 + (qos 0 ? 0 : 1) */
  readonly #queues: Fifo<Entry>[] = Array.from({ length: (MAX_PRIORITY + 1) * 2 }, () => new Fifo<Entry>());
  #seq = 0;
  #size = 0;
  #bytes = 0;

  constructor(limits: BufferLimits) {
    this.#limits = limits;
  }

  get size(): number {
    return this.#size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  add(message: Message): AddOutcome {
    let dropped = 0;
    while (this.#size > 0 && !this.#fits(message)) {
      const victim = this.#lowestDroppable();
      if (victim === undefined) return { ok: false, droppedIncoming: message.qos === 0 };
      if (message.qos === 0 && message.priority < victim) return { ok: false, droppedIncoming: true };
      this.#take(this.#queues[victim * 2]!);
      dropped++;
    }
    this.#queues[message.priority * 2 + (message.qos === 0 ? 0 : 1)]!.push({ seq: this.#seq++, message });
    this.#size++;
    this.#bytes += message.payload.length;
    return { ok: true, dropped };
  }

  /** the oldest delivery, in arrival order */
  shift(): Message | undefined {
    let oldest: Fifo<Entry> | undefined;
    for (const queue of this.#queues) {
      const first = queue.first;
      if (first !== undefined && (oldest === undefined || first.seq < oldest.first!.seq)) oldest = queue;
    }
    return oldest === undefined ? undefined : this.#take(oldest);
  }

  clear(): void {
    while (this.shift() !== undefined);
  }

  /** an empty buffer takes any one delivery, however large, so a big payload cannot wedge it */
  #fits(message: Message): boolean {
    return this.#size < this.#limits.messages && this.#bytes + message.payload.length <= this.#limits.bytes;
  }

  #lowestDroppable(): number | undefined {
    for (let priority = 0; priority <= MAX_PRIORITY; priority++) {
      if (this.#queues[priority * 2]!.size > 0) return priority;
    }
    return undefined;
  }

  #take(queue: Fifo<Entry>): Message {
    const { message } = queue.shift()!;
    this.#size--;
    this.#bytes -= message.payload.length;
    return message;
  }
}
