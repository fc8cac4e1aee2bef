import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import net from 'node:net';
import { FIN, frameHeaderSize, OPCODE, writeFrameHeader } from '../../../adapters/websocket/frame-header.js';

/** RFC 6455 §1.3: what the server hashes with the client's key to prove it speaks WebSocket. */
const ACCEPT_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
/** One read: a burst of deliveries to one subscriber fits, a larger frame is gathered across reads. */
const READ_BUFFER_BYTES = 64 * 1024;
/** The longest upgrade response read before the connection is refused as not WebSocket. */
const MAX_HANDSHAKE_BYTES = 16 * 1024;

/** The ready states `ws` uses, so Link can read either. */
export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSING = 2;
export const CLOSED = 3;

/**
 * A WebSocket client for connections that mostly receive: the fan-out subscribers, whose every
 * delivery is a read on its own socket. `ws` hands each read through two streams (the socket's
 * Readable, its Receiver's Writable) and three events before a message reaches its listener;
 * profiled, that was most of a load worker's time per delivery, as much as the server spent
 * writing it. Here reads land in one reused buffer (net's `onread`) and frames are cut out of it
 * directly. It speaks RFC 6455 as far as a subscriber needs: the upgrade with its accept check,
 * text and binary messages (fragmented ones gathered), answers to pings, the closing handshake;
 * what it sends is masked, as a client's frames must be. No extensions are asked for.
 * Events and methods are those of `ws` that Link uses: 'open', 'message', 'error', 'close'. A
 * 'message' listener gets a view of the read buffer, valid only until it returns.
 */
export class FrameSocket extends EventEmitter {
  readyState = CONNECTING;
  readonly #socket: net.Socket;
  readonly #key = randomBytes(16).toString('base64');
  #handshake: Buffer | undefined = Buffer.alloc(0);
  /** bytes of a frame cut short by the end of a read, copied out of the reused buffer */
  #rest: Buffer | undefined;
  #fragments: Buffer[] = [];
  /** 1006 until a close frame says otherwise, 1005 for one without a code, as `ws` reports them */
  #closeCode = 1006;
  #closeReason = Buffer.alloc(0);

  constructor(host: string, port: number, path: string, localAddress: string) {
    super();
    const buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
    this.#socket = net.connect({
      host, port, localAddress, noDelay: true,
      onread: { buffer, callback: (n) => this.#read(buffer, n) },
    });
    this.#socket.on('connect', () => {
      this.#socket.write(`GET ${path} HTTP/1.1\r\nHost: ${host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
        + `Sec-WebSocket-Key: ${this.#key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
    });
    this.#socket.on('error', (err) => this.emit('error', err));
    this.#socket.on('close', () => {
      this.readyState = CLOSED;
      this.emit('close', this.#closeCode, this.#closeReason);
    });
  }

  /** Called with each read: the first `length` bytes of `bytes`, valid only during the call. */
  #read(bytes: Buffer, length: number): boolean {
    if (this.#handshake !== undefined) return this.#readHandshake(bytes.subarray(0, length));
    let all = bytes;
    let end = length;
    if (this.#rest !== undefined) {
      all = Buffer.concat([this.#rest, bytes.subarray(0, length)]);
      end = all.length;
    }
    let at = 0;
    // Every turn consumes a whole frame or stops: bounded by the bytes read.
    for (;;) {
      if (end - at < 2) break;
      const head = all[at]!;
      let size = all[at + 1]! & 0x7f;
      let start = at + 2;
      if (size === 126) {
        if (end - at < 4) break;
        size = all.readUInt16BE(at + 2);
        start = at + 4;
      } else if (size === 127) {
        if (end - at < 10) break;
        size = Number(all.readBigUInt64BE(at + 2));
        start = at + 10;
      }
      if (end < start + size) break;
      this.#frame(head, all.subarray(start, start + size));
      at = start + size;
    }
    this.#rest = at < end ? Buffer.from(all.subarray(at, end)) : undefined;
    return true;
  }

  #readHandshake(bytes: Buffer): boolean {
    const all = Buffer.concat([this.#handshake!, bytes]);
    const end = all.indexOf('\r\n\r\n');
    if (end < 0) {
      if (all.length > MAX_HANDSHAKE_BYTES) this.#refuse('no end to the upgrade response');
      else this.#handshake = Buffer.from(all);
      return true;
    }
    this.#handshake = undefined;
    const head = all.toString('latin1', 0, end);
    const status = head.slice(0, head.indexOf('\r\n'));
    if (!/^HTTP\/1\.1 101 /.test(status)) return this.#refuse(`unexpected server response: ${status.slice(9, 12)}`);
    const accept = /\r\nsec-websocket-accept:\s*(\S+)/i.exec(head)?.[1];
    if (accept !== createHash('sha1').update(this.#key + ACCEPT_GUID).digest('base64')) return this.#refuse('invalid Sec-WebSocket-Accept header');
    this.readyState = OPEN;
    this.emit('open');
    if (all.length > end + 4) this.#read(all.subarray(end + 4), all.length - end - 4);
    return true;
  }

  #refuse(reason: string): boolean {
    this.emit('error', new Error(reason));
    this.terminate();
    return false;
  }

  #frame(head: number, payload: Buffer): void {
    const opcode = head & 0x0f;
    if (opcode === OPCODE.ping) return this.#send(OPCODE.pong, payload);
    if (opcode === OPCODE.pong) return;
    if (opcode === OPCODE.close) {
      this.#closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this.#closeReason = Buffer.from(payload.subarray(2));
      if (this.readyState === OPEN) this.#send(OPCODE.close, payload.subarray(0, 2));
      this.readyState = CLOSING;
      this.#socket.end();
      return;
    }
    if ((head & FIN) === 0) {
      this.#fragments.push(Buffer.from(payload));
      return;
    }
    if (opcode === OPCODE.continuation) {
      this.#fragments.push(payload);
      const message = Buffer.concat(this.#fragments);
      this.#fragments = [];
      this.emit('message', message);
      return;
    }
    this.emit('message', payload);
  }

  /** One masked frame, as RFC 6455 §5.3 requires of a client. */
  #send(opcode: number, payload: Buffer, done?: (err?: Error | null) => void): void {
    const length = payload.length;
    const frame = Buffer.allocUnsafe(frameHeaderSize(length) + 4 + length);
    const maskAt = writeFrameHeader(frame, opcode, length, true);
    randomBytes(4).copy(frame, maskAt);
    for (let i = 0; i < length; i++) frame[maskAt + 4 + i] = payload[i]! ^ frame[maskAt + (i & 3)]!;
    this.#socket.write(frame, done);
  }

  send(data: string, done?: (err?: Error | null) => void): void {
    this.#send(OPCODE.text, Buffer.from(data), done);
  }

  ping(): void {
    this.#send(OPCODE.ping, Buffer.alloc(0));
  }

  close(code: number): void {
    if (this.readyState !== OPEN) return this.terminate();
    this.readyState = CLOSING;
    const payload = Buffer.allocUnsafe(2);
    payload.writeUInt16BE(code);
    this.#send(OPCODE.close, payload);
  }

  terminate(): void {
    this.readyState = CLOSING;
    this.#socket.destroy();
  }
}
