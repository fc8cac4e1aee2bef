import net from 'node:net';
import tls from 'node:tls';
import mqttPacket from 'mqtt-packet';
import { readStampBytes } from '../stamp.js';
import { Outbox } from './outbox.js';
import type { ConnectionContext, ProtocolDriver, PublisherConnection, SendDone } from './driver.js';
import { Link } from './link.js';

/** From the TCP connect to CONNACK, and from SUBSCRIBE to SUBACK. */
const OPEN_TIMEOUT_MS = 30_000;
/** close() waits this long for the server to close after DISCONNECT, then drops the connection. */
const CLOSE_TIMEOUT_MS = 2_000;
/** MQTT packet ids are 16 bits, 0 excluded. */
const MAX_PACKET_ID = 65_535;
/** SUBACK's return code for a refused subscription */
const SUBACK_FAILURE = 128;
const PUBACK_HEADER = 0x40;
const PUBACK_REMAINING = 2;

type Incoming = mqttPacket.Packet;

/**
 * One MQTT 3.1.1 connection on a plain socket (TLS with --tls) from ctx.localAddress: packets are
 * encoded by mqtt-packet and parsed by its parser, as mqtt.js does, without mqtt.js's per-packet
 * machinery (its stores, callbacks and keepalive bookkeeping cost a load worker more than the
 * server spent on the same messages). Opening settles on CONNACK (a subscriber's on SUBACK).
 */
class MqttLink extends Link {
  readonly socket: net.Socket;
  readonly outbox: Outbox;
  #lastError: string | undefined;
  #heartbeat: NodeJS.Timeout | undefined;

  constructor(ctx: ConnectionContext, readonly clean = true) {
    super(ctx);
    const port = ctx.ports.mqtt;
    if (!port) throw new Error(`${ctx.server} has no MQTT port`);
    const { host, localAddress } = ctx;
    // Without noDelay, Nagle holds small publishes back until the server's delayed ACK, and the run
    // would measure TCP timers rather than the server.
    const tcp = net.connect({ host, port, localAddress, noDelay: true });
    this.socket = ctx.tlsCa !== undefined ? tls.connect({ socket: tcp, ca: ctx.tlsCa, servername: 'localhost' }) : tcp;
    this.outbox = new Outbox(this.socket);
  }

  open(): Promise<this> {
    return new Promise((resolve, reject) => {
      this.opening(OPEN_TIMEOUT_MS, `no CONNACK within ${OPEN_TIMEOUT_MS / 1000} s`, () => resolve(this), reject);
      const parser = mqttPacket.parser({ protocolVersion: 4 });
      parser.on('packet', (packet: Incoming) => this.receive(packet));
      parser.on('error', (err: Error) => {
        this.#lastError = `unreadable packet: ${err.message}`;
        this.socket.destroy();
      });
      this.socket.on('data', (chunk: Buffer) => parser.parse(chunk));
      // An error is followed by 'close', which reports it.
      this.socket.on('error', (err) => { this.#lastError = err.message; });
      this.socket.on('close', () => {
        clearInterval(this.#heartbeat);
        this.closed(this.#lastError ?? 'closed by the server', this.#lastError ?? 'the server closed the connection while it opened (CONNECT, SUBSCRIBE)');
      });
      this.send(mqttPacket.generate({ cmd: 'connect', protocolVersion: 4, clientId: this.ctx.clientId, clean: this.clean, keepalive: this.ctx.keepaliveS }));
    });
  }

  /** A whole packet, in this turn's write. */
  protected send(packet: Buffer): void {
    const at = this.outbox.reserve(packet.length);
    packet.copy(this.outbox.bytes, at);
  }

  protected receive(packet: Incoming): void {
    if (packet.cmd !== 'connack') return;
    if (packet.returnCode !== 0) return this.fail(`CONNACK ${packet.returnCode}`);
    this.greet();
  }

  /** Once connected; the default is to be open at once. */
  protected greet(): void {
    this.ready();
  }

  /**
   * A PINGREQ every keepalive period, as a client that has nothing else to say must send; the
   * server answers and the answer is not awaited: a server that stops answering closes the connection.
   */
  protected override opened(): void {
    if (this.ctx.keepaliveS > 0) {
      const ping = mqttPacket.generate({ cmd: 'pingreq' });
      this.#heartbeat = setInterval(() => this.send(ping), this.ctx.keepaliveS * 1000);
      this.#heartbeat.unref();
    }
  }

  protected cut(): void {
    this.socket.destroy();
  }

  close(): Promise<void> {
    this.closing();
    clearInterval(this.#heartbeat);
    if (this.socket.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.socket.destroy(), CLOSE_TIMEOUT_MS);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.send(mqttPacket.generate({ cmd: 'disconnect' }));
      this.outbox.flush();
      this.socket.end();
    });
  }
}

/** A PUBLISH of one topic and payload size, encoded once; each send copies it and writes its packet id and payload. */
interface PublishTemplate {
  topic: string;
  bytes: Buffer;
  /** where the packet id goes (QoS 1) */
  idAt: number;
  payloadAt: number;
}

function publishTemplate(topic: string, payloadLength: number, qos: 0 | 1): PublishTemplate {
  const bytes = mqttPacket.generate({
    cmd: 'publish', topic, payload: Buffer.alloc(payloadLength), qos, retain: false, dup: false, ...(qos === 1 ? { messageId: 1 } : {}),
  });
  const payloadAt = bytes.length - payloadLength;
  return { topic, bytes, idAt: payloadAt - 2, payloadAt };
}

/**
 * QoS 0 publishes are done once written; QoS 1 publishes on their PUBACK, matched by packet id.
 * MQTT 3.1.1 has no priority.
 */
class Publisher extends MqttLink implements PublisherConnection {
  #template: PublishTemplate | undefined;
  /** the done of each QoS 1 publish awaiting its PUBACK, by packet id */
  readonly #pending: (SendDone | undefined)[] = new Array(MAX_PACKET_ID + 1);
  #inFlight = 0;
  #lastId = 0;

  publish(key: string, payload: string, _priority: number, done: SendDone): void {
    // Deferred so a closed-loop sender on a dead connection does not recurse into itself.
    if (!this.isOpen) return void setImmediate(done, 'connection closed');
    const qos = this.ctx.qos;
    let template = this.#template;
    if (template?.topic !== key || template.bytes.length - template.payloadAt !== payload.length) {
      template = this.#template = publishTemplate(key, payload.length, qos);
    }
    if (qos === 1 && this.#inFlight === MAX_PACKET_ID) return void setImmediate(done, `${MAX_PACKET_ID} QoS 1 publishes in flight: no packet id left`);
    const at = this.outbox.reserve(template.bytes.length);
    const bytes = this.outbox.bytes;
    template.bytes.copy(bytes, at);
    bytes.write(payload, at + template.payloadAt, 'latin1');
    if (qos === 0) return this.outbox.whenWritten(done);
    const id = this.#nextId();
    bytes.writeUInt16BE(id, at + template.idAt);
    this.#pending[id] = done;
    this.#inFlight++;
  }

  /** The next packet id not awaiting a PUBACK: there is one, since fewer than 65,535 are. */
  #nextId(): number {
    let id = this.#lastId;
    do id = id === MAX_PACKET_ID ? 1 : id + 1;
    while (this.#pending[id] !== undefined);
    this.#lastId = id;
    return id;
  }

  protected override receive(packet: Incoming): void {
    if (packet.cmd !== 'puback') return super.receive(packet);
    const id = packet.messageId!;
    const done = this.#pending[id];
    if (done === undefined) return;
    this.#pending[id] = undefined;
    this.#inFlight--;
    done();
  }

  protected override abandon(reason: string): void {
    for (let id = 1; id <= MAX_PACKET_ID && this.#inFlight > 0; id++) {
      const done = this.#pending[id];
      if (done === undefined) continue;
      this.#pending[id] = undefined;
      this.#inFlight--;
      done(reason);
    }
    this.outbox.flush();
  }
}

/** Subscribes to its key at the run's QoS once connected, and acknowledges each QoS 1 delivery. */
class Subscriber extends MqttLink {
  constructor(ctx: ConnectionContext, readonly key: string, readonly onDelivery: (stampUs: number) => void) {
    super(ctx, !ctx.persistent);
  }

  protected override greet(): void {
    this.send(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: this.key, qos: this.ctx.qos }] }));
  }

  protected override receive(packet: Incoming): void {
    if (packet.cmd === 'publish') {
      this.onDelivery(readStampBytes(packet.payload as Buffer));
      if (packet.qos === 1) {
        const at = this.outbox.reserve(4);
        const bytes = this.outbox.bytes;
        bytes[at] = PUBACK_HEADER;
        bytes[at + 1] = PUBACK_REMAINING;
        bytes.writeUInt16BE(packet.messageId!, at + 2);
      }
    } else if (packet.cmd === 'suback') {
      if (packet.granted[0] === SUBACK_FAILURE) this.fail(`${this.ctx.server} refused SUBSCRIBE ${this.key} at QoS ${this.ctx.qos} (SUBACK 128)`);
      else this.ready();
    } else {
      super.receive(packet);
    }
  }
}

/**
 * One TCP connection per client, MQTT 3.1.1 with a clean session (subscribers: persistent with
 * --persistent), from the worker's loopback source address. The same code drives Junction, aedes,
 * Mosquitto and NATS's MQTT listener.
 */
export const mqttDriver: ProtocolDriver = {
  protocol: 'mqtt',

  publisher: (ctx) => new Publisher(ctx).open(),

  // A server that closes the connection instead of refusing the subscription (aedes does when its
  // authorizeSubscribe fails) fails the opening: the close before SUBACK rejects it, not a drop.
  subscriber: (ctx, key, onDelivery) => new Subscriber(ctx, key, onDelivery).open(),

  idle: (ctx) => new MqttLink(ctx).open(),
};
