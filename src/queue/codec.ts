import { crc32 } from 'node:zlib';
import { MAX_PRIORITY, type Message, type MessageSource, type QoS } from '../message.js';
import type { QueueOutcome } from './store.js';

/**
 * The records of a segment file. Every frame is
 *
 * ```
 * magic u32 | crc32 u32 | body length u32 | body
 * ```
 *
 * little-endian, the CRC covering the length and the body. The magic lets a reader find the next
 * frame after a damaged one; the CRC tells a whole frame from a damaged or half-written one.
 * Bodies start with their type: see docs/durability.md for each layout.
 */
export const FORMAT_VERSION = 1;

const MAGIC = 0x0d514aa7;
const MAGIC_BYTES = Buffer.from([0xa7, 0x4a, 0x51, 0x0d]);
const HEADER_BYTES = 12;
/** No real frame comes near this: a larger length is damage, not a record. */
const MAX_BODY_BYTES = 1 << 30;

const SEGMENT = 0;
const APPEND = 1;
const ATTEMPT = 2;
const SETTLE = 3;

const SEQ_BYTES = 6;
const APPEND_FIXED_BYTES = 1 + SEQ_BYTES + 4 + 1 + 1 + 2 + 8;
const ATTEMPT_BODY_BYTES = 1 + SEQ_BYTES + 4;
const SETTLE_BODY_BYTES = 1 + SEQ_BYTES + 1;

/**
 * The numbers files store for outcomes. They are part of the file format: never renumber one; a
 * new outcome gets the next free number (the Record type makes forgetting one a compile error).
 * Protocols are registered by name, so a record stores its protocol's name.
 */
const OUTCOME_CODES: Readonly<Record<QueueOutcome, number>> = { delivered: 0, expired: 1, deadLettered: 2, rerouted: 3, returned: 4 };
const OUTCOME_OF = inverse(OUTCOME_CODES);

function inverse<T extends string>(codes: Readonly<Record<T, number>>): (T | undefined)[] {
  const names: (T | undefined)[] = [];
  for (const [name, code] of Object.entries(codes) as [T, number][]) names[code] = name;
  return names;
}

/** Which optional message fields an append frame carries. */
const HAS_CONTENT_TYPE = 1 << 0;
const HAS_REPLY_TO = 1 << 1;
const HAS_CORRELATION_ID = 1 << 2;
const HAS_EXPIRES_AT = 1 << 3;
const HAS_RETAIN = 1 << 4;
const RETAIN = 1 << 5;
const HAS_CLIENT_ID = 1 << 6;
const HAS_REMOTE_ADDRESS = 1 << 7;
const HAS_PRINCIPAL = 1 << 8;

export type Frame =
  | { type: 'segment'; version: number }
  | { type: 'append'; seq: number; attempts: number; target: string; message: Message; bytes: number }
  | { type: 'attempt'; seq: number; attempts: number }
  | { type: 'settle'; seq: number; outcome: QueueOutcome };

/** A growing buffer that frames are encoded into and written from. */
export class FrameBuffer {
  static readonly #INITIAL = 64 * 1024;
  bytes = Buffer.allocUnsafe(FrameBuffer.#INITIAL);
  length = 0;

  /** makes room for `size` more bytes and returns where they start */
  reserve(size: number): number {
    const at = this.length;
    if (at + size > this.bytes.length) {
      const grown = Buffer.allocUnsafe(Math.max(this.bytes.length * 2, at + size));
      this.bytes.copy(grown, 0, 0, at);
      this.bytes = grown;
    }
    this.length = at + size;
    return at;
  }

  /** Drops everything from `length` on; a buffer grown for one large message shrinks back once empty. */
  truncate(length: number): void {
    this.length = length;
    if (length === 0 && this.bytes.length > 16 * FrameBuffer.#INITIAL) this.bytes = Buffer.allocUnsafe(FrameBuffer.#INITIAL);
  }
}

function stringBytes(value: string): number {
  return 4 + Buffer.byteLength(value);
}

/** The size of the append frame for this message: what the byte bounds of every local store count. */
export function appendFrameBytes(target: string, message: Message): number {
  let size = HEADER_BYTES + APPEND_FIXED_BYTES + stringBytes(target) + stringBytes(message.source.protocol) + stringBytes(message.id) + stringBytes(message.key)
    + stringBytes(message.traceparent) + 4 + 4 + message.payload.length;
  if (message.expiresAt !== undefined) size += 8;
  if (message.contentType !== undefined) size += stringBytes(message.contentType);
  if (message.replyTo !== undefined) size += stringBytes(message.replyTo);
  if (message.correlationId !== undefined) size += stringBytes(message.correlationId);
  const source = message.source;
  if (source.clientId !== undefined) size += stringBytes(source.clientId);
  if (source.remoteAddress !== undefined) size += stringBytes(source.remoteAddress);
  if (source.principal !== undefined) size += stringBytes(source.principal);
  const headers = message.headers;
  for (const name in headers) size += stringBytes(name) + stringBytes(headers[name]!);
  return size;
}

function flagsOf(message: Message): number {
  let flags = 0;
  if (message.contentType !== undefined) flags |= HAS_CONTENT_TYPE;
  if (message.replyTo !== undefined) flags |= HAS_REPLY_TO;
  if (message.correlationId !== undefined) flags |= HAS_CORRELATION_ID;
  if (message.expiresAt !== undefined) flags |= HAS_EXPIRES_AT;
  if (message.retain !== undefined) flags |= message.retain ? HAS_RETAIN | RETAIN : HAS_RETAIN;
  if (message.source.clientId !== undefined) flags |= HAS_CLIENT_ID;
  if (message.source.remoteAddress !== undefined) flags |= HAS_REMOTE_ADDRESS;
  if (message.source.principal !== undefined) flags |= HAS_PRINCIPAL;
  return flags;
}

function writeString(out: Buffer, at: number, value: string): number {
  const written = out.write(value, at + 4);
  out.writeUInt32LE(written, at);
  return at + 4 + written;
}

/** Starts a frame of `bodyBytes` in `out`; returns where its body starts. */
function beginFrame(out: FrameBuffer, bodyBytes: number): number {
  const at = out.reserve(HEADER_BYTES + bodyBytes);
  out.bytes.writeUInt32LE(MAGIC, at);
  out.bytes.writeUInt32LE(bodyBytes, at + 8);
  return at + HEADER_BYTES;
}

function endFrame(out: FrameBuffer, body: number): void {
  out.bytes.writeUInt32LE(crc32(out.bytes.subarray(body - 4, out.length)), body - 8);
}

export function writeSegmentFrame(out: FrameBuffer): void {
  const body = beginFrame(out, 2);
  out.bytes[body] = SEGMENT;
  out.bytes[body + 1] = FORMAT_VERSION;
  endFrame(out, body);
}

/** `bytes` is appendFrameBytes(target, message), which the caller has already paid for. */
export function writeAppendFrame(out: FrameBuffer, seq: number, attempts: number, target: string, message: Message, bytes: number): void {
  const body = beginFrame(out, bytes - HEADER_BYTES);
  const b = out.bytes;
  const flags = flagsOf(message);
  b[body] = APPEND;
  b.writeUIntLE(seq, body + 1, SEQ_BYTES);
  b.writeUInt32LE(attempts, body + 7);
  b[body + 11] = message.priority;
  b[body + 12] = message.qos;
  b.writeUInt16LE(flags, body + 13);
  b.writeDoubleLE(message.timestamp, body + 15);
  let at = body + APPEND_FIXED_BYTES;
  if (flags & HAS_EXPIRES_AT) at = b.writeDoubleLE(message.expiresAt!, at);
  at = writeString(b, at, target);
  at = writeString(b, at, message.source.protocol);
  at = writeString(b, at, message.id);
  at = writeString(b, at, message.key);
  at = writeString(b, at, message.traceparent);
  if (flags & HAS_CONTENT_TYPE) at = writeString(b, at, message.contentType!);
  if (flags & HAS_REPLY_TO) at = writeString(b, at, message.replyTo!);
  if (flags & HAS_CORRELATION_ID) at = writeString(b, at, message.correlationId!);
  if (flags & HAS_CLIENT_ID) at = writeString(b, at, message.source.clientId!);
  if (flags & HAS_REMOTE_ADDRESS) at = writeString(b, at, message.source.remoteAddress!);
  if (flags & HAS_PRINCIPAL) at = writeString(b, at, message.source.principal!);
  const countAt = at;
  let count = 0;
  at += 4;
  const headers = message.headers;
  for (const name in headers) {
    at = writeString(b, at, name);
    at = writeString(b, at, headers[name]!);
    count++;
  }
  b.writeUInt32LE(count, countAt);
  b.writeUInt32LE(message.payload.length, at);
  message.payload.copy(b, at + 4);
  endFrame(out, body);
}

export function writeAttemptFrame(out: FrameBuffer, seq: number, attempts: number): void {
  const body = beginFrame(out, ATTEMPT_BODY_BYTES);
  out.bytes[body] = ATTEMPT;
  out.bytes.writeUIntLE(seq, body + 1, SEQ_BYTES);
  out.bytes.writeUInt32LE(attempts, body + 7);
  endFrame(out, body);
}

export function writeSettleFrame(out: FrameBuffer, seq: number, outcome: QueueOutcome): void {
  const body = beginFrame(out, SETTLE_BODY_BYTES);
  out.bytes[body] = SETTLE;
  out.bytes.writeUIntLE(seq, body + 1, SEQ_BYTES);
  out.bytes[body + 7] = OUTCOME_CODES[outcome];
  endFrame(out, body);
}

/** Frames a reader could not use, by where they were found. */
export interface ScanDamage {
  /** damaged frames followed by good ones: each region up to the next good frame counts once */
  corrupt: number;
  /** a damaged or incomplete end with no good frame after it: a write the crash cut short */
  torn: number;
}

/**
 * Reads every good frame of a segment in order. After a damaged frame it resynchronises on the
 * next magic that starts a frame with a valid CRC, so one bad record costs only itself.
 */
export function scanFrames(data: Buffer, visit: (frame: Frame) => void): ScanDamage {
  const damage: ScanDamage = { corrupt: 0, torn: 0 };
  let at = 0;
  while (at < data.length) {
    const frame = frameAt(data, at);
    if (frame) {
      visit(frame.frame);
      at = frame.end;
      continue;
    }
    const next = nextFrame(data, at + 1);
    if (next < 0) {
      damage.torn++;
      break;
    }
    damage.corrupt++;
    at = next;
  }
  return damage;
}

function nextFrame(data: Buffer, from: number): number {
  for (let at = data.indexOf(MAGIC_BYTES, from); at >= 0; at = data.indexOf(MAGIC_BYTES, at + 1)) {
    if (frameAt(data, at)) return at;
  }
  return -1;
}

function frameAt(data: Buffer, at: number): { frame: Frame; end: number } | undefined {
  if (at + HEADER_BYTES > data.length || data.readUInt32LE(at) !== MAGIC) return undefined;
  const length = data.readUInt32LE(at + 8);
  const end = at + HEADER_BYTES + length;
  if (length === 0 || length > MAX_BODY_BYTES || end > data.length) return undefined;
  if (crc32(data.subarray(at + 8, end)) !== data.readUInt32LE(at + 4)) return undefined;
  const frame = decodeBody(data, at + HEADER_BYTES, end);
  return frame && { frame, end };
}

/** Reads a body whose CRC matched; undefined when it still does not make sense. */
function decodeBody(data: Buffer, start: number, end: number): Frame | undefined {
  const length = end - start;
  switch (data[start]) {
    case SEGMENT:
      return length === 2 ? { type: 'segment', version: data[start + 1]! } : undefined;
    case ATTEMPT:
      return length === ATTEMPT_BODY_BYTES
        ? { type: 'attempt', seq: data.readUIntLE(start + 1, SEQ_BYTES), attempts: data.readUInt32LE(start + 7) }
        : undefined;
    case SETTLE: {
      const outcome = OUTCOME_OF[data[start + 7]!];
      return length === SETTLE_BODY_BYTES && outcome ? { type: 'settle', seq: data.readUIntLE(start + 1, SEQ_BYTES), outcome } : undefined;
    }
    case APPEND:
      return length >= APPEND_FIXED_BYTES ? decodeAppend(data, start, end) : undefined;
    default:
      return undefined;
  }
}

class Truncated extends Error {}

/** Reads fields in order, refusing to run past the frame's end. */
class Reader {
  readonly #data: Buffer;
  readonly #end: number;
  at: number;

  constructor(data: Buffer, at: number, end: number) {
    this.#data = data;
    this.at = at;
    this.#end = end;
  }

  #claim(bytes: number): number {
    const at = this.at;
    if (at + bytes > this.#end) throw new Truncated();
    this.at = at + bytes;
    return at;
  }

  u32(): number {
    return this.#data.readUInt32LE(this.#claim(4));
  }

  double(): number {
    return this.#data.readDoubleLE(this.#claim(8));
  }

  string(): string {
    const length = this.u32();
    const at = this.#claim(length);
    return this.#data.toString('utf8', at, at + length);
  }

  /** a copy, so a recovered message does not keep the whole segment in memory */
  bytes(): Buffer {
    const length = this.u32();
    const at = this.#claim(length);
    return Buffer.from(this.#data.subarray(at, at + length));
  }

  get done(): boolean {
    return this.at === this.#end;
  }
}

function decodeAppend(data: Buffer, start: number, end: number): Frame | undefined {
  const priority = data[start + 11]!;
  const qos = data[start + 12]!;
  if (priority > MAX_PRIORITY || qos > 2) return undefined;
  const flags = data.readUInt16LE(start + 13);
  const timestamp = data.readDoubleLE(start + 15);
  const read = new Reader(data, start + APPEND_FIXED_BYTES, end);
  try {
    const expiresAt = flags & HAS_EXPIRES_AT ? read.double() : undefined;
    const target = read.string();
    const protocol = read.string();
    const id = read.string();
    const key = read.string();
    const traceparent = read.string();
    const contentType = flags & HAS_CONTENT_TYPE ? read.string() : undefined;
    const replyTo = flags & HAS_REPLY_TO ? read.string() : undefined;
    const correlationId = flags & HAS_CORRELATION_ID ? read.string() : undefined;
    const source: MessageSource = { protocol };
    if (flags & HAS_CLIENT_ID) source.clientId = read.string();
    if (flags & HAS_REMOTE_ADDRESS) source.remoteAddress = read.string();
    if (flags & HAS_PRINCIPAL) source.principal = read.string();
    const headers: Record<string, string> = {};
    for (let count = read.u32(); count > 0; count--) {
      const name = read.string();
      const value = read.string();
      // A JSON-parsed header object can own a `__proto__` key; plain assignment would drop it.
      if (name === '__proto__') Object.defineProperty(headers, name, { value, enumerable: true, writable: true, configurable: true });
      else headers[name] = value;
    }
    const payload = read.bytes();
    if (!read.done) return undefined;
    const message: Message = { id, key, payload, headers, priority, qos: qos as QoS, source, timestamp, traceparent };
    if (contentType !== undefined) message.contentType = contentType;
    if (replyTo !== undefined) message.replyTo = replyTo;
    if (correlationId !== undefined) message.correlationId = correlationId;
    if (expiresAt !== undefined) message.expiresAt = expiresAt;
    if (flags & HAS_RETAIN) message.retain = (flags & RETAIN) !== 0;
    return {
      type: 'append',
      seq: data.readUIntLE(start + 1, SEQ_BYTES),
      attempts: data.readUInt32LE(start + 7),
      target,
      message,
      bytes: end - start + HEADER_BYTES,
    };
  } catch (err) {
    if (err instanceof Truncated) return undefined;
    throw err;
  }
}
