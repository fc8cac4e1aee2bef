import type { Duplex } from 'node:stream';
import { WebSocket } from 'ws';
import {
  CLOSE_CODES, CONTROL_PRIORITY, GatewayError, isExpired, onExpiry, ReplyGrants, SubscriberBuffer, toGatewayError,
  type DeliveryAckFrame, type GroupDelivery, type GroupMembership,
  type AdapterContext, type BusSubscription, type ErrorCode, type Identity, type Message, type MessageSource, type SlowConsumerCounts,
  type ClientFrame, type FrameId, type PublishFrame, type RequestFrame, type SubscribeFrame, type UnsubscribeFrame,
} from '../../src/index.js';
import type { WebSocketSettings } from './config.js';
import { errorFrame, frameIdOf, messageFrame, parseFrame, replyFrame, toMessage, type MessageFrame } from './frames.js';

/** What every connection shares with the adapter: counters and the adapter's view of the config. */
export interface ConnectionHost {
  readonly ctx: AdapterContext<WebSocketSettings>;
  readonly counters: WebSocketCounters;
  peakOutboundBytes: number;
  /** qos 0 deliveries dropped for slow consumers, and sockets closed with 1013 as slow consumers */
  readonly slowConsumers: SlowConsumerCounts;
  forget(connection: Connection): void;
}

/** What the adapter counts beyond refusals; docs/websocket.md says what each means. */
export interface WebSocketCounters {
  /** sockets terminated for not answering pings */
  reaped: number;
  /** sockets closed with 4408 for idling */
  idleClosed: number;
  /** handshakes refused (credentials, limits, draining); each is also a refusal by its code */
  handshakesRefused: number;
  /** deliveries that expired before they could be sent, never sent */
  expired: number;
}

interface Subscription {
  sub: FrameId;
  responder: boolean;
  bus: BusSubscription | undefined;
  closed: boolean;
  /** set on a group subscription: its membership and the qos 1 deliveries awaiting the client's ack */
  group?: { membership: GroupMembership | undefined; pending: Map<string, GroupDelivery> };
}

/** Subscriptions by pattern; a group's by group and pattern (neither can hold NUL). */
function subscriptionKey(key: string, group: string | undefined): string {
  return group === undefined ? key : `${group}\u0000${key}`;
}

/** ws's options for a text frame; one object for every send */
const TEXT = { binary: false } as const;
/** bytes a response frame counts for: small, never dropped */
const RESPONSE_BYTES = 256;
/** what a delivery counts for beyond its payload: key, headers and the JSON around them, roughly */
const FRAME_OVERHEAD = 256;

/** A frame waiting for the socket: a delivery is encoded only if it is sent, not when dropped. */
interface Outbound {
  data: MessageFrame | string | (() => MessageFrame);
  bytes: number;
  priority: number;
  droppable: boolean;
  /** a delivery's expiry: past it, it is dropped (and counted) rather than sent */
  expiresAt?: number;
}

let nextConnection = 0;

/**
 * One client socket: its frames in, its deliveries and responses out. Outbound frames go
 * straight to the socket while its buffer is below a high-water mark; past it they wait in a bounded
 * SubscriberBuffer, which drops qos 0 deliveries lowest priority first and closes the socket
 * with 1013 when it cannot take a frame that may not be dropped. Inbound, at most
 * `maxInflight` frames are processed at once: past it the socket is not read.
 */
export class Connection {
  readonly id = `ws-${(++nextConnection).toString(36)}`;
  readonly socket: WebSocket;
  /**
   * The stream under `socket`, when deliveries may be written to it as whole frames: with no
   * extension negotiated, ws writes every frame of its own at once, in order, so frames written
   * beside them stay whole and in order. A frame written here costs one buffer and one write,
   * where ws's `send` builds a header and writes the two parts corked.
   */
  readonly #wire: Duplex | undefined;
  readonly remoteAddress: string;
  /** ms since epoch */
  readonly since = Date.now();
  readonly #host: ConnectionHost;
  readonly #identity: Identity;
  readonly #source: MessageSource;
  // The collections below are made when first needed: an idle socket holds none of them (an
  // empty Map is about 180 bytes, and idle memory per connection is one of the goals).
  #subscriptions: Map<string, Subscription> | undefined;
  /** group subscriptions by their `sub`, for the client's acks */
  #groupSubs: Map<FrameId, Subscription> | undefined;
  /** group subscriptions that declined a delivery while the socket was full: told when it drains */
  #groupsWaiting: Set<Subscription> | undefined;
  /** requests handed to this socket, whose reply key it may publish to whatever the ACL says */
  #replyGrants: ReplyGrants | undefined;
  #queue: SubscriberBuffer<Outbound> | undefined;
  #waitingDrain = false;
  #stalledSince = 0;
  #inflight = 0;
  #paused = false;
  /** frames ws had already read when the socket was paused: ws still emits those */
  #held: { data: Buffer; isBinary: boolean }[] | undefined;
  /** the gateway is stopping: the socket stays unread */
  #draining = false;
  #closed = false;
  /** ms since epoch of the last frame or pong from the client */
  lastHeard = Date.now();
  /** ms since epoch of the last frame (not pong) from the client */
  lastFrame = Date.now();
  awaitingPong = false;
  /** in-flight operations, so a shutdown can wait for them */
  #work: Set<Promise<void>> | undefined;
  readonly #cancelExpiry: () => void;

  /** `stream` is the upgraded TCP or TLS socket `socket` runs on. */
  constructor(socket: WebSocket, stream: Duplex, host: ConnectionHost, identity: Identity, remoteAddress: string) {
    this.socket = socket;
    this.#wire = socket.extensions === '' ? stream : undefined;
    this.#host = host;
    this.#identity = identity;
    this.remoteAddress = remoteAddress;
    this.#source = {
      protocol: 'ws',
      clientId: this.id,
      remoteAddress,
      ...(identity.principal !== undefined ? { principal: identity.principal } : {}),
    };
    socket.on('message', (data: Buffer, isBinary: boolean) => this.#onData(data, isBinary));
    socket.on('pong', () => {
      this.lastHeard = Date.now();
      this.awaitingPong = false;
    });
    socket.once('close', () => this.#onClose());
    // A socket does not outlive the credential it opened with (a JWT's exp): 4401, as a handshake 401.
    this.#cancelExpiry = onExpiry(identity, () => this.close(CLOSE_CODES.unauthenticated, 'the credential expired'));
  }

  get closed(): boolean {
    return this.#closed;
  }

  get principal(): string | undefined {
    return this.#identity.principal;
  }

  get subscriptionCount(): number {
    return this.#subscriptions?.size ?? 0;
  }

  get inflight(): number {
    return this.#inflight;
  }

  /** paused by the gateway (inflight limit or shutdown): not read, so not expected to answer pings */
  get paused(): boolean {
    return this.#paused;
  }

  /** frames are waiting and the socket has taken none of them since this time (ms since epoch), else 0 */
  get stalledSince(): number {
    return this.#waitingDrain ? this.#stalledSince : 0;
  }

  get #settings(): WebSocketSettings {
    return this.#host.ctx.settings();
  }

  // -------------------------------------------------------------------------------------------
  // Inbound

  #onData(data: Buffer, isBinary: boolean): void {
    if (this.#closed) return;
    const now = Date.now();
    this.lastHeard = now;
    this.lastFrame = now;
    this.awaitingPong = false;
    if (this.#paused) {
      (this.#held ??= []).push({ data, isBinary });
      return;
    }
    this.#onFrame(data, isBinary);
  }

  #onFrame(data: Buffer, isBinary: boolean): void {
    if (isBinary) {
      this.#refuseFrame('bad_request', CLOSE_CODES.unsupportedData, 'binary frames are not accepted: send JSON text frames');
      return;
    }
    // The WebSocket server's limit serves /mqtt too; /ws has its own.
    if (data.length > this.#settings.maxFrameSize) {
      this.#refuseFrame('too_large', CLOSE_CODES.tooBig, `frame larger than websocket.maxFrameSize (${this.#settings.maxFrameSize} bytes)`);
      return;
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(data.toString('utf8'));
    } catch {
      this.#refuseFrame('bad_request', CLOSE_CODES.invalidPayload, 'frame is not valid JSON');
      return;
    }
    let frame: ClientFrame;
    try {
      frame = parseFrame(parsed);
    } catch (err) {
      this.#respondError(toGatewayError(err), frameIdOf(parsed));
      return;
    }
    this.#handle(frame);
  }

  /** A frame refused by closing the socket: counted like any refusal. */
  #refuseFrame(code: ErrorCode, closeCode: number, reason: string): void {
    this.#host.ctx.refused(code);
    this.close(closeCode, reason);
  }

  #handle(frame: ClientFrame): void {
    switch (frame.op) {
      case 'ping':
        this.#respond(JSON.stringify(frame.id !== undefined ? { op: 'pong', id: frame.id } : { op: 'pong' }));
        return;
      case 'publish':
        this.#track(this.#publish(frame));
        return;
      case 'request':
        this.#track(this.#request(frame));
        return;
      case 'subscribe':
        this.#track(this.#subscribe(frame));
        return;
      case 'unsubscribe':
        this.#track(this.#unsubscribe(frame));
        return;
      case 'ack':
        this.#acknowledge(frame);
        return;
    }
  }

  /** Counts an operation in flight; the socket is not read while `maxInflight` are. */
  #track(work: Promise<void>): void {
    this.#inflight++;
    (this.#work ??= new Set()).add(work);
    if (this.#inflight >= this.#settings.maxInflight && !this.#paused) {
      this.#paused = true;
      this.socket.pause();
    }
    void work.finally(() => {
      this.#inflight--;
      this.#work!.delete(work);
      if (this.#paused && !this.#draining && !this.#closed && this.#inflight < this.#settings.maxInflight) {
        this.#paused = false;
        this.socket.resume();
        while (!this.#paused && !this.#closed && this.#held?.length) {
          const { data, isBinary } = this.#held.shift()!;
          this.#onFrame(data, isBinary);
        }
      }
    });
  }

  /** Stops reading and resolves once every operation in flight has answered. */
  async drain(): Promise<void> {
    this.#draining = true;
    if (!this.#paused) {
      this.#paused = true;
      this.socket.pause();
    }
    while (this.#work !== undefined && this.#work.size > 0) await Promise.allSettled([...this.#work]);
  }

  #mayPublish(frame: PublishFrame): boolean {
    // A responder answering a request it was handed needs no ACL grant for the inbox key.
    if (this.#replyGrants?.take(frame.key, frame.correlationId, this.#identity.principal)) return true;
    return this.#host.ctx.access().canSend(this.#identity, frame);
  }

  async #publish(frame: PublishFrame): Promise<void> {
    try {
      if (!this.#mayPublish(frame)) throw forbidden('publish to', frame.key);
      const message = toMessage(frame, this.#source, this.#host.ctx.maxPayloadSize());
      const result = await this.#host.ctx.dispatch(message);
      if (frame.qos === 1) {
        this.#respond(JSON.stringify({ op: 'ack', id: frame.id, messageId: result.id, ...(result.expired ? { expired: true } : {}) }));
      }
    } catch (err) {
      this.#respondError(toGatewayError(err), frame.id);
    }
  }

  async #request(frame: RequestFrame): Promise<void> {
    try {
      if (!this.#host.ctx.access().canPublish(this.#identity, frame.key)) throw forbidden('send requests to', frame.key);
      const message = toMessage(frame, this.#source, this.#host.ctx.maxPayloadSize());
      const result = await this.#host.ctx.dispatch(message, { expectReply: true, ...(frame.timeout !== undefined ? { timeoutMs: frame.timeout } : {}) });
      this.#respond(replyFrame(frame.id, result.id, result.reply));
    } catch (err) {
      this.#respondError(toGatewayError(err), frame.id);
    }
  }

  async #subscribe(frame: SubscribeFrame): Promise<void> {
    try {
      const access = this.#host.ctx.access();
      if (!access.canSubscribe(this.#identity, frame.key)) throw forbidden('subscribe to', frame.key);
      if (frame.group !== undefined) {
        await this.#joinGroup(frame, frame.group);
        return;
      }
      // Answering requests is a permission of its own (the ACL's `respond`): asked for, it is
      // refused without it; left to the default, a subscription answers only where allowed.
      const mayRespond = access.canRespond(this.#identity, frame.key);
      if (frame.responder === true && !mayRespond) throw forbidden('answer requests on', frame.key);
      const responder = frame.responder ?? mayRespond;
      const subscriptions = this.#subscriptions ??= new Map();
      const existing = subscriptions.get(frame.key);
      if (existing && existing.responder === responder) {
        // Subscribing again to the same pattern replaces the subscription (as in MQTT): no duplicates.
        existing.sub = frame.id;
      } else {
        if (!existing) this.#checkRoom(subscriptions);
        const entry: Subscription = { sub: frame.id, responder, bus: undefined, closed: false };
        subscriptions.set(frame.key, entry);
        if (existing) await this.#closeSubscription(existing);
        const bus = await this.#host.ctx.subscribe(frame.key, (message) => this.#deliver(message, entry), { responder });
        // Unsubscribed, replaced or disconnected while the bus subscribed.
        if (entry.closed) {
          await bus.close();
          if (this.#closed) return;
        } else {
          entry.bus = bus;
        }
      }
      this.#respond(JSON.stringify({ op: 'ack', id: frame.id }));
    } catch (err) {
      this.#respondError(toGatewayError(err), frame.id);
    }
  }

  /** A group subscription: one share of the group's messages; the same group and pattern again renames it. */
  async #joinGroup(frame: SubscribeFrame, group: string): Promise<void> {
    const mapKey = subscriptionKey(frame.key, group);
    const subscriptions = this.#subscriptions ??= new Map();
    const groupSubs = this.#groupSubs ??= new Map();
    const existing = subscriptions.get(mapKey);
    if (existing) {
      groupSubs.delete(existing.sub);
      existing.sub = frame.id;
      groupSubs.set(frame.id, existing);
      this.#respond(JSON.stringify({ op: 'ack', id: frame.id }));
      return;
    }
    this.#checkRoom(subscriptions);
    const entry: Subscription = { sub: frame.id, responder: false, bus: undefined, closed: false, group: { membership: undefined, pending: new Map() } };
    subscriptions.set(mapKey, entry);
    groupSubs.set(frame.id, entry);
    const membership = await this.#host.ctx.joinGroup(group, frame.key, { offer: (delivery) => this.#offerGroup(entry, delivery) });
    // Unsubscribed or disconnected while joining.
    if (entry.closed) {
      membership.leave();
      if (this.#closed) return;
    } else {
      entry.group!.membership = membership;
    }
    this.#respond(JSON.stringify({ op: 'ack', id: frame.id }));
  }

  /** Refuses a subscription past websocket.maxSubscriptions, plain and group ones counted together. */
  #checkRoom(subscriptions: Map<string, Subscription>): void {
    const limit = this.#settings.maxSubscriptions;
    if (subscriptions.size >= limit) {
      throw new GatewayError('overloaded', `at most ${limit} subscriptions per socket (websocket.maxSubscriptions)`, { field: 'key' });
    }
  }

  async #unsubscribe(frame: UnsubscribeFrame): Promise<void> {
    const mapKey = subscriptionKey(frame.key, frame.group);
    const entry = this.#subscriptions?.get(mapKey);
    if (entry) {
      this.#subscriptions!.delete(mapKey);
      await this.#closeSubscription(entry);
    }
    this.#respond(JSON.stringify({ op: 'ack', id: frame.id }));
  }

  async #closeSubscription(entry: Subscription): Promise<void> {
    entry.closed = true;
    if (entry.group) {
      if (this.#groupSubs?.get(entry.sub) === entry) this.#groupSubs.delete(entry.sub);
      this.#groupsWaiting?.delete(entry);
      entry.group.pending.clear();
      // Leaving hands what this socket did not acknowledge to the other members.
      entry.group.membership?.leave();
    }
    await entry.bus?.close();
  }

  /** The client acknowledged a qos 1 group delivery; one it no longer holds (handed elsewhere) is ignored. */
  #acknowledge(frame: DeliveryAckFrame): void {
    const pending = this.#groupSubs?.get(frame.sub)?.group?.pending;
    const delivery = pending?.get(frame.id);
    if (delivery === undefined) return;
    pending!.delete(frame.id);
    delivery.settle();
  }

  // -------------------------------------------------------------------------------------------
  // Outbound

  /**
   * A group delivery is taken only while the socket keeps up: a socket that is backed up declines,
   * and the group gives the message to a member with room (this one is told when it drains).
   */
  #offerGroup(entry: Subscription, delivery: GroupDelivery): boolean {
    if (this.#closed || entry.closed) return false;
    if (this.#waitingDrain) {
      (this.#groupsWaiting ??= new Set()).add(entry);
      return false;
    }
    const { message } = delivery;
    if (isExpired(message)) {
      this.#host.counters.expired++;
      delivery.settle();
      return true;
    }
    this.#write(messageFrame(message, entry.sub), message.payload.length + message.key.length + FRAME_OVERHEAD);
    if (message.qos === 0) delivery.settle();
    else entry.group!.pending.set(message.id, delivery);
    return true;
  }

  #deliver(message: Message, entry: Subscription): void {
    if (this.#closed || entry.closed) return;
    if (isExpired(message)) {
      this.#host.counters.expired++;
      return;
    }
    // Most deliveries are no request: they cost a responder neither a clock read nor a map of grants.
    if (entry.responder && ReplyGrants.answerable(message)) (this.#replyGrants ??= new ReplyGrants()).grant(message, this.#identity.principal);
    const bytes = message.payload.length + message.key.length + FRAME_OVERHEAD;
    // The common case, a socket keeping up, allocates nothing per delivery.
    if (!this.#waitingDrain) {
      this.#write(messageFrame(message, entry.sub), bytes);
      return;
    }
    this.#send({
      data: () => messageFrame(message, entry.sub), bytes, priority: message.priority, droppable: message.qos === 0,
      ...(message.expiresAt !== undefined ? { expiresAt: message.expiresAt } : {}),
    });
  }

  #respond(data: string): void {
    this.#send({ data, bytes: RESPONSE_BYTES, priority: CONTROL_PRIORITY, droppable: false });
  }

  /** Every refusal of a frame goes through here: counted, then answered with an `error` frame. */
  #respondError(err: GatewayError, frameId: FrameId | undefined): void {
    this.#host.ctx.refused(err.code);
    if (err.code === 'internal') this.#host.ctx.logger.error({ err, clientId: this.id }, 'WebSocket frame failed');
    this.#respond(errorFrame(err, frameId));
  }

  #send(item: Outbound): void {
    if (this.#closed) return;
    if (!this.#waitingDrain) {
      this.#write(typeof item.data === 'function' ? item.data() : item.data, item.bytes);
      return;
    }
    const queue = this.#queue ??= new SubscriberBuffer<Outbound>(() => ({ messages: Infinity, bytes: this.#settings.maxOutboundBuffer }));
    const result = queue.add(item, this.socket.bufferedAmount);
    this.#host.slowConsumers.shed += result.dropped;
    if (!result.queued && result.dropped === 0) {
      this.close(CLOSE_CODES.tryAgainLater, 'slow consumer: outbound buffer full (websocket.maxOutboundBuffer)');
      return;
    }
    const backlog = queue.bytes + this.socket.bufferedAmount;
    if (backlog > this.#host.peakOutboundBytes) this.#host.peakOutboundBytes = backlog;
  }

  /** Past this much in ws's own buffer, frames wait in the queue, where priorities still apply. */
  get #highWater(): number {
    return Math.min(64 * 1024, this.#settings.maxOutboundBuffer / 4);
  }

  #write(data: MessageFrame | string, bytes: number): void {
    // ws answers a send on a closing socket as it does every other (its callback gets the error).
    const wire = typeof data !== 'string' && this.socket.readyState === WebSocket.OPEN ? this.#wire : undefined;
    // With no extension ws holds no frame of its own (it queues them only while compressing): what
    // waits is the socket's, read there without touching ws's sender, one object fewer per delivery.
    const buffered = wire !== undefined ? wire.writableLength : this.socket.bufferedAmount;
    // The send that crosses the high-water mark asks to be told when it is written: then the queue moves on.
    const wait = buffered + bytes >= this.#highWater;
    if (wait) {
      this.#waitingDrain = true;
      this.#stalledSince = Date.now();
    }
    const done = wait ? (this.#whenDrained ??= (err) => this.#drained(err)) : undefined;
    if (typeof data === 'string') this.socket.send(data, TEXT, done);
    else if (wire !== undefined) wire.write(data.wire, done);
    else this.socket.send(data.json, TEXT, done);
  }

  /** the write callback of the frame that crossed the high-water mark: made on the first such frame, not per socket */
  #whenDrained: ((err?: Error | null) => void) | undefined;

  #drained(err?: Error | null): void {
    this.#waitingDrain = false;
    if (err || this.#closed) return;
    const queue = this.#queue;
    while (queue && !this.#waitingDrain) {
      const item = queue.shift();
      if (item === undefined) break;
      if (item.expiresAt !== undefined && item.expiresAt <= Date.now()) {
        this.#host.counters.expired++;
        continue;
      }
      this.#write(typeof item.data === 'function' ? item.data() : item.data, item.bytes);
    }
    if (this.#waitingDrain || this.#groupsWaiting === undefined || this.#groupsWaiting.size === 0) return;
    const waiting = [...this.#groupsWaiting];
    this.#groupsWaiting.clear();
    for (const entry of waiting) entry.group?.membership?.ready();
  }

  // -------------------------------------------------------------------------------------------
  // Lifecycle

  /** Closes with a code and reason; what waits to be sent is dropped, memory is freed at once. */
  close(code: number, reason: string): void {
    if (this.#closed) return;
    if (code === CLOSE_CODES.tryAgainLater) this.#host.slowConsumers.disconnected++;
    this.#queue?.clear();
    this.#markClosed();
    // The closing handshake needs the client's close frame read; frames before it are ignored.
    if (this.#paused) this.socket.resume();
    this.socket.close(code, reason);
  }

  terminate(): void {
    this.#queue?.clear();
    this.#markClosed();
    this.socket.terminate();
  }

  #markClosed(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#held = undefined;
    for (const entry of this.#subscriptions?.values() ?? []) void this.#closeSubscription(entry);
    this.#subscriptions = undefined;
    this.#groupSubs = undefined;
    this.#groupsWaiting = undefined;
    this.#replyGrants = undefined;
  }

  #onClose(): void {
    this.#cancelExpiry();
    this.#markClosed();
    this.#queue = undefined;
    this.#host.forget(this);
  }
}

function forbidden(action: string, key: string): GatewayError {
  return new GatewayError('forbidden', `not allowed to ${action} ${key}`, { field: 'key' });
}
