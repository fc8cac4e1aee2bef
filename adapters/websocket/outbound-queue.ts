import { Fifo, MAX_PRIORITY } from '../../src/index.js';

export interface Outbound {
  /** the frame, or how to make it: a delivery is encoded only if it is sent, not when dropped */
  data: Buffer | string | (() => Buffer);
  /** what it counts against the socket's outbound limit */
  bytes: number;
  priority: number;
  /** a qos 0 delivery: may be dropped for a slow consumer; responses and qos 1 deliveries may not */
  droppable: boolean;
}

interface Entry {
  seq: number;
  item: Outbound;
}

/** Responses (ack, reply, error, pong) rank above every delivery priority. */
export const RESPONSE_PRIORITY = MAX_PRIORITY + 1;

export type AddResult =
  /** queued; `dropped` queued qos 0 deliveries made room for it */
  | { queued: true; dropped: number }
  /** the item was a qos 0 delivery ranking no higher than anything droppable: dropped itself */
  | { queued: false; dropped: 1 }
  /** no room and nothing left to drop: the consumer is too slow */
  | { queued: false; dropped: 0 };

/**
 * Frames waiting for a slow socket, bounded in bytes. They leave highest priority first (a
 * response before any delivery), in arrival order within a priority. To make room, qos 0
 * deliveries are dropped lowest priority first, the oldest of a priority first (fresher data
 * wins); responses and qos 1 deliveries are never dropped.
 */
export class OutboundQueue {
  /** index: priority * 2 + (droppable ? 0 : 1) */
  readonly #fifos: Fifo<Entry>[] = Array.from({ length: (RESPONSE_PRIORITY + 1) * 2 }, () => new Fifo<Entry>());
  #seq = 0;
  #size = 0;
  #bytes = 0;

  get size(): number {
    return this.#size;
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** Queues `item` if it fits in `room` bytes (what the socket's limit leaves), dropping to make it fit. */
  add(item: Outbound, room: number): AddResult {
    let dropped = 0;
    while (this.#bytes + item.bytes > room && this.#size > 0) {
      const victim = this.#lowestDroppable();
      if (victim === undefined || (item.droppable && item.priority <= victim)) break;
      this.#take(this.#fifos[victim * 2]!);
      dropped++;
    }
    // An empty queue takes one item whatever its size, so one large frame cannot wedge a socket.
    if (this.#bytes + item.bytes > room && this.#size > 0) {
      return item.droppable ? { queued: false, dropped: 1 } : { queued: false, dropped: 0 };
    }
    this.#fifos[item.priority * 2 + (item.droppable ? 0 : 1)]!.push({ seq: this.#seq++, item });
    this.#size++;
    this.#bytes += item.bytes;
    return { queued: true, dropped };
  }

  /** the next frame to send: highest priority, then oldest */
  shift(): Outbound | undefined {
    for (let priority = RESPONSE_PRIORITY; priority >= 0; priority--) {
      const droppable = this.#fifos[priority * 2]!;
      const kept = this.#fifos[priority * 2 + 1]!;
      const a = droppable.first;
      const b = kept.first;
      if (a === undefined && b === undefined) continue;
      return this.#take(b === undefined || (a !== undefined && a.seq < b.seq) ? droppable : kept);
    }
    return undefined;
  }

  clear(): void {
    for (let i = 0; i < this.#fifos.length; i++) this.#fifos[i] = new Fifo<Entry>();
    this.#size = 0;
    this.#bytes = 0;
  }

  #lowestDroppable(): number | undefined {
    for (let priority = 0; priority <= MAX_PRIORITY; priority++) {
      if (this.#fifos[priority * 2]!.size > 0) return priority;
    }
    return undefined;
  }

  #take(fifo: Fifo<Entry>): Outbound {
    const { item } = fifo.shift()!;
    this.#size--;
    this.#bytes -= item.bytes;
    return item;
  }
}
