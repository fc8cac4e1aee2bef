import { isUtf8 } from 'node:buffer';
import {
  createMessage, GatewayError, groupProblem, isJsonContentType, keyProblem, patternProblem,
  type ClientFrame, type FrameId, type JsonValue, type Message, type MessageSource, type PublishFrame, type RequestFrame, type TargetReply,
} from '../../src/index.js';
import { frameHeaderSize, OPCODE, writeFrameHeader } from './frame-header.js';

const OPS = ['publish', 'subscribe', 'unsubscribe', 'request', 'ping', 'ack'] as const;
const MAX_ID_LENGTH = 128;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/**
 * How deep a JSON payload may nest. It is turned back into bytes with JSON.stringify, which
 * recurses and throws a RangeError a few thousand levels down; no message needs this many.
 */
export const MAX_PAYLOAD_DEPTH = 128;

function bad(field: string, message: string): GatewayError {
  return new GatewayError('bad_request', message, { field });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function isFrameId(value: unknown): value is FrameId {
  return (typeof value === 'string' && value.length > 0 && value.length <= MAX_ID_LENGTH) || Number.isSafeInteger(value);
}

/** The frame's id if it has a usable one, so an error about the rest of it can still name it. */
export function frameIdOf(frame: unknown): FrameId | undefined {
  return isRecord(frame) && isFrameId(frame.id) ? frame.id : undefined;
}

function optionalString(frame: Record<string, unknown>, field: string): string | undefined {
  const value = frame[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw bad(field, `${field} must be a string`);
  return value;
}

function positiveInteger(frame: Record<string, unknown>, field: string): number | undefined {
  const value = frame[field];
  if (value === undefined) return undefined;
  if (!Number.isSafeInteger(value) || (value as number) <= 0) throw bad(field, `${field} must be a positive integer (ms)`);
  return value as number;
}

function id(frame: Record<string, unknown>, required: boolean): FrameId | undefined {
  const value = frame.id;
  if (value === undefined && !required) return undefined;
  if (!isFrameId(value)) throw bad('id', `id must be a non-empty string of at most ${MAX_ID_LENGTH} characters or an integer`);
  return value;
}

function key(frame: Record<string, unknown>, pattern: boolean): string {
  const value = frame.key;
  if (typeof value !== 'string') throw bad('key', pattern ? 'key must be a string: a pattern, MQTT wildcards allowed' : 'key must be a string');
  const problem = pattern ? patternProblem(value) : keyProblem(value);
  if (problem) throw bad('key', problem);
  return value;
}

function group(frame: Record<string, unknown>): string | undefined {
  const value = frame.group;
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw bad('group', 'group must be a string');
  const problem = groupProblem(value);
  if (problem) throw bad('group', problem);
  return value;
}

function headers(frame: Record<string, unknown>): Record<string, string> | undefined {
  const value = frame.headers;
  if (value === undefined) return undefined;
  if (!isRecord(value)) throw bad('headers', 'headers must be an object of strings');
  for (const [name, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw bad(`headers.${name}`, `headers.${name} must be a string`);
  }
  return value as Record<string, string>;
}

/**
 * Checks a parsed text frame's shape. Throws `bad_request` naming the first bad field; the
 * message fields themselves (priority, qos, payload size) are checked by `toMessage`.
 */
export function parseFrame(frame: unknown): ClientFrame {
  if (!isRecord(frame)) throw bad('op', 'a frame is a JSON object with an "op"');
  const op = frame.op;
  if (typeof op !== 'string' || !(OPS as readonly string[]).includes(op)) {
    throw bad('op', `${typeof op === 'string' ? `unknown op "${op}"` : 'op is missing'}; use ${OPS.join(', ')}`);
  }
  switch (op as (typeof OPS)[number]) {
    case 'ping': {
      const frameId = id(frame, false);
      return { op: 'ping', ...(frameId !== undefined ? { id: frameId } : {}) };
    }
    case 'subscribe': {
      const responder = frame.responder;
      if (responder !== undefined && typeof responder !== 'boolean') throw bad('responder', 'responder must be true or false');
      const name = group(frame);
      return { op: 'subscribe', id: id(frame, true)!, key: key(frame, true), ...(responder !== undefined ? { responder } : {}), ...(name !== undefined ? { group: name } : {}) };
    }
    case 'unsubscribe': {
      const name = group(frame);
      return { op: 'unsubscribe', id: id(frame, true)!, key: key(frame, true), ...(name !== undefined ? { group: name } : {}) };
    }
    case 'ack': {
      if (!isFrameId(frame.sub)) throw bad('sub', 'sub must be the id of the subscription the delivery came on');
      if (typeof frame.id !== 'string' || frame.id === '') throw bad('id', 'id must be the id of the delivered message');
      return { op: 'ack', sub: frame.sub, id: frame.id };
    }
    case 'request': {
      positiveInteger(frame, 'timeout');
      return { ...(frame as unknown as RequestFrame), id: id(frame, true)!, key: key(frame, false), ...checkMessageFields(frame) };
    }
    case 'publish': {
      const qos = frame.qos;
      if (qos !== undefined && qos !== 0 && qos !== 1) throw bad('qos', 'qos must be 0 or 1');
      const frameId = id(frame, qos === 1);
      positiveInteger(frame, 'ttl');
      for (const field of ['correlationId', 'replyTo']) optionalString(frame, field);
      return { ...(frame as unknown as PublishFrame), ...(frameId !== undefined ? { id: frameId } : {}), key: key(frame, false), ...checkMessageFields(frame) };
    }
  }
}

/** Fields publish and request share; returns the checked headers so the caller keeps them. */
function checkMessageFields(frame: Record<string, unknown>): { headers?: Record<string, string> } {
  for (const field of ['contentType', 'traceparent']) optionalString(frame, field);
  const encoding = frame.encoding;
  if (encoding !== undefined && encoding !== 'base64') throw bad('encoding', 'encoding must be "base64" or absent');
  if (encoding === 'base64' && typeof frame.payload !== 'string') throw bad('payload', 'a base64 payload must be a string');
  const priority = frame.priority;
  if (priority !== undefined && !(Number.isInteger(priority) && (priority as number) >= 0 && (priority as number) <= 9)) {
    throw bad('priority', 'priority must be an integer from 0 to 9');
  }
  const checked = headers(frame);
  return checked !== undefined ? { headers: checked } : {};
}

/** A frame payload's bytes, by the protocol's payload rules; JSON values get a JSON content type. */
function payloadOf(frame: PublishFrame | RequestFrame, maxPayloadSize: number): { bytes: Buffer; contentType: string | undefined } {
  const { payload, encoding } = frame;
  let bytes: Buffer;
  let contentType = frame.contentType;
  if (payload === undefined) {
    bytes = Buffer.alloc(0);
  } else if (encoding === 'base64') {
    const text = payload as string;
    // Each 4 characters carry 3 bytes: refuse before decoding what would be too large anyway.
    if (Math.floor(text.length / 4) * 3 > maxPayloadSize + 2) throw tooLarge(maxPayloadSize);
    if (text.length % 4 !== 0 || !BASE64.test(text)) throw bad('payload', 'payload is not valid base64 (RFC 4648 §4, with padding)');
    bytes = Buffer.from(text, 'base64');
  } else if (typeof payload === 'string') {
    bytes = Buffer.from(payload, 'utf8');
  } else {
    if (nestsDeeperThan(payload, MAX_PAYLOAD_DEPTH)) throw bad('payload', `a JSON payload may nest at most ${MAX_PAYLOAD_DEPTH} levels of arrays and objects`);
    bytes = Buffer.from(JSON.stringify(payload), 'utf8');
    contentType ??= 'application/json';
  }
  if (bytes.length > maxPayloadSize) throw tooLarge(maxPayloadSize);
  return { bytes, contentType };
}

/** Whether arrays and objects nest more than `limit` levels in `value`; walked without recursion, for the same reason. */
function nestsDeeperThan(value: unknown, limit: number): boolean {
  const pending: { value: object; depth: number }[] = [];
  if (value !== null && typeof value === 'object') pending.push({ value, depth: 1 });
  for (let next = pending.pop(); next !== undefined; next = pending.pop()) {
    if (next.depth > limit) return true;
    for (const child of Object.values(next.value)) {
      if (child !== null && typeof child === 'object') pending.push({ value: child as object, depth: next.depth + 1 });
    }
  }
  return false;
}

function tooLarge(limit: number): GatewayError {
  return new GatewayError('too_large', `payload exceeds the limit of ${limit} bytes (limits.maxPayloadSize)`, { field: 'payload' });
}

/** Header names in lower case, as every protocol carries them (route matching compares them so). */
function lowerCased(headers: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) out[name.toLowerCase()] = value;
  return out;
}

/** The Message a publish or request frame stands for. */
export function toMessage(frame: PublishFrame | RequestFrame, source: MessageSource, maxPayloadSize: number): Message {
  const { bytes, contentType } = payloadOf(frame, maxPayloadSize);
  const publish = frame.op === 'publish' ? frame : undefined;
  return createMessage({
    key: frame.key,
    payload: bytes,
    source,
    // A request waits for its reply, which is an acknowledgement: at least once, like HTTP.
    qos: publish ? publish.qos ?? 0 : 1,
    ...(frame.headers !== undefined ? { headers: lowerCased(frame.headers) } : {}),
    ...(frame.priority !== undefined ? { priority: frame.priority } : {}),
    ...(contentType !== undefined ? { contentType } : {}),
    ...(frame.traceparent !== undefined ? { traceparent: frame.traceparent } : {}),
    ...(publish?.replyTo !== undefined ? { replyTo: publish.replyTo } : {}),
    ...(publish?.correlationId !== undefined ? { correlationId: publish.correlationId } : {}),
    ...(publish?.ttl !== undefined ? { expiresAt: Date.now() + publish.ttl } : {}),
  });
}

// ---------------------------------------------------------------------------------------------
// Outbound

/** `"payload":…` (and `"encoding":"base64"`) for a payload, by the protocol's payload rules. */
export function payloadJson(payload: Buffer, contentType: string | undefined): string {
  if (!isUtf8(payload)) return `"payload":"${payload.toString('base64')}","encoding":"base64"`;
  const text = payload.toString('utf8');
  if (isJsonContentType(contentType)) {
    try {
      const value = JSON.parse(text) as JsonValue;
      // Valid JSON other than a string goes out as it came: its bytes, spliced in unchanged.
      if (typeof value !== 'string') return `"payload":${text}`;
    } catch {
      // not JSON after all: sent as text
    }
  }
  return `"payload":${JSON.stringify(text)}`;
}

/** The part of a `message` frame after `"sub"`: the same for every subscriber of a message. */
function messageBody(message: Message): string {
  const fields: Record<string, unknown> = {
    id: message.id,
    key: message.key,
    headers: message.headers,
    priority: message.priority,
    qos: message.qos,
    timestamp: message.timestamp,
    traceparent: message.traceparent,
  };
  if (message.contentType !== undefined) fields.contentType = message.contentType;
  if (message.replyTo !== undefined) fields.replyTo = message.replyTo;
  if (message.correlationId !== undefined) fields.correlationId = message.correlationId;
  const json = JSON.stringify(fields);
  return `,${json.slice(1, -1)},${payloadJson(message.payload, message.contentType)}}`;
}

/**
 * A `message` frame as bytes: `wire` is the whole WebSocket frame (RFC 6455 §5.2: final, text,
 * unmasked, as a server sends), header and JSON in one buffer, for a socket written to directly;
 * `json` is the same JSON without the header, for ws's `send`.
 */
export interface MessageFrame {
  readonly wire: Buffer;
  readonly json: Buffer;
}

interface EncodedMessage {
  body: string;
  /** the frame of the first `sub` asked for: a fan-out's subscribers usually all number their subscriptions alike */
  sub: FrameId;
  frame: MessageFrame;
  /** frames of other subscription ids: subscribers that chose the same id share one */
  others: Map<FrameId, MessageFrame> | undefined;
}

/** Enough for the usual case (clients numbering their subscriptions alike) without growing per subscriber. */
const SHARED_FRAMES_PER_MESSAGE = 16;
const encoded = new WeakMap<Message, EncodedMessage>();

/**
 * A fan-out hands the same Message to every subscriber: its JSON is built once, and subscribers
 * with the same `sub` share one frame, which a socket sends without copying.
 */
export function messageFrame(message: Message, sub: FrameId): MessageFrame {
  const entry = encoded.get(message);
  if (entry === undefined) {
    const body = messageBody(message);
    const frame = wireFrame(body, sub);
    encoded.set(message, { body, sub, frame, others: undefined });
    return frame;
  }
  if (entry.sub === sub) return entry.frame;
  let frame = entry.others?.get(sub);
  if (frame === undefined) {
    frame = wireFrame(entry.body, sub);
    const others = entry.others ??= new Map();
    if (others.size < SHARED_FRAMES_PER_MESSAGE) others.set(sub, frame);
  }
  return frame;
}

/** The frame of one subscription id, header first: its length takes 1, 3 or 9 bytes of header (RFC 6455 §5.2). */
function wireFrame(body: string, sub: FrameId): MessageFrame {
  const json = `{"op":"message","sub":${JSON.stringify(sub)}${body}`;
  const length = Buffer.byteLength(json);
  const wire = Buffer.allocUnsafe(frameHeaderSize(length) + length);
  const headerLength = writeFrameHeader(wire, OPCODE.text, length, false);
  wire.write(json, headerLength, 'utf8');
  return { wire, json: wire.subarray(headerLength) };
}

export function replyFrame(frameId: FrameId, messageId: string, reply: TargetReply | undefined): string {
  const fields: Record<string, unknown> = { op: 'reply', id: frameId, messageId };
  if (reply?.contentType !== undefined) fields.contentType = reply.contentType;
  if (reply?.headers !== undefined && Object.keys(reply.headers).length > 0) fields.headers = reply.headers;
  if (reply?.status !== undefined) fields.status = reply.status;
  const json = JSON.stringify(fields);
  return `${json.slice(0, -1)},${payloadJson(reply?.payload ?? Buffer.alloc(0), reply?.contentType)}}`;
}

export function errorFrame(err: GatewayError, frameId: FrameId | undefined): string {
  return JSON.stringify({
    op: 'error',
    ...(frameId !== undefined ? { id: frameId } : {}),
    code: err.code,
    message: err.message,
    ...(err.details.field !== undefined ? { field: err.details.field } : {}),
    ...(err.details.retryAfterMs !== undefined ? { retryAfterMs: err.details.retryAfterMs } : {}),
  });
}
