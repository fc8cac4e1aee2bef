import { Duplex } from 'node:stream';
import type { ClientCertificate } from '../../src/index.js';

export type Violation = 'too_large' | 'malformed';

/**
 * Follows MQTT packet boundaries through a byte stream without copying or parsing payloads:
 * each packet is a type byte, a Remaining Length of 1 to 4 bytes of 7 bits each
 * [MQTT-2.2.3], and that many bytes. A length announcing a packet larger than the limit is
 * caught at its header, before the body is buffered anywhere; a fifth length byte is malformed.
 */
export class FixedHeaderScanner {
  readonly #maxPacketSize: number;
  /** body bytes of the current packet still to come */
  #skip = 0;
  /** length bytes read so far of the current header; -1 while waiting for a type byte */
  #lengthBytes = -1;
  #length = 0;
  #multiplier = 1;

  constructor(maxPacketSize: number) {
    this.#maxPacketSize = maxPacketSize;
  }

  scan(chunk: Buffer): Violation | undefined {
    let i = 0;
    while (i < chunk.length) {
      if (this.#skip > 0) {
        const n = Math.min(this.#skip, chunk.length - i);
        this.#skip -= n;
        i += n;
        continue;
      }
      if (this.#lengthBytes < 0) {
        this.#lengthBytes = 0;
        this.#length = 0;
        this.#multiplier = 1;
        i++;
        continue;
      }
      const byte = chunk[i++]!;
      this.#length += (byte & 0x7f) * this.#multiplier;
      this.#multiplier *= 128;
      this.#lengthBytes++;
      if (byte & 0x80) {
        if (this.#lengthBytes === 4) return 'malformed';
        continue;
      }
      if (1 + this.#lengthBytes + this.#length > this.#maxPacketSize) return 'too_large';
      this.#skip = this.#length;
      this.#lengthBytes = -1;
    }
    return undefined;
  }
}

/**
 * A client connection as aedes sees it: reads pass through a FixedHeaderScanner, writes go
 * straight to the socket. aedes has no packet size limit of its own (LIBRARIES §1), and its
 * parser would buffer a packet of any announced size. On a violation only this connection is
 * destroyed. Works the same over a TCP socket and a WebSocket stream.
 */
export class GuardedConnection extends Duplex {
  readonly remoteAddress: string | undefined;
  /** the listener it came in on: `mqtt`, or `http` for MQTT over WebSocket */
  readonly listener: string;
  /** its TLS client certificate, on a mutual-TLS listener */
  readonly certificate: ClientCertificate | undefined;
  readonly #socket: Duplex;
  readonly #scanner: FixedHeaderScanner;
  /** the socket is corked until the next turn of the event loop (see write) */
  #corked = false;
  /** the connections corked in this turn: one immediate uncorks them all, not one per connection (a fan-out) */
  static #corkedThisTurn: GuardedConnection[] = [];

  constructor(socket: Duplex, maxPacketSize: number, from: { remoteAddress: string | undefined; listener: string; certificate: ClientCertificate | undefined }, onViolation: (violation: Violation) => void) {
    super({ allowHalfOpen: false });
    this.remoteAddress = from.remoteAddress;
    this.listener = from.listener;
    this.certificate = from.certificate;
    this.#socket = socket;
    this.#scanner = new FixedHeaderScanner(maxPacketSize);
    // mqtt-packet corks only a stream that has `cork`, and schedules a next tick per packet to
    // uncork it: this one corks its socket per turn itself (write), so it shows none.
    Object.defineProperty(this, 'cork', { value: undefined });
    socket.on('data', (chunk: Buffer) => {
      const violation = this.#scanner.scan(chunk);
      if (violation) {
        onViolation(violation);
        this.destroy();
        return;
      }
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('drain', () => this.emit('drain'));
    socket.on('error', (err) => this.destroy(err));
    socket.on('close', () => this.destroy());
  }

  /** bytes written but not yet sent: how far behind this client is */
  get outboundBytes(): number {
    return this.#socket.writableLength;
  }

  /** a write found the socket full and 'drain' has not come yet */
  get needsDrain(): boolean {
    return this.#socket.writableNeedDrain;
  }

  override _read(): void {
    this.#socket.resume();
  }

  /*
   * Writes bypass this stream's own buffer: aedes writes every packet in pieces (mqtt-packet),
   * and a second layer of stream buffering would cost as much as the rest of a delivery. The
   * socket's return value and 'drain' are aedes's backpressure.
   */
  override write(chunk: Buffer | string, encodingOrCallback?: BufferEncoding | WriteCallback, callback?: WriteCallback): boolean {
    const socket = this.#socket;
    if (!this.#corked) {
      this.#corked = true;
      socket.cork();
      if (GuardedConnection.#corkedThisTurn.push(this) === 1) setImmediate(GuardedConnection.#flushTurn);
    } else if (socket.writableLength + (typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length) >= socket.writableHighWaterMark) {
      // Bytes held back by the cork must not make the socket look full (a write returning false,
      // needsDrain, outboundBytes past maxOutboundBuffer): they go out before they would.
      socket.uncork();
      socket.cork();
    }
    // mqtt-packet writes strings too (topics): the arguments go on exactly as given.
    return socket.write(chunk, encodingOrCallback as BufferEncoding, callback);
  }

  /*
   * mqtt-packet corks around each packet and uncorks on the next tick, but aedes writes each QoS 0
   * delivery in a setImmediate of its own, and Node runs the next ticks between two immediates:
   * one writev system call per message, the largest single cost of a delivery. The socket is
   * corked instead from the first write of a turn of the event loop until the next turn, so a
   * turn's packets leave in one writev (the constructor hides `cork` from mqtt-packet).
   */
  static #flushTurn(this: void): void {
    const corked = GuardedConnection.#corkedThisTurn;
    GuardedConnection.#corkedThisTurn = [];
    for (let i = 0; i < corked.length; i++) corked[i]!.#flush();
  }

  #flush(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.#socket.uncork();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: WriteCallback): void {
    this.#socket.write(chunk, callback);
  }

  override _final(callback: (err?: Error | null) => void): void {
    this.#socket.end();
    callback();
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // What the turn wrote goes out first: a CONNACK refusing the client is written just before its close.
    this.#flush();
    this.#socket.destroy();
    callback(err);
  }
}

type WriteCallback = (err?: Error | null) => void;
