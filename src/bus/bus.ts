import type { Message } from '../message.js';

/**
 * Receives a delivery. It runs inside `publish`, so it must not block or throw: a subscriber
 * that cannot write at once buffers (and sheds by its own policy), never waits. A subscriber that
 * takes a message asynchronously (the embedded MQTT broker, whose clients' sockets are written
 * later and may be full) may return a promise of when it has: an in-process publish waits for it,
 * and that wait is what slows a publisher down to what the subscribers take instead of buffering
 * in between. Any other value returned is ignored.
 */
export type BusHandler = (message: Message, origin?: BusOrigin) => unknown;

/**
 * Where a QoS ≥ 1 message entered the bus across nodes, the same on every node it reaches: the
 * publishing process (a node id with a per-start suffix, so a restarted node starts a new count)
 * and the message's place in that process's publish order, which every node delivers in. It lets
 * state shared by the nodes (MQTT sessions in Redis) name one message the same way everywhere.
 * The in-process bus, QoS 0 messages and the retained messages a starting node restores
 * (RedisBus.restoreRetained) have none.
 */
export interface BusOrigin {
  readonly publisher: string;
  readonly sequence: number;
}

export interface SubscribeOptions {
  /** the subscriber answers requests, so `deliverToOne` may pick it (WS, gRPC can; SSE cannot) */
  responder?: boolean;
  /**
   * A responder handed requests only, not what is published: for an engine that gets the
   * publishes through `subscribeAll` already (the embedded MQTT broker).
   */
  requestsOnly?: boolean;
}

export interface BusSubscription {
  readonly pattern: string;
  /** Stops deliveries to this subscription; closing twice is harmless. */
  close(): Promise<void>;
}

/**
 * What `publish` returns when every subscriber had the message by the time it returned: a publisher
 * that recognises it may go on at once, without waiting for a promise reaction; others await it.
 */
export const TAKEN: Promise<void> = Promise.resolve();

/**
 * Fan-out of published messages to subscribers of every protocol. The core owns it and knows
 * nothing of any protocol; adapters are subscribers like any other.
 *
 * The contract every implementation keeps (test/bus/bus-suite.ts checks it):
 * - `publish` hands the message to every subscription whose pattern matches its key by MQTT's
 *   topic rules (src/topic/rules.ts) once, and to every `subscribeAll` handler once; it resolves
 *   once each has it. The in-process bus also waits for a promise a handler returned (a
 *   rejection is the handler's failure, not the publisher's); a bus that carries messages to
 *   other processes resolves once it handed the message over. Handlers of one subscription see
 *   one publisher's messages in publish order.
 * - Handlers get the published object itself and must not change it.
 * - A subscription delivers nothing after `close()` resolves, and nothing after the bus closed.
 * - `deliverToOne` hands a request to one responder whose pattern matches, in turn among them.
 */
export interface Bus {
  publish(message: Message): Promise<void>;
  /** Deliveries of every key the pattern (a valid topic filter) matches. */
  subscribe(pattern: string, handler: BusHandler, options?: SubscribeOptions): Promise<BusSubscription>;
  /**
   * Every message published, whatever its key (`$` keys too): for an engine that matches its
   * own subscriptions and keeps state per key, as the embedded MQTT broker does (retained
   * messages, offline queues of persistent sessions).
   */
  subscribeAll(handler: BusHandler): Promise<BusSubscription>;
  /** Hands a request to one responder subscribed to its key; resolves false when there is none. */
  deliverToOne(message: Message): Promise<boolean>;
  /** pattern subscriptions held, for metrics */
  readonly subscriptionCount: number;
  close(): Promise<void>;
}
