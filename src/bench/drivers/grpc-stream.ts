import http2 from 'node:http2';
import { status } from '@grpc/grpc-js';
import type { ConnectionContext, PublisherConnection, SendDone } from './driver.js';

/** `junction.v1.Message`, only the fields the load generator sets. */
export interface MessageOut {
  key: string;
  payload: Buffer;
  priority: number;
  qos: number;
}

export interface PublishAck {
  sequence: number;
  /** null when the message was accepted */
  error: { code: string; message: string } | null;
}

/** The proto's own (de)serializers of PublishStream, as @grpc/proto-loader makes them. */
export interface StreamCodec {
  path: string;
  requestSerialize(message: MessageOut): Buffer;
  responseDeserialize(bytes: Buffer): PublishAck;
}

/** gRPC's length prefix: a compression flag (0: none) and the message's length, big-endian. */
const PREFIX_BYTES = 5;
/** From the TCP connect to the response headers. */
const OPEN_TIMEOUT_MS = 30_000;

/**
 * `junction.v1.Message` of one key and payload size, encoded once per priority by the proto's own
 * serializer; each send copies it and writes its payload in place. The payload is the only field
 * that changes between messages of a priority, so the bytes on the wire are what encoding each
 * message would give, without a message object and an encoding per send.
 */
export class MessageTemplates {
  readonly #byPriority = new Map<number, Buffer>();
  #payloadAt = -1;

  constructor(readonly key: string, readonly payloadLength: number, readonly qos: number, readonly serialize: (message: MessageOut) => Buffer) {}

  /** The encoded message of this priority, its payload bytes still to be written at {@link payloadAt}. */
  template(priority: number): Buffer {
    let template = this.#byPriority.get(priority);
    if (template === undefined) {
      template = this.#encoded(priority, 0x61);
      // Where the payload starts: the first byte that differs between two payloads of the same size.
      if (this.#payloadAt < 0) this.#payloadAt = firstDifference(template, this.#encoded(priority, 0x62));
      this.#byPriority.set(priority, template);
    }
    return template;
  }

  get payloadAt(): number {
    return this.#payloadAt;
  }

  #encoded(priority: number, fill: number): Buffer {
    return this.serialize({ key: this.key, payload: Buffer.alloc(this.payloadLength, fill), priority, qos: this.qos });
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return i;
}

/**
 * PublishStream on node:http2, the transport grpc-js itself runs on, without grpc-js's per-message
 * layers (interceptors, filters, a retry buffer, an object-mode stream each way), which cost a load
 * worker more per message than the server spent. Each message is length-prefixed as gRPC frames
 * it and written as it is sent; node:http2 packs the writes of one turn into DATA frames of up to
 * 16 KiB, several messages to a frame, as gRPC allows (message and frame boundaries are unrelated).
 * grpc-js instead waits for each write to be done before the next, one message per frame and per
 * socket write: framed that way, a node:http2 client spent as much per message as grpc-js
 * (measured), and the server reading it more than with a frame of many.
 * Acks are read from the response's DATA frames and decoded by the proto's deserializer; the
 * trailers' grpc-status ends the stream. Each ack settles the message at its `sequence`, in
 * whatever order acks come.
 */
export async function http2StreamPublisher(ctx: ConnectionContext, codec: StreamCodec): Promise<PublisherConnection> {
  const host = ctx.host.includes(':') ? `[${ctx.host}]` : ctx.host;
  const session = http2.connect(`http://${host}:${ctx.ports.grpc}`);
  const stream = session.request({
    ':method': 'POST', ':path': codec.path, 'content-type': 'application/grpc', te: 'trailers', 'user-agent': 'junction-bench',
  });
  const pending = new Map<number, SendDone>();
  let templates: MessageTemplates | undefined;
  let sequence = 0;
  let opened = false;
  let closing = false;
  let failed: string | undefined;
  let rest: Buffer | undefined;

  const fail = (reason: string) => {
    if (failed !== undefined) return;
    failed = reason;
    // Before it opened, a failure is the connect's, counted as such.
    if (opened && !closing) ctx.onDrop(reason);
    for (const done of pending.values()) done(reason);
    pending.clear();
  };
  const ended = (headers: http2.IncomingHttpHeaders) => {
    const code = Number(headers['grpc-status'] ?? status.UNKNOWN);
    const message = decodeURIComponent(String(headers['grpc-message'] ?? ''));
    fail(code === status.OK ? 'the server ended the stream' : `${status[code] ?? code}: ${message}`);
  };
  stream.on('data', (chunk: Buffer) => {
    const bytes = rest === undefined ? chunk : Buffer.concat([rest, chunk]);
    let at = 0;
    // Every turn consumes a whole message or stops: bounded by the bytes read.
    while (bytes.length - at >= PREFIX_BYTES) {
      const end = at + PREFIX_BYTES + bytes.readUInt32BE(at + 1);
      if (end > bytes.length) break;
      const ack = codec.responseDeserialize(bytes.subarray(at + PREFIX_BYTES, end));
      at = end;
      const done = pending.get(ack.sequence);
      if (done === undefined) continue;
      pending.delete(ack.sequence);
      done(ack.error?.code ? `${ack.error.code}: ${ack.error.message}` : undefined);
    }
    rest = at < bytes.length ? bytes.subarray(at) : undefined;
  });
  stream.on('trailers', ended);
  // A trailers-only response (the call refused at once) carries grpc-status in its headers.
  stream.on('response', (headers) => { if (headers['grpc-status'] !== undefined) ended(headers); });
  stream.on('close', () => fail(`stream closed (HTTP/2 code ${stream.rstCode})`));
  // Followed by 'close', which fails what is pending.
  stream.on('error', (err) => { if (failed === undefined && !closing) fail(err.message); });
  session.on('error', () => undefined);

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`PublishStream: no response within ${OPEN_TIMEOUT_MS / 1000} s`)), OPEN_TIMEOUT_MS);
    session.once('error', (err) => { clearTimeout(timer); reject(err); });
    // The gateway answers PublishStream's headers at once; the stream is usable before that, so
    // waiting for the session's SETTINGS is enough to know the server is there.
    session.once('remoteSettings', () => { clearTimeout(timer); resolve(); });
  }).catch((err: unknown) => {
    session.destroy();
    throw err;
  });
  opened = true;

  return {
    publish(key, payload, priority, done) {
      // Deferred so a closed-loop sender on a dead stream does not recurse into itself.
      if (failed !== undefined) return void setImmediate(done, failed);
      if (templates?.key !== key || templates.payloadLength !== payload.length) {
        templates = new MessageTemplates(key, payload.length, ctx.qos, codec.requestSerialize);
      }
      const template = templates.template(priority);
      const bytes = Buffer.allocUnsafe(PREFIX_BYTES + template.length);
      bytes[0] = 0;
      bytes.writeUInt32BE(template.length, 1);
      template.copy(bytes, PREFIX_BYTES);
      bytes.write(payload, PREFIX_BYTES + templates.payloadAt, 'latin1');
      pending.set(++sequence, done);
      stream.write(bytes);
    },
    close() {
      closing = true;
      return new Promise((resolve) => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        session.close(() => resolve());
        session.destroy();
      });
    },
  };
}
