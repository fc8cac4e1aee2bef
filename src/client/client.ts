import { encodePayload, payloadBytes, payloadJson, payloadText, toBase64Url, type Payload } from './payload.js';
import {
  CLOSE_CODES, SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX,
  type AckFrame, type ClientFrame, type ErrorFrame, type FrameId, type JsonValue, type MessageFrame,
  type PublishFrame, type ReplyFrame, type RequestFrame, type ServerFrame,
} from './protocol.js';

/**
 * The part of a WebSocket the client uses: the browser's global WebSocket and the `ws`
 * package's both fit. Handlers take `never` so that either one's event types are accepted.
 */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((event: never) => void) | null;
  onmessage: ((event: never) => void) | null;
  onclose: ((event: never) => void) | null;
  onerror: ((event: never) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface ReconnectOptions {
  /** first delay after a connection drops (default 250 ms) */
  initialDelayMs?: number;
  /** the delay doubles per failed attempt up to this (default 10 s) */
  maxDelayMs?: number;
}

export type ClientState = 'connecting' | 'open' | 'reconnecting' | 'idle' | 'closed';

export interface ClientOptions {
  /** ws://host:port/ws or wss://… */
  url: string;
  /** `username:password` (or whatever the gateway's auth takes), sent as a subprotocol browsers can set */
  token?: string;
  /** the WebSocket implementation; default the global one (browsers, Node 22). In Node 20 pass `ws`. */
  WebSocket?: WebSocketConstructor;
  /** automatic reconnection with exponential backoff and jitter; false turns it off */
  reconnect?: ReconnectOptions | false;
  /** default wait for a request's reply, in ms, sent to the gateway as the request's timeout */
  requestTimeoutMs?: number;
  onStateChange?: (state: ClientState) => void;
  /** errors that belong to no call: an error frame without id, a subscription refused on resubscribe */
  onError?: (error: JunctionError) => void;
}

/** An error from the gateway (`code` from its vocabulary) or from the connection. */
export class JunctionError extends Error {
  /** a gateway error code, or `disconnected` / `closed` for the client's own */
  readonly code: string;
  readonly field: string | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(code: string, message: string, details: { field?: string; retryAfterMs?: number } = {}) {
    super(message);
    this.name = 'JunctionError';
    this.code = code;
    this.field = details.field;
    this.retryAfterMs = details.retryAfterMs;
  }
}

export interface PublishOptions {
  /** 1 (default): resolves once the gateway accepted it; 0: resolves once sent */
  qos?: 0 | 1;
  priority?: number;
  headers?: Record<string, string>;
  contentType?: string;
  traceparent?: string;
  /** ms until the message expires */
  ttl?: number;
  correlationId?: string;
  replyTo?: string;
}

export interface PublishResult {
  /** the id the gateway gave the message (qos 1 only) */
  messageId?: string;
}

export interface RequestOptions {
  timeoutMs?: number;
  priority?: number;
  headers?: Record<string, string>;
  contentType?: string;
  traceparent?: string;
}

interface Body {
  readonly payload: JsonValue | undefined;
  readonly encoding: 'base64' | undefined;
  readonly contentType: string | undefined;
  bytes(): Uint8Array;
  text(): string;
  json<T = JsonValue>(): T;
}

export interface Delivery extends Body {
  readonly id: string;
  readonly key: string;
  readonly headers: Record<string, string>;
  readonly priority: number;
  readonly qos: 0 | 1 | 2;
  readonly timestamp: number;
  readonly traceparent: string;
  readonly replyTo: string | undefined;
  readonly correlationId: string | undefined;
  /** answers a request (a delivery with replyTo and correlationId) */
  reply(payload: Payload, options?: Omit<PublishOptions, 'correlationId' | 'replyTo'>): Promise<PublishResult>;
  /**
   * A group delivery of qos 1 is handled: the gateway gives it to no other member. A subscription
   * with a handler does this when the handler returns (or its promise resolves); a `for await`
   * loop calls it itself. Nothing to do otherwise; calling it twice does nothing.
   */
  ack(): void;
}

export interface Reply extends Body {
  readonly messageId: string;
  readonly headers: Record<string, string>;
  /** the downstream's HTTP status, when the reply came from an HTTP target */
  readonly status: number | undefined;
}

export interface SubscribeOptions {
  /** whether requests may be handed to this subscription (default true); not for group members */
  responder?: boolean;
  /** join the group of this name on the pattern (competing consumers): each message goes to one member */
  group?: string;
}

/**
 * Deliveries of one pattern: to the handler given, and to `for await` loops over it. Without a
 * handler, deliveries wait for the first loop; after that, a loop gets what arrives while it runs.
 */
export interface Subscription extends AsyncIterable<Delivery> {
  readonly pattern: string;
  /** resolves once the gateway confirmed the subscription (again after each reconnect) */
  readonly ready: Promise<void>;
  unsubscribe(): Promise<void>;
}

function bodyOf(frame: MessageFrame | ReplyFrame): Body {
  return {
    payload: frame.payload,
    encoding: frame.encoding,
    contentType: frame.contentType,
    bytes: () => payloadBytes(frame),
    text: () => payloadText(frame),
    json: <T>() => payloadJson<T>(frame),
  };
}

interface Pending {
  frame: ClientFrame & { id: FrameId };
  resolve(frame: AckFrame | ReplyFrame): void;
  reject(error: JunctionError): void;
  /** publishes and subscribes are sent again after a reconnect; a request fails instead */
  resend: boolean;
  /** written to the current socket */
  written: boolean;
}

interface Deferred {
  promise: Promise<void>;
  resolve(): void;
  reject(error: JunctionError): void;
}

function deferred(): Deferred {
  let resolve!: () => void;
  let reject!: (error: JunctionError) => void;
  const promise = new Promise<void>((res, rej) => { resolve = res; reject = rej; });
  // Nobody may be waiting on it; an error also reaches onError and the iterators.
  promise.catch(() => undefined);
  return { promise, resolve, reject };
}

class LocalSubscription implements Subscription {
  readonly pattern: string;
  readonly group: string | undefined;
  readonly #client: JunctionClient;
  readonly #handler: DeliveryHandler | undefined;
  readonly #iterators = new Set<DeliveryIterator>();
  /** without a handler, deliveries wait here for the first loop, so none is lost before it starts */
  #backlog: Delivery[] | undefined;
  ready: Promise<void>;
  closed = false;

  constructor(client: JunctionClient, pattern: string, group: string | undefined, handler: DeliveryHandler | undefined, ready: Promise<void>) {
    this.#client = client;
    this.pattern = pattern;
    this.group = group;
    this.#handler = handler;
    this.#backlog = handler ? undefined : [];
    this.ready = ready;
  }

  deliver(delivery: Delivery): void {
    if (this.#handler) {
      // A group delivery is acknowledged once its handler is done; one that fails is left to the gateway to hand elsewhere.
      const done = this.#handler(delivery);
      if (done instanceof Promise) done.then(() => delivery.ack(), () => undefined);
      else delivery.ack();
    }
    this.#backlog?.push(delivery);
    for (const iterator of this.#iterators) iterator.push(delivery);
  }

  end(error?: JunctionError): void {
    this.closed = true;
    for (const iterator of this.#iterators) iterator.end(error);
    this.#iterators.clear();
  }

  unsubscribe(): Promise<void> {
    return this.#client.unsubscribe(this);
  }

  [Symbol.asyncIterator](): AsyncIterator<Delivery> {
    const iterator = new DeliveryIterator(() => this.#iterators.delete(iterator));
    for (const delivery of this.#backlog ?? []) iterator.push(delivery);
    this.#backlog = undefined;
    if (this.closed) iterator.end();
    else this.#iterators.add(iterator);
    return iterator;
  }
}

/** Deliveries queue here until the loop takes them; leaving the loop stops the queueing. */
class DeliveryIterator implements AsyncIterator<Delivery> {
  readonly #queue: Delivery[] = [];
  readonly #waiting: { resolve(result: IteratorResult<Delivery>): void; reject(error: Error): void }[] = [];
  readonly #detach: () => void;
  #done = false;
  #error: JunctionError | undefined;

  constructor(detach: () => void) {
    this.#detach = detach;
  }

  push(delivery: Delivery): void {
    const waiter = this.#waiting.shift();
    if (waiter) waiter.resolve({ value: delivery, done: false });
    else this.#queue.push(delivery);
  }

  end(error?: JunctionError): void {
    this.#done = true;
    this.#error = error;
    for (const waiter of this.#waiting.splice(0)) {
      if (error) waiter.reject(error);
      else waiter.resolve({ value: undefined, done: true });
    }
  }

  next(): Promise<IteratorResult<Delivery>> {
    const delivery = this.#queue.shift();
    if (delivery) return Promise.resolve({ value: delivery, done: false });
    if (this.#done) return this.#error ? Promise.reject(this.#error) : Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }

  return(): Promise<IteratorResult<Delivery>> {
    this.#detach();
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }
}

/** What a subscription calls with each delivery; a promise it returns is awaited before a group delivery is acknowledged. */
export type DeliveryHandler = (delivery: Delivery) => unknown;

/** One subscription on the wire per pattern (and group); local subscriptions to it share it. */
interface PatternEntry {
  sub: string;
  pattern: string;
  group: string | undefined;
  responder: boolean;
  locals: Set<LocalSubscription>;
  /** settles when the gateway acknowledges the subscribe on the current connection */
  confirmed: Deferred;
  /** the gateway acknowledged it on the current connection */
  active: boolean;
}

const OPEN = 1;

/** Subscriptions by pattern, a group's by group and pattern (neither holds NUL). */
function entryKey(pattern: string, group: string | undefined): string {
  return group === undefined ? pattern : `${group}\u0000${pattern}`;
}

/**
 * A connection to Junction's /ws that survives flaky networks: when it drops, the client
 * reconnects with exponential backoff and jitter, subscribes again with the same ids (so each
 * handler still gets each delivery once), and sends again what was not acknowledged.
 */
export class JunctionClient {
  readonly #options: ClientOptions;
  readonly #WebSocket: WebSocketConstructor;
  #socket: WebSocketLike | undefined;
  #state: ClientState = 'connecting';
  #attempt = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #nextId = 0;
  /** calls awaiting their answer, in the order they were made */
  readonly #pending = new Map<FrameId, Pending>();
  /** qos 0 publishes waiting for a connection */
  #outbox: ClientFrame[] = [];
  readonly #patterns = new Map<string, PatternEntry>();
  readonly #bySub = new Map<string, PatternEntry>();
  #opened: { resolve(): void; reject(error: Error): void } | undefined;

  constructor(options: ClientOptions) {
    this.#options = options;
    const implementation = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!implementation) throw new Error('no WebSocket implementation: pass one as options.WebSocket (in Node 20, the ws package)');
    this.#WebSocket = implementation;
  }

  get state(): ClientState {
    return this.#state;
  }

  /** Opens the first connection; resolves once it is open. */
  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#opened = { resolve, reject };
      this.#connect();
    });
  }

  #setState(state: ClientState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#options.onStateChange?.(state);
  }

  #connect(): void {
    this.#setState(this.#attempt === 0 ? 'connecting' : 'reconnecting');
    const protocols = this.#options.token !== undefined ? [SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX + toBase64Url(this.#options.token)] : [];
    const socket = new this.#WebSocket(this.#options.url, protocols);
    this.#socket = socket;
    socket.onopen = () => this.#onOpen(socket);
    socket.onmessage = (event: { data: unknown }) => {
      if (this.#socket === socket) this.#onFrame(event.data);
    };
    socket.onclose = (event: { code: number; reason: string }) => {
      if (this.#socket === socket) this.#onClose(event.code, event.reason);
    };
    // An error is followed by close, which decides what happens next.
    socket.onerror = () => undefined;
  }

  /**
   * Subscriptions are restored first, with their ids, so deliveries find their handlers; what
   * waited is sent once the gateway confirmed them, so the client's own subscriptions see it.
   */
  #onOpen(socket: WebSocketLike): void {
    if (this.#socket !== socket) return;
    this.#attempt = 0;
    const confirmations = [...this.#patterns.values()].map((entry) => {
      this.#resubscribe(entry);
      return entry.confirmed.promise;
    });
    const flush = () => {
      if (this.#socket !== socket || socket.readyState !== OPEN) return;
      this.#setState('open');
      for (const pending of this.#pending.values()) {
        if (pending.written || pending.frame.op === 'subscribe') continue;
        pending.written = true;
        this.#write(pending.frame);
      }
      const outbox = this.#outbox;
      this.#outbox = [];
      for (const frame of outbox) this.#write(frame);
      this.#opened?.resolve();
      this.#opened = undefined;
    };
    if (confirmations.length === 0) flush();
    else void Promise.allSettled(confirmations).then(flush);
  }

  #onClose(code: number, reason: string): void {
    this.#socket = undefined;
    for (const entry of this.#patterns.values()) {
      if (!entry.active) continue;
      // Confirmed on the old connection: `ready` follows the next confirmation.
      entry.active = false;
      entry.confirmed = deferred();
      for (const local of entry.locals) local.ready = entry.confirmed.promise;
    }
    for (const [id, pending] of this.#pending) {
      if (pending.written && !pending.resend) {
        this.#pending.delete(id);
        pending.reject(new JunctionError('disconnected', `the connection closed before the reply (${code}${reason ? `: ${reason}` : ''})`));
      } else {
        pending.written = false;
      }
    }
    if (this.#state === 'closed') return;
    const reconnect = this.#options.reconnect;
    if (code === CLOSE_CODES.idle) {
      // Closed for idling: connect again when there is something to send.
      this.#setState('idle');
      return;
    }
    if (reconnect === false) {
      this.#shutdown(new JunctionError('closed', `the connection closed (${code}${reason ? `: ${reason}` : ''})`));
      return;
    }
    const initial = reconnect?.initialDelayMs ?? 250;
    const max = reconnect?.maxDelayMs ?? 10_000;
    const ceiling = Math.min(max, initial * 2 ** this.#attempt++);
    // "Equal jitter": at least half the backoff, so a fleet that lost one server does not come back at once.
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.#setState('reconnecting');
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
  }

  #onFrame(data: unknown): void {
    let frame: ServerFrame;
    try {
      frame = JSON.parse(String(data)) as ServerFrame;
    } catch {
      return;
    }
    switch (frame.op) {
      case 'message':
        this.#onMessage(frame);
        return;
      case 'ack':
      case 'reply':
      case 'pong': {
        if (frame.id === undefined) return;
        const pending = this.#pending.get(frame.id);
        if (!pending) return;
        this.#pending.delete(frame.id);
        pending.resolve(frame as AckFrame | ReplyFrame);
        return;
      }
      case 'error': {
        const error = new JunctionError(frame.code, frame.message, errorDetails(frame));
        const pending = frame.id !== undefined ? this.#pending.get(frame.id) : undefined;
        if (!pending) {
          this.#options.onError?.(error);
          return;
        }
        this.#pending.delete(frame.id!);
        pending.reject(error);
      }
    }
  }

  #onMessage(frame: MessageFrame): void {
    const entry = this.#bySub.get(String(frame.sub));
    if (!entry) return;
    let acked = false;
    const delivery: Delivery = {
      ...bodyOf(frame),
      id: frame.id,
      key: frame.key,
      headers: frame.headers,
      priority: frame.priority,
      qos: frame.qos,
      timestamp: frame.timestamp,
      traceparent: frame.traceparent,
      replyTo: frame.replyTo,
      correlationId: frame.correlationId,
      reply: (payload, options = {}) => {
        if (frame.replyTo === undefined || frame.correlationId === undefined) {
          return Promise.reject(new JunctionError('bad_request', 'this delivery is not a request: it has no replyTo and correlationId'));
        }
        return this.publish(frame.replyTo, payload, { ...options, correlationId: frame.correlationId });
      },
      ack: () => {
        if (acked || entry.group === undefined || frame.qos === 0) return;
        acked = true;
        // Unacknowledged after a reconnect, it went to another member already: nothing to send.
        if (this.#isOpen) this.#write({ op: 'ack', sub: frame.sub, id: frame.id });
      },
    };
    for (const local of entry.locals) local.deliver(delivery);
  }

  #id(prefix: string): string {
    return `${prefix}${(++this.#nextId).toString(36)}`;
  }

  #write(frame: ClientFrame): void {
    this.#socket!.send(JSON.stringify(frame));
  }

  get #isOpen(): boolean {
    return this.#state === 'open' && this.#socket?.readyState === OPEN;
  }

  /** After an idle close, the next thing to send connects again. */
  #wake(): void {
    if (this.#state !== 'idle') return;
    this.#attempt = 0;
    this.#connect();
  }

  #sendOrQueue(frame: ClientFrame): void {
    if (this.#state === 'closed') throw new JunctionError('closed', 'the client is closed');
    if (this.#isOpen) {
      this.#write(frame);
      return;
    }
    this.#outbox.push(frame);
    this.#wake();
  }

  /** Sends a frame that expects an answer (ack, reply, pong) and waits for it; #onOpen sends what waits. */
  #call<T extends AckFrame | ReplyFrame>(frame: ClientFrame & { id: FrameId }, resend: boolean): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.#state === 'closed') return reject(new JunctionError('closed', 'the client is closed'));
      const written = this.#isOpen;
      this.#pending.set(frame.id, { frame, resolve: resolve as (frame: AckFrame | ReplyFrame) => void, reject, resend, written });
      if (written) this.#write(frame);
      else this.#wake();
    });
  }

  /** Publishes; with qos 1 (default) resolves once the gateway accepted the message. */
  async publish(key: string, payload: Payload, options: PublishOptions = {}): Promise<PublishResult> {
    const { qos = 1, ...rest } = options;
    const frame: PublishFrame = { op: 'publish', key, ...encodePayload(payload), ...rest, qos };
    if (qos === 0) {
      this.#sendOrQueue(frame);
      return {};
    }
    const ack = await this.#call<AckFrame>({ ...frame, id: this.#id('p') }, true);
    return ack.messageId !== undefined ? { messageId: ack.messageId } : {};
  }

  /** Sends a request and resolves with the reply; a request in flight when the connection drops fails with `disconnected`. */
  async request(key: string, payload: Payload, options: RequestOptions = {}): Promise<Reply> {
    const { timeoutMs = this.#options.requestTimeoutMs, ...rest } = options;
    const frame: RequestFrame = { op: 'request', id: this.#id('r'), key, ...encodePayload(payload), ...rest, ...(timeoutMs !== undefined ? { timeout: timeoutMs } : {}) };
    const reply = await this.#call<ReplyFrame>(frame as RequestFrame & { id: FrameId }, false);
    return { ...bodyOf(reply), messageId: reply.messageId, headers: reply.headers ?? {}, status: reply.status };
  }

  /** Round trip to the gateway, in ms. */
  async ping(): Promise<number> {
    const started = Date.now();
    await this.#call({ op: 'ping', id: this.#id('g') }, false);
    return Date.now() - started;
  }

  /**
   * Subscribes to a pattern (MQTT wildcards). Deliveries go to `handler`, and to every
   * `for await (const delivery of subscription)` loop running over the subscription.
   */
  subscribe(pattern: string, handler?: DeliveryHandler, options: SubscribeOptions = {}): Subscription {
    const { group } = options;
    const responder = group === undefined && (options.responder ?? true);
    let entry = this.#patterns.get(entryKey(pattern, group));
    if (entry && entry.responder !== responder) {
      throw new JunctionError('bad_request', `${pattern} is already subscribed with responder: ${entry.responder}`, { field: 'responder' });
    }
    if (!entry) {
      const sub = this.#id('s');
      entry = { sub, pattern, group, responder, locals: new Set(), confirmed: deferred(), active: false };
      this.#patterns.set(entryKey(pattern, group), entry);
      this.#bySub.set(sub, entry);
      // While subscriptions are being restored the socket is open too: a new one joins them.
      if (this.#socket?.readyState === OPEN) this.#resubscribe(entry);
      else this.#wake();
    }
    const local = new LocalSubscription(this, pattern, group, handler, entry.confirmed.promise);
    entry.locals.add(local);
    return local;
  }

  /** Sends an entry's subscribe on the connection just opened; `confirmed` settles with the answer. */
  #resubscribe(entry: PatternEntry): void {
    const frame = {
      op: 'subscribe' as const, id: entry.sub, key: entry.pattern,
      ...(entry.group !== undefined ? { group: entry.group } : entry.responder ? {} : { responder: false }),
    };
    const confirmed = entry.confirmed;
    this.#pending.set(entry.sub, {
      frame,
      resend: true,
      written: true,
      resolve: () => {
        entry.active = true;
        confirmed.resolve();
      },
      reject: (error) => {
        // Refused (e.g. forbidden after a reload): the subscription ends with the error.
        this.#patterns.delete(entryKey(entry.pattern, entry.group));
        this.#bySub.delete(entry.sub);
        for (const local of entry.locals) local.end(error);
        if (this.#state !== 'closed') this.#options.onError?.(error);
        confirmed.reject(error);
      },
    });
    this.#write(frame);
  }

  async unsubscribe(subscription: Subscription): Promise<void> {
    const local = subscription as LocalSubscription;
    const entry = this.#patterns.get(entryKey(local.pattern, local.group));
    local.end();
    if (!entry || !entry.locals.delete(local) || entry.locals.size > 0) return;
    this.#patterns.delete(entryKey(entry.pattern, entry.group));
    this.#bySub.delete(entry.sub);
    this.#pending.delete(entry.sub);
    if (this.#state !== 'open') return;
    const frame = { op: 'unsubscribe' as const, id: this.#id('u'), key: entry.pattern, ...(entry.group !== undefined ? { group: entry.group } : {}) };
    await this.#call(frame, false).catch(() => undefined);
  }

  /** Closes for good: pending calls fail with `closed`, subscriptions end. */
  close(): Promise<void> {
    const socket = this.#socket;
    this.#shutdown(new JunctionError('closed', 'the client was closed'));
    if (!socket || socket.readyState > OPEN) return Promise.resolve();
    return new Promise((resolve) => {
      socket.onclose = () => resolve();
      socket.close(1000, 'client closed');
    });
  }

  #shutdown(error: JunctionError): void {
    this.#setState('closed');
    clearTimeout(this.#retryTimer);
    this.#socket = undefined;
    for (const pending of this.#pending.values()) pending.reject(error);
    this.#pending.clear();
    this.#outbox = [];
    for (const entry of this.#patterns.values()) for (const local of entry.locals) local.end();
    this.#patterns.clear();
    this.#bySub.clear();
    this.#opened?.reject(error);
    this.#opened = undefined;
  }
}

function errorDetails(frame: ErrorFrame): { field?: string; retryAfterMs?: number } {
  return {
    ...(frame.field !== undefined ? { field: frame.field } : {}),
    ...(frame.retryAfterMs !== undefined ? { retryAfterMs: frame.retryAfterMs } : {}),
  };
}

/** Connects to Junction's /ws; resolves once connected (retrying per `reconnect` meanwhile). */
export async function connect(options: ClientOptions): Promise<JunctionClient> {
  const client = new JunctionClient(options);
  await client.open();
  return client;
}
