import { Metadata, status as Status, type StatusObject } from '@grpc/grpc-js';
import {
  createMessage, ERRORS, GatewayError,
  type GatewayErrorDetails, type Message, type MessageInit, type MessageSource, type TargetReply,
} from '../../src/index.js';
import { decoded, type DeliveryOut, type ErrorOut, type MessageIn, type ReplyOut } from './proto.js';

/**
 * Metadata that is transport, gRPC's own, binary, or credentials: never a message header.
 * (grpc-js already removes pseudo-headers, grpc-timeout, grpc-encoding, te and content-type.)
 */
const NOT_MESSAGE_HEADERS = new Set(['content-type', 'te', 'user-agent', 'authorization', 'x-api-key', 'cookie', 'traceparent']);

/** What every message of one call shares: headers from its metadata, trace context, sender. */
export interface CallContext {
  headers: Readonly<Record<string, string>>;
  traceparent: string | undefined;
  source: MessageSource;
}

export function callContext(metadata: Metadata, peer: string, principal: string | undefined): CallContext {
  const headers: Record<string, string> = {};
  for (const [name, values] of Object.entries(metadata.getMap())) {
    if (NOT_MESSAGE_HEADERS.has(name) || name.startsWith('grpc-') || name.endsWith('-bin') || name.startsWith(':')) continue;
    if (typeof values === 'string') headers[name] = metadata.get(name).join(', ');
  }
  const traceparent = metadata.get('traceparent')[0];
  return {
    // Shared by the call's messages that add no headers of their own (messageHeaders).
    headers: Object.freeze(headers),
    traceparent: typeof traceparent === 'string' ? traceparent : undefined,
    source: { protocol: 'grpc', remoteAddress: peer, ...(principal !== undefined ? { principal } : {}) },
  };
}

/**
 * A `junction.v1.Message` as a gateway Message. Proto3 cannot tell an empty string from an unset
 * one, so '' means "not given" for id, content type and the request/reply fields.
 */
export function messageFromProto(request: MessageIn, call: CallContext, maxPayloadSize: number, id: string): Message {
  const input = decoded(request, 'junction.v1.Message');
  if (input.payload.length > maxPayloadSize) {
    throw new GatewayError('too_large', `payload exceeds the limit of ${maxPayloadSize} bytes (limits.maxPayloadSize)`);
  }
  // Optional fields are set one by one rather than spread in: each spread made an object per message.
  const init: MessageInit = {
    id,
    key: input.key,
    payload: input.payload,
    headers: messageHeaders(call.headers, input),
    // The ack is an acknowledgement, so gRPC publishes are at-least-once unless asked otherwise.
    qos: input.qos ?? 1,
    source: call.source,
  };
  if (input.priority !== undefined) init.priority = input.priority;
  if (input.contentType !== '') init.contentType = input.contentType;
  if (call.traceparent !== undefined) init.traceparent = call.traceparent;
  if (input.replyTo !== '') init.replyTo = input.replyTo;
  if (input.correlationId !== '') init.correlationId = input.correlationId;
  if (input.ttlMs > 0) init.expiresAt = Date.now() + input.ttlMs;
  return createMessage(init);
}

/**
 * The call's headers with the message's own over them. A message that adds none shares the
 * call's (frozen) object instead of copying it.
 */
function messageHeaders(callHeaders: Readonly<Record<string, string>>, input: MessageIn): Record<string, string> {
  // Routes match the content type as a header, as they do for HTTP's Content-Type.
  const addsContentType = input.contentType !== '' && callHeaders['content-type'] === undefined;
  if (!addsContentType && !hasAny(input.headers)) return callHeaders;
  const headers = { ...callHeaders };
  for (const name in input.headers) headers[name.toLowerCase()] = input.headers[name]!;
  if (addsContentType && headers['content-type'] === undefined) headers['content-type'] = input.contentType;
  return headers;
}

function hasAny(record: Record<string, string>): boolean {
  for (const _ in record) return true;
  return false;
}

/** What every subscriber of a message gets alike: a Delivery without ttl_ms and dropped. */
function sharedDelivery(message: Message): Omit<DeliveryOut, 'ttlMs' | 'dropped'> {
  return {
    id: message.id,
    key: message.key,
    payload: message.payload,
    contentType: message.contentType ?? '',
    headers: message.headers,
    priority: message.priority,
    qos: message.qos,
    replyTo: message.replyTo ?? '',
    correlationId: message.correlationId ?? '',
    traceparent: message.traceparent,
    timestampMs: message.timestamp,
  };
}

/** Delivery's ttl_ms (12) and dropped (13) as protobuf keys: the field number, then wire type 0 (varint). */
const TTL_MS_KEY = (12 << 3) | 0;
const DROPPED_KEY = (13 << 3) | 0;
/** PublishAck's id (1, wire type 2: length-delimited), sequence (2) and expired (4) as keys. */
const ACK_ID_KEY = (1 << 3) | 2;
const ACK_SEQUENCE_KEY = (2 << 3) | 0;
const ACK_EXPIRED_KEY = (4 << 3) | 0;
/** A key of one byte and a varint of a safe integer (at most 8 bytes) */
const MAX_VARINT_FIELD = 9;

const sharedEncodings = new WeakMap<Message, Buffer>();

/**
 * A `junction.v1.Delivery` as bytes. A fan-out hands the same Message to every subscriber: what
 * they get alike is encoded once per message, and the two fields that differ (ttl_ms, the time
 * left when written; dropped, per subscriber) are appended when not zero, which protobuf allows
 * (fields may come in any order).
 */
export function deliveryBytes(message: Message, dropped: number, now: number, encode: (delivery: DeliveryOut) => Buffer): Buffer {
  let shared = sharedEncodings.get(message);
  if (shared === undefined) {
    shared = encode(sharedDelivery(message) as DeliveryOut);
    sharedEncodings.set(message, shared);
  }
  const ttlMs = message.expiresAt !== undefined ? Math.max(1, message.expiresAt - now) : 0;
  if (ttlMs === 0 && dropped === 0) return shared;
  const tail = Buffer.allocUnsafe(2 * MAX_VARINT_FIELD);
  let at = 0;
  if (ttlMs > 0) at = writeVarintField(tail, at, TTL_MS_KEY, ttlMs);
  if (dropped > 0) at = writeVarintField(tail, at, DROPPED_KEY, dropped);
  return Buffer.concat([shared, tail.subarray(0, at)]);
}

/**
 * An accepted message's `junction.v1.PublishAck` as bytes. A PublishStream answers every message
 * with one; written by hand it costs a fraction of protobufjs's object check, writer and fork.
 * A refusal (with its Error) is rare and goes through the generated encoder.
 */
export function acceptedAckBytes(id: string, sequence: number, expired: boolean): Buffer {
  const idLength = Buffer.byteLength(id);
  // Sized exactly: a slice of the pool, with no view cut from a larger one.
  const size = (idLength > 0 ? 1 + varintSize(idLength) + idLength : 0) + (sequence > 0 ? 1 + varintSize(sequence) : 0) + (expired ? 2 : 0);
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  if (idLength > 0) {
    at = writeVarintField(out, at, ACK_ID_KEY, idLength);
    at += out.write(id, at);
  }
  if (sequence > 0) at = writeVarintField(out, at, ACK_SEQUENCE_KEY, sequence);
  if (expired) writeVarintField(out, at, ACK_EXPIRED_KEY, 1);
  return out;
}

/** Bytes of a non-negative safe integer as a varint. */
function varintSize(value: number): number {
  let size = 1;
  for (let rest = value; rest >= 0x80; rest = Math.floor(rest / 0x80)) size++;
  return size;
}

/**
 * A field's key (one byte for fields below 16), then a non-negative safe integer 7 bits a byte,
 * lowest first (division rather than shifts: uint64 values pass 2^32). Returns the next offset.
 */
function writeVarintField(out: Buffer, at: number, key: number, value: number): number {
  out[at++] = key;
  let rest = value;
  while (rest >= 0x80) {
    out[at++] = (rest % 0x80) | 0x80;
    rest = Math.floor(rest / 0x80);
  }
  out[at++] = rest;
  return at;
}

export function replyOf(id: string, reply: TargetReply | undefined): ReplyOut {
  return {
    id,
    payload: reply?.payload ?? Buffer.alloc(0),
    contentType: reply?.contentType ?? '',
    headers: reply?.headers ?? {},
    status: reply?.status ?? 0,
  };
}

/** A per-message refusal on PublishStream. */
export function errorOf(err: GatewayError): ErrorOut {
  return {
    code: err.code,
    message: err.message,
    retryAfterMs: err.details.retryAfterMs ?? 0,
    field: err.details.field ?? '',
  };
}

/** Trailing metadata naming the gateway's error code, so clients need not parse the text. */
function errorMetadata(code: string, details: GatewayErrorDetails): Metadata {
  const metadata = new Metadata();
  metadata.set('junction-error-code', code);
  if (details.retryAfterMs !== undefined) metadata.set('junction-retry-after-ms', String(details.retryAfterMs));
  if (details.field !== undefined) metadata.set('junction-error-field', details.field);
  if (details.upstreamStatus !== undefined) metadata.set('junction-upstream-status', String(details.upstreamStatus));
  return metadata;
}

/** A GatewayError as the status that ends a call, per the one error table. */
export function statusOf(err: GatewayError, extra?: Record<string, string>): StatusObject {
  const metadata = errorMetadata(err.code, err.details);
  for (const [name, value] of Object.entries(extra ?? {})) metadata.set(name, value);
  return { code: ERRORS[err.code].grpc as Status, details: err.message, metadata };
}

/**
 * Text as an ASCII metadata value, which gRPC allows printable ASCII only in: other bytes of its
 * UTF-8, and `%`, percent-encoded, as gRPC does for grpc-message.
 */
export function asciiMetadata(text: string): string {
  if (!/[^\x20-\x24\x26-\x7e]/.test(text)) return text;
  let out = '';
  for (const byte of Buffer.from(text, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

export function deadlinePassed(deadline: Date | number, now = Date.now()): boolean {
  return (deadline instanceof Date ? deadline.getTime() : deadline) <= now;
}

/** ms left before the call's deadline, or undefined when it has none. */
export function msUntil(deadline: Date | number, now = Date.now()): number | undefined {
  const at = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(at) ? Math.max(1, at - now) : undefined;
}

export function pastDeadlineStatus(): StatusObject {
  return { code: Status.DEADLINE_EXCEEDED, details: 'the deadline passed before the gateway read the call; nothing was routed', metadata: new Metadata() };
}
