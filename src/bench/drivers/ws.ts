import WebSocket from 'ws';
import { FrameSocket } from './frame-socket.js';
import { readStamp } from '../stamp.js';
import type { ConnectionContext, ProtocolDriver, PublisherConnection, SendDone } from './driver.js';
import { Link } from './link.js';

/** From `new WebSocket` to the greeting's answer (subscribe ack, NATS PONG); a silent server fails the connection. */
const OPEN_TIMEOUT_MS = 30_000;
/** close() waits this long for the server's close frame, then drops the TCP connection. */
const CLOSE_TIMEOUT_MS = 2_000;
/** Heartbeats go out in slices this often, so a keepalive period's pings spread evenly over it. */
const HEARTBEAT_TICK_MS = 100;

/**
 * One WebSocket connection: opening it is the upgrade, then the dialect's greeting. Subclasses read
 * frames as bytes: the load generator shares the cores with the server, so frames are not decoded
 * or parsed on the hot path.
 */
abstract class WsLink extends Link {
  ws!: WebSocket | FrameSocket;

  open(): Promise<this> {
    const { ws: port, wsPath = '/' } = this.ctx.ports;
    if (!port) return Promise.reject(new Error(`${this.ctx.server} has no WebSocket port`));
    return new Promise((resolve, reject) => {
      this.opening(OPEN_TIMEOUT_MS, `not open within ${OPEN_TIMEOUT_MS / 1000} s`, () => resolve(this), reject);
      // Frames are read as bytes, never decoded: checking that they are UTF-8 would be work for nothing.
      const ws = this.receivesMost ? new FrameSocket(this.ctx.host, port, wsPath, this.ctx.localAddress)
        : new WebSocket(`ws://${this.ctx.host}:${port}${wsPath}`, { localAddress: this.ctx.localAddress, perMessageDeflate: false, skipUTF8Validation: true });
      this.ws = ws;
      ws.on('open', () => this.greet());
      ws.on('message', (data: Buffer) => this.receive(data));
      // Once open, an error is followed by 'close', which reports it.
      ws.on('error', (err: Error) => this.fail(err.message));
      ws.on('close', (code: number, reason: Buffer) => this.closed(reason.length > 0 ? `closed ${code} ${reason.toString()}` : `closed ${code}`));
    });
  }

  /**
   * A connection that receives far more than it sends (a fan-out subscriber) reads through
   * FrameSocket, whose reads cost a fraction of `ws`'s; its receive() must not keep the bytes it gets.
   */
  protected get receivesMost(): boolean {
    return false;
  }

  /** Sent once the upgrade is done; the default greeting is none. */
  protected greet(): void {
    this.ready();
  }

  protected abstract receive(data: Buffer): void;

  protected cut(): void {
    this.ws.terminate();
  }

  close(): Promise<void> {
    this.closing();
    if (this.ws.readyState === WebSocket.CLOSED) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.ws.terminate(), CLOSE_TIMEOUT_MS);
      this.ws.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.ws.close(1000);
    });
  }

  /** The protocol's keepalive for a connection that sends nothing else. */
  abstract heartbeat(): void;
}

// The byte helpers below are plain loops: for the few bytes they look at, a call into Buffer's
// native compare or subarray costs more than the work itself.

/** `bytes` holds `needle` at `at`. */
function holdsAt(bytes: Buffer, needle: Buffer, at: number): boolean {
  if (at + needle.length > bytes.length) return false;
  for (let j = 0; j < needle.length; j++) if (bytes[at + j] !== needle[j]) return false;
  return true;
}

const PIPE = 124;
const COMMA = 44;
const CLOSING_BRACE = 125;

/** The unsigned decimal at `from` if the byte after it is `end` or `orEnd` (a stamp's `|`, a JSON number's `,` or `}`), else -1. */
function decimalAt(bytes: Buffer, from: number, end: number, orEnd = end): number {
  let value = 0;
  let i = from;
  for (; i < bytes.length; i++) {
    const digit = bytes[i]! - 48;
    if (digit < 0 || digit > 9) break;
    value = value * 10 + digit;
  }
  return i > from && (bytes[i] === end || bytes[i] === orEnd) ? value : -1;
}

// Junction and bench/peers/ws.ts both start their frames with these, in this order. Frames that do
// not (an external server may order fields differently) are parsed as JSON: slower, still right.
const ACK_PREFIX = Buffer.from('{"op":"ack","id":');
const MESSAGE_PREFIX = Buffer.from('{"op":"message"');
const PAYLOAD_FIELD = Buffer.from('"payload":"');
const SUBSCRIPTION_ID = 's1';

interface JunctionFrame { op?: unknown; id?: unknown; code?: unknown; message?: unknown; payload?: unknown }

function parseFrame(data: Buffer): JunctionFrame {
  try {
    const frame = JSON.parse(data.toString()) as unknown;
    return typeof frame === 'object' && frame !== null ? frame as JunctionFrame : {};
  } catch {
    return {};
  }
}

function errorText(frame: JunctionFrame): string {
  return `error ${String(frame.code)}: ${String(frame.message)}`;
}

/** Junction's JSON frames (docs/websocket.md), as the gateway, bench/peers/ws.ts and external servers speak them. */
class JunctionLink extends WsLink {
  protected receive(_data: Buffer): void {}

  heartbeat(): void {
    // A protocol-level ping: Junction's liveness check counts the pong, and servers answer it without parsing JSON.
    this.ws.ping();
  }
}

/**
 * QoS 1 publishes carry an integer id and are done on `ack` (or `error`) with that id. The gateway
 * answers a QoS 0 publish only when it fails, so QoS 0 publishes go without an id (the peer would
 * ack one) and are done once written; their error frames cannot be told apart and are not counted.
 */
class JunctionPublisher extends JunctionLink implements PublisherConnection {
  #nextId = 0;
  readonly #pending = new Map<number, SendDone>();
  #key = '';
  #keyJson = '""';

  publish(key: string, payload: string, priority: number, done: SendDone): void {
    if (key !== this.#key) {
      this.#key = key;
      this.#keyJson = JSON.stringify(key);
    }
    if (this.ctx.qos === 0) {
      this.ws.send(`{"op":"publish","key":${this.#keyJson},"payload":${JSON.stringify(payload)},"qos":0,"priority":${priority}}`, (err) => done(err?.message));
      return;
    }
    if (!this.isOpen) return done('not connected');
    const id = ++this.#nextId;
    this.#pending.set(id, done);
    this.ws.send(`{"op":"publish","id":${id},"key":${this.#keyJson},"payload":${JSON.stringify(payload)},"qos":1,"priority":${priority}}`);
  }

  protected override receive(data: Buffer): void {
    if (holdsAt(data, ACK_PREFIX, 0)) return this.#settle(decimalAt(data, ACK_PREFIX.length, COMMA, CLOSING_BRACE));
    const frame = parseFrame(data);
    if (typeof frame.id !== 'number') return;
    if (frame.op === 'ack') this.#settle(frame.id);
    else if (frame.op === 'error') this.#settle(frame.id, errorText(frame));
  }

  #settle(id: number, error?: string): void {
    const done = this.#pending.get(id);
    if (done === undefined) return;
    this.#pending.delete(id);
    done(error);
  }

  protected override abandon(reason: string): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const done of pending) done(reason);
  }
}

class JunctionSubscriber extends JunctionLink {
  constructor(ctx: ConnectionContext, readonly key: string, readonly onDelivery: (stampUs: number) => void) {
    super(ctx);
  }

  protected override get receivesMost(): boolean {
    return true;
  }

  protected override greet(): void {
    this.ws.send(JSON.stringify({ op: 'subscribe', id: SUBSCRIPTION_ID, key: this.key }));
  }

  protected override receive(data: Buffer): void {
    if (holdsAt(data, MESSAGE_PREFIX, 0)) {
      // The payload is the frame's last field: searched from the end, natively, past the message's
      // id, headers and traceparent (a `"payload":"` inside a JSON string has its quotes escaped).
      const at = data.lastIndexOf(PAYLOAD_FIELD);
      if (at >= 0) return this.onDelivery(decimalAt(data, at + PAYLOAD_FIELD.length, PIPE));
    }
    const frame = parseFrame(data);
    if (frame.op === 'message') this.onDelivery(typeof frame.payload === 'string' ? readStamp(frame.payload) : -1);
    else if (frame.op === 'ack' && frame.id === SUBSCRIPTION_ID) this.ready();
    else if (frame.op === 'error' && (frame.id === SUBSCRIPTION_ID || frame.id === undefined)) this.fail(`subscribe ${this.key}: ${errorText(frame)}`);
  }
}

const LF = 10;
const CHAR_M = 77;
const CHAR_P = 80;
const CHAR_I = 73;
const CHAR_MINUS = 45;

/** The decimal number that ends just before `end` (a MSG line's byte count), read backwards. */
function sizeBefore(bytes: Buffer, end: number): number {
  let value = 0;
  let scale = 1;
  for (let i = end - 1; i >= 0; i--) {
    const digit = bytes[i]! - 48;
    if (digit < 0 || digit > 9) break;
    value += digit * scale;
    scale *= 10;
  }
  return value;
}

/**
 * NATS's text protocol in WebSocket frames (nats-server's `websocket` listener). The opening is
 * `CONNECT` plus the subclass's own lines, then `PING`: its `PONG` means the server has processed
 * all of them. Server `PING`s are answered; operations may be split across frames or share one.
 */
class NatsLink extends WsLink {
  #rest: Buffer | undefined;

  protected override greet(): void {
    const connect = JSON.stringify({ verbose: false, pedantic: false, protocol: 1, name: this.ctx.clientId });
    this.ws.send(`CONNECT ${connect}\r\n${this.hello()}PING\r\n`);
  }

  /** Protocol lines sent with CONNECT. */
  protected hello(): string {
    return '';
  }

  protected onPong(): void {
    this.ready();
  }

  /** A MSG whose payload starts at `at`. */
  protected onMessage(_bytes: Buffer, _at: number): void {}

  protected receive(data: Buffer): void {
    const bytes = this.#rest ? Buffer.concat([this.#rest, data]) : data;
    let at = 0;
    // Every turn moves `at` forward or stops: bounded by the buffer's length.
    while (at < bytes.length) {
      const eol = bytes.indexOf(LF, at);
      if (eol < 0) break;
      const op = bytes[at];
      if (op === CHAR_M) {
        // MSG <subject> <sid> [reply-to] <size>\r\n<payload>\r\n
        const end = eol + 1 + sizeBefore(bytes, eol - 1) + 2;
        if (end > bytes.length) break;
        this.onMessage(bytes, eol + 1);
        at = end;
        continue;
      }
      if (op === CHAR_P) {
        if (bytes[at + 1] === CHAR_I) this.ws.send('PONG\r\n');
        else this.onPong();
      } else if (op === CHAR_MINUS) {
        // Refused CONNECT or SUB. Once open, the -ERRs that matter end the connection, and the close reports them.
        this.fail(bytes.toString('latin1', at, eol - 1));
      }
      at = eol + 1;
    }
    this.#rest = at < bytes.length ? bytes.subarray(at) : undefined;
  }

  heartbeat(): void {
    this.ws.send('PING\r\n');
  }
}

/**
 * `PUB` for both QoS. QoS 0 is done once written. QoS 1 sends a `PING` after each `PUB` and is done
 * on its `PONG` (they come in order): that is NATS's flush, proof the server has processed the
 * publish and handed it to its subscribers' connections, not a broker's acknowledgement.
 */
class NatsPublisher extends NatsLink implements PublisherConnection {
  readonly #flushes: SendDone[] = [];

  publish(key: string, payload: string, _priority: number, done: SendDone): void {
    const pub = `PUB ${key} ${Buffer.byteLength(payload)}\r\n${payload}\r\n`;
    if (this.ctx.qos === 0) {
      this.ws.send(pub, (err) => done(err?.message));
      return;
    }
    if (!this.isOpen) return done('not connected');
    this.#flushes.push(done);
    this.ws.send(`${pub}PING\r\n`);
  }

  protected override onPong(): void {
    if (!this.isOpen) return this.ready();
    this.#flushes.shift()?.();
  }

  protected override abandon(reason: string): void {
    for (const done of this.#flushes.splice(0)) done(reason);
  }
}

class NatsSubscriber extends NatsLink {
  constructor(ctx: ConnectionContext, readonly key: string, readonly onDelivery: (stampUs: number) => void) {
    super(ctx);
  }

  protected override hello(): string {
    return `SUB ${this.key} 1\r\n`;
  }

  protected override onMessage(bytes: Buffer, at: number): void {
    this.onDelivery(decimalAt(bytes, at, PIPE));
  }
}

/**
 * The idle connections of the process with one keepalive period, each sent a heartbeat once per
 * period by one shared timer, a slice every tick: thousands of sockets need neither a timer each nor
 * all their pings in one burst. Closed sockets leave the set when their turn comes.
 */
class Heartbeat {
  readonly #links = new Set<WsLink>();
  #turn: Iterator<WsLink> = this.#links.values();
  #timer: NodeJS.Timeout | undefined;
  readonly #tickMs: number;

  constructor(readonly periodMs: number) {
    this.#tickMs = Math.min(HEARTBEAT_TICK_MS, periodMs);
  }

  add(link: WsLink): void {
    this.#links.add(link);
    if (this.#timer) return;
    this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    this.#timer.unref();
  }

  #tick(): void {
    const slice = Math.ceil(this.#links.size * this.#tickMs / this.periodMs);
    for (let i = 0; i < slice; i++) {
      let next = this.#turn.next();
      // A Set iterator visits what was added since it started, but stays done once it is done.
      if (next.done) {
        this.#turn = this.#links.values();
        next = this.#turn.next();
        if (next.done) break;
      }
      const link = next.value;
      if (link.ws.readyState === WebSocket.OPEN) link.heartbeat();
      else if (link.ws.readyState === WebSocket.CLOSED) this.#links.delete(link);
    }
    if (this.#links.size === 0) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }
}

const heartbeats = new Map<number, Heartbeat>();

function heartbeatEvery(seconds: number): Heartbeat {
  let heartbeat = heartbeats.get(seconds);
  if (!heartbeat) heartbeats.set(seconds, (heartbeat = new Heartbeat(seconds * 1000)));
  return heartbeat;
}

/**
 * WebSocket clients in two dialects: Junction's JSON frames for the gateway, bench/peers/ws.ts and
 * external servers; NATS's text protocol for nats-server's WebSocket listener.
 */
export const wsDriver: ProtocolDriver = {
  protocol: 'ws',

  publisher: (ctx) => (ctx.server === 'nats' ? new NatsPublisher(ctx) : new JunctionPublisher(ctx)).open(),

  subscriber: (ctx, key, onDelivery) =>
    (ctx.server === 'nats' ? new NatsSubscriber(ctx, key, onDelivery) : new JunctionSubscriber(ctx, key, onDelivery)).open(),

  async idle(ctx) {
    const link = await (ctx.server === 'nats' ? new NatsLink(ctx) : new JunctionLink(ctx)).open();
    if (ctx.keepaliveS > 0) heartbeatEvery(ctx.keepaliveS).add(link);
    return link;
  },
};
