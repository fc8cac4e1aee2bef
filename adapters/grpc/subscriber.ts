import { constants as http2, type ServerHttp2Stream } from 'node:http2';
import { Metadata, status as Status, type ServerWritableStream, type StatusObject } from '@grpc/grpc-js';
import {
  SubscriberBuffer,
  type BufferLimits, type BusSubscription, type SlowConsumerCounts, type GroupDelivery, type GroupMember, type GroupMembership, type Message,
} from '../../src/index.js';
import { deliveryBytes } from './mapping.js';
import type { DeliveryOut, SubscribeRequestIn } from './proto.js';

/** The adapter's running totals, shared by every stream. */
export interface SubscriberCounters {
  /** qos 0 deliveries dropped for slow subscribers; streams ended with RESOURCE_EXHAUSTED */
  readonly slowConsumers: SlowConsumerCounts;
  /** deliveries that expired while waiting in a buffer */
  expired: number;
  /** the most payload bytes any one subscriber held (buffered plus handed to grpc-js, unsent) */
  peakBytes: number;
}

/** How far behind a subscriber may fall (grpc.subscriberBuffer, grpc.drainTimeout). */
export interface SubscriberPolicy {
  buffer: BufferLimits;
  /** ms a delivery handed to the call may stay unsent before the stream ends */
  drainTimeout: number;
}

/** A `junction.v1.Delivery` as protobuf bytes (proto.ts GatewayProto.encodeDelivery). */
export type DeliveryEncoder = (delivery: DeliveryOut) => Buffer;

/** A delivery waiting for a slow subscriber. */
interface Waiting {
  message: Message;
  priority: number;
  droppable: boolean;
  bytes: number;
}

/**
 * One Subscribe call. Deliveries go straight to the call while it keeps up; when grpc-js says
 * stop (`write()` false, until 'drain') or too many bytes are written but not yet sent, they
 * wait in a bounded SubscriberBuffer (the slow-consumer policy of every protocol). A subscriber
 * that falls too far behind loses qos 0 deliveries, then its stream (RESOURCE_EXHAUSTED): when a
 * qos 1 delivery finds no room, or when nothing it was handed is sent for grpc.drainTimeout.
 */
export class SubscriberStream implements GroupMember {
  subscription: BusSubscription | undefined;
  /** set when the stream is a group member: its share of the group's messages comes through `offer` */
  membership: GroupMembership | undefined;
  /** qos 1 group deliveries written and not yet acknowledged (Ack), by message id */
  readonly #pending = new Map<string, GroupDelivery>();
  /** declined a group delivery: the group is told once the stream has room */
  #groupWaiting = false;
  readonly #call: ServerWritableStream<SubscribeRequestIn, Buffer>;
  readonly #encode: DeliveryEncoder;
  readonly #buffer: SubscriberBuffer<Waiting>;
  readonly #limits: BufferLimits;
  readonly #drainTimeout: number;
  /** bytes written to the call whose HTTP/2 write has not completed: the client's unread window */
  readonly #unsentLimit: number;
  readonly #counters: SubscriberCounters;
  readonly #onClose: () => void;
  #unsentBytes = 0;
  /** ms since epoch when a write last completed, or when the writes now unsent began */
  #progressAt = 0;
  #drainTimer: NodeJS.Timeout | undefined;
  #awaitingDrain = false;
  #droppedSinceLast = 0;
  #dropped = 0;
  /** false until the response headers are sent: a delivery written first would send default ones */
  #started = false;
  #closed = false;

  constructor(call: ServerWritableStream<SubscribeRequestIn, Buffer>, policy: SubscriberPolicy, counters: SubscriberCounters, encode: DeliveryEncoder, onClose: () => void) {
    const limits = policy.buffer;
    this.#call = call;
    this.#encode = encode;
    this.#limits = limits;
    this.#drainTimeout = policy.drainTimeout;
    this.#buffer = new SubscriberBuffer<Waiting>(() => limits);
    // grpc-js queues up to 16 messages before write() says false; with large payloads that alone
    // could exceed the buffer, so unsent bytes are capped too, at a quarter of the buffer.
    this.#unsentLimit = Math.max(1, Math.floor(limits.bytes / 4));
    this.#counters = counters;
    this.#onClose = onClose;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sends what arrived while subscribing, then delivers as messages come. */
  start(): void {
    this.#started = true;
    this.#flush();
  }

  push(message: Message): void {
    if (this.#closed) return;
    if (this.#buffer.size === 0 && this.#canWrite()) {
      this.#write(message);
      return;
    }
    const outcome = this.#buffer.add({ message, priority: message.priority, droppable: message.qos === 0, bytes: message.payload.length });
    if (outcome.queued) {
      this.#drop(outcome.dropped);
      this.#notePeak();
    } else if (outcome.dropped === 1) {
      this.#drop(1);
    } else {
      this.#cut(`subscriber too slow: ${this.#buffer.size} deliveries (${this.#buffer.bytes} bytes) wait for it, the limit is ${this.#limits.messages} messages or ${this.#limits.bytes} bytes (grpc.subscriberBuffer)`);
    }
  }

  /**
   * Ends a subscriber that fell too far behind. Its trailers would wait behind the deliveries it
   * does not read, and those stay queued in the HTTP/2 stream until the connection closes: when
   * some are unsent, the stream is reset instead, with ENHANCE_YOUR_CALM (gRPC clients report
   * RESOURCE_EXHAUSTED), which drops them at once while the connection stays open.
   */
  #cut(details: string): void {
    this.#counters.slowConsumers.disconnected++;
    const stuck = this.#unsentBytes > 0 ? http2StreamOf(this.#call) : undefined;
    this.end({ code: Status.RESOURCE_EXHAUSTED, details, metadata: this.#trailers() });
    if (stuck === undefined) return;
    stuck.close(http2.NGHTTP2_ENHANCE_YOUR_CALM);
    this.#unsentBytes = 0;
  }

  /** Stops delivering, releases what is buffered and ends the call with `status` (OK when absent). */
  end(status?: StatusObject): void {
    if (this.#closed) return;
    this.close();
    if (status) this.#call.emit('error', status);
    else this.#call.end(this.#trailers());
  }

  /**
   * A group delivery is written only while the stream keeps up: a backed-up member declines and
   * the group hands the message to another (this one is told when it has room again).
   */
  offer(delivery: GroupDelivery): boolean {
    if (this.#closed) return false;
    if (this.#buffer.size > 0 || !this.#canWrite()) {
      this.#groupWaiting = true;
      return false;
    }
    const { message } = delivery;
    if (this.#write(message) && message.qos > 0) this.#pending.set(message.id, delivery);
    else delivery.settle();
    return true;
  }

  /** The client acknowledged these group deliveries; returns how many were still held. */
  acknowledge(ids: readonly string[]): number {
    let acked = 0;
    for (const id of ids) {
      const delivery = this.#pending.get(id);
      if (delivery === undefined) continue;
      this.#pending.delete(id);
      delivery.settle();
      acked++;
    }
    return acked;
  }

  /** Stops delivering and releases the buffer and the bus subscription; the call is left as it is. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#drainTimer);
    this.#buffer.clear();
    this.#call.removeListener('drain', this.#onDrain);
    void this.subscription?.close();
    this.#pending.clear();
    // Leaving hands what the client did not acknowledge to the other members.
    this.membership?.leave();
    this.#onClose();
  }

  #trailers(): Metadata {
    const metadata = new Metadata();
    metadata.set('junction-dropped', String(this.#dropped));
    return metadata;
  }

  #drop(count: number): void {
    this.#dropped += count;
    this.#droppedSinceLast += count;
    this.#counters.slowConsumers.shed += count;
  }

  #notePeak(): void {
    const held = this.#buffer.bytes + this.#unsentBytes;
    if (held > this.#counters.peakBytes) this.#counters.peakBytes = held;
  }

  #canWrite(): boolean {
    return this.#started && !this.#awaitingDrain && this.#unsentBytes < this.#unsentLimit;
  }

  /** Writes a delivery; false when it had expired and was dropped (counted) instead. */
  #write(message: Message): boolean {
    const now = Date.now();
    if (message.expiresAt !== undefined && message.expiresAt <= now) {
      this.#counters.expired++;
      return false;
    }
    const size = message.payload.length;
    if (this.#unsentBytes === 0) this.#progressAt = now;
    this.#unsentBytes += size;
    this.#notePeak();
    this.#drainTimer ??= this.#watchDrain(this.#drainTimeout);
    // Bytes, which Subscribe's serializer passes through (proto.ts).
    const ok = this.#call.write(deliveryBytes(message, this.#droppedSinceLast, now, this.#encode), () => {
      this.#unsentBytes -= size;
      this.#progressAt = Date.now();
      this.#flush();
    });
    this.#droppedSinceLast = 0;
    if (!ok) {
      this.#awaitingDrain = true;
      this.#call.once('drain', this.#onDrain);
    }
    return true;
  }

  /** One timer per stream while it has unsent writes, rather than one per write. */
  #watchDrain(delay: number): NodeJS.Timeout {
    const timer = setTimeout(() => {
      this.#drainTimer = undefined;
      if (this.#closed || this.#unsentBytes === 0) return;
      const stalled = Date.now() - this.#progressAt;
      if (stalled >= this.#drainTimeout) this.#cut(`subscriber too slow: nothing it was sent was read for ${stalled} ms (grpc.drainTimeout)`);
      else this.#drainTimer = this.#watchDrain(this.#drainTimeout - stalled);
    }, delay);
    timer.unref();
    return timer;
  }

  readonly #onDrain = (): void => {
    this.#awaitingDrain = false;
    this.#flush();
  };

  #flush(): void {
    while (!this.#closed && this.#canWrite()) {
      const next = this.#buffer.shift();
      if (next === undefined) break;
      this.#write(next.message);
    }
    if (this.#groupWaiting && !this.#closed && this.#buffer.size === 0 && this.#canWrite()) {
      this.#groupWaiting = false;
      this.membership?.ready();
    }
  }
}

/** how many interceptors' calls deep the HTTP/2 stream is looked for */
const MAX_CALL_LAYERS = 8;

/**
 * The HTTP/2 stream under a grpc-js server call, which grpc-js keeps to itself: the call's
 * `call`, through each server interceptor's `nextCall`, to the one that holds `stream`. Undefined
 * when a grpc-js version keeps it elsewhere (the slow-consumer tests then fail on the reset).
 */
function http2StreamOf(call: object): ServerHttp2Stream | undefined {
  let layer = (call as { call?: unknown }).call;
  for (let depth = 0; depth < MAX_CALL_LAYERS && typeof layer === 'object' && layer !== null; depth++) {
    const stream = (layer as { stream?: unknown }).stream;
    if (typeof stream === 'object' && stream !== null && typeof (stream as ServerHttp2Stream).close === 'function') return stream as ServerHttp2Stream;
    layer = (layer as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}
