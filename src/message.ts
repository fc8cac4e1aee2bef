import { randomFillSync } from 'node:crypto';
import { GatewayError } from './errors.js';
import { keyProblem, labelProblem } from './topic/rules.js';

/** A registered protocol's name (src/registry.ts: mqtt, ws, http, grpc built in), or `internal` for messages the gateway makes. */
export type Protocol = string;

/** MQTT QoS 2 is carried so the embedded broker can honour it; routing treats it like 1. */
export type QoS = 0 | 1 | 2;

export const MIN_PRIORITY = 0;
export const MAX_PRIORITY = 9;
export const DEFAULT_PRIORITY = 4;
/** room for MQTT 5 correlation data carried as base64url text (mqtt mapping) */
const MAX_CORRELATION_ID_LENGTH = 1024;

export interface MessageSource {
  protocol: Protocol;
  clientId?: string;
  remoteAddress?: string;
  principal?: string;
}

export interface Message {
  /** UUIDv7: unique and sortable by creation time. */
  id: string;
  key: string;
  /** Never re-encoded between ingress and egress. */
  payload: Buffer;
  contentType?: string;
  headers: Record<string, string>;
  priority: number;
  qos: QoS;
  source: MessageSource;
  /** ms since epoch at ingress */
  timestamp: number;
  traceparent: string;
  replyTo?: string;
  correlationId?: string;
  /** ms since epoch; past it the message is dropped and counted as expired */
  expiresAt?: number;
  /**
   * MQTT retain: the broker keeps the last such message per key for later subscribers
   * [MQTT-3.3.1-5]; `publish` targets carry the flag to the key they publish to.
   */
  retain?: boolean;
}

export interface MessageInit {
  id?: string;
  key: string;
  payload: Buffer;
  contentType?: string;
  headers?: Record<string, string>;
  priority?: number;
  qos?: number;
  source: MessageSource;
  timestamp?: number;
  traceparent?: string;
  replyTo?: string;
  correlationId?: string;
  expiresAt?: number;
  retain?: boolean;
}

const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');
/**
 * Where ids and traceparents are written, a byte per character, and read out as one flat string:
 * concatenating 30 pieces instead cost as much again, and garbage per message.
 */
const text = Buffer.allocUnsafe(64);

/** Writes `byte` as two hex digits at `at` in `text`. */
function hexAt(at: number, byte: number): void {
  text[at] = HEX_DIGITS[byte >>> 4]!;
  text[at + 1] = HEX_DIGITS[byte & 0x0f]!;
}

const DASH = 0x2d;
let lastIdMs = 0;
let idSequence = 0;

/**
 * A UUIDv7 (RFC 9562): 48 bits of Unix milliseconds, the version, a 12-bit counter that keeps
 * ids made in the same millisecond in order (it starts at a random value below 2048 each
 * millisecond; past 4095 the id borrows the next millisecond), the variant and 62 random bits.
 * Written here rather than taken from the uuid package because it runs for every message: the
 * package refills its random pool every 16 ids and costs about three times as much per id.
 */
export function newMessageId(): string {
  let ms = Date.now();
  if (ms > lastIdMs) {
    lastIdMs = ms;
    idSequence = firstSequence();
  } else {
    ms = lastIdMs;
    if (++idSequence > 0xfff) {
      ms = ++lastIdMs;
      idSequence = firstSequence();
    }
  }
  const high = Math.floor(ms / 0x10000);
  const low = ms % 0x10000;
  const r = takeRandom(8);
  hexAt(0, (high >>> 24) & 0xff);
  hexAt(2, (high >>> 16) & 0xff);
  hexAt(4, (high >>> 8) & 0xff);
  hexAt(6, high & 0xff);
  text[8] = DASH;
  hexAt(9, low >>> 8);
  hexAt(11, low & 0xff);
  text[13] = DASH;
  hexAt(14, 0x70 | (idSequence >>> 8));
  hexAt(16, idSequence & 0xff);
  text[18] = DASH;
  hexAt(19, 0x80 | (randomPool[r]! & 0x3f));
  hexAt(21, randomPool[r + 1]!);
  text[23] = DASH;
  for (let i = 0; i < 6; i++) hexAt(24 + 2 * i, randomPool[r + 2 + i]!);
  return text.toString('latin1', 0, 36);
}

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;

/** A W3C traceparent with all-zero trace or parent ids is invalid and must be replaced. */
export function isValidTraceparent(value: string | undefined): value is string {
  if (value === undefined) return false;
  const m = TRACEPARENT.exec(value);
  if (!m || value.startsWith('ff')) return false;
  return !/^0+$/.test(m[1]!) && !/^0+$/.test(m[2]!);
}

/**
 * Random bytes for message ids and trace ids, drawn a block at a time: randomBytes() calls per
 * message cost about 10 µs, a tenth of an MQTT publish through the gateway.
 */
const randomPool = Buffer.allocUnsafe(4096);
let randomOffset = randomPool.length;

/** Offset of `bytes` fresh random bytes in randomPool. */
function takeRandom(bytes: number): number {
  if (randomOffset + bytes > randomPool.length) {
    randomFillSync(randomPool);
    randomOffset = 0;
  }
  randomOffset += bytes;
  return randomOffset - bytes;
}

/** A millisecond's first counter value: random, below 2048, so at least 2048 more ids fit in it. */
function firstSequence(): number {
  const at = takeRandom(2);
  return randomPool[at]! << 3 | randomPool[at + 1]! >> 5;
}

/** A new trace: 16 random bytes of trace id and 8 of parent id, version 00, sampled. */
export function newTraceparent(): string {
  const at = takeRandom(24);
  text[0] = 0x30;
  text[1] = 0x30;
  text[2] = DASH;
  for (let i = 0; i < 16; i++) hexAt(3 + 2 * i, randomPool[at + i]!);
  text[35] = DASH;
  for (let i = 0; i < 8; i++) hexAt(36 + 2 * i, randomPool[at + 16 + i]!);
  text[52] = DASH;
  text[53] = 0x30;
  text[54] = 0x31;
  return text.toString('latin1', 0, 55);
}

export function parsePriority(value: unknown): number | undefined {
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < MIN_PRIORITY || n > MAX_PRIORITY) return undefined;
  return n;
}

/**
 * The headers of every message that came without any: shared rather than an object per message
 * (most MQTT messages have none), frozen since handlers must not change what they are handed.
 */
const NO_HEADERS: Record<string, string> = Object.freeze({});

/** Builds a Message at ingress, rejecting bad input with `bad_request` naming the field. */
export function createMessage(init: MessageInit): Message {
  const problem = keyProblem(init.key);
  if (problem) throw new GatewayError('bad_request', problem, { field: 'key' });
  let priority = DEFAULT_PRIORITY;
  if (init.priority !== undefined) {
    const p = parsePriority(init.priority);
    if (p === undefined) throw new GatewayError('bad_request', `priority must be an integer from ${MIN_PRIORITY} to ${MAX_PRIORITY}`, { field: 'priority' });
    priority = p;
  }
  const qos = init.qos ?? 0;
  if (qos !== 0 && qos !== 1 && qos !== 2) throw new GatewayError('bad_request', 'qos must be 0, 1 or 2', { field: 'qos' });
  if (init.id !== undefined) {
    const idProblem = labelProblem(init.id);
    if (idProblem) throw new GatewayError('bad_request', `id ${idProblem}`, { field: 'id' });
  }
  if (init.correlationId !== undefined) {
    const correlationProblem = labelProblem(init.correlationId, MAX_CORRELATION_ID_LENGTH);
    if (correlationProblem) throw new GatewayError('bad_request', `correlationId ${correlationProblem}`, { field: 'correlationId' });
  }
  const message: Message = {
    id: init.id ?? newMessageId(),
    key: init.key,
    payload: init.payload,
    headers: init.headers ?? NO_HEADERS,
    priority,
    qos,
    source: init.source,
    timestamp: init.timestamp ?? Date.now(),
    traceparent: isValidTraceparent(init.traceparent) ? init.traceparent : newTraceparent(),
  };
  if (init.contentType !== undefined) message.contentType = init.contentType;
  if (init.replyTo !== undefined) {
    const replyProblem = keyProblem(init.replyTo);
    if (replyProblem) throw new GatewayError('bad_request', `replyTo: ${replyProblem}`, { field: 'replyTo' });
    message.replyTo = init.replyTo;
  }
  if (init.correlationId !== undefined) message.correlationId = init.correlationId;
  if (init.expiresAt !== undefined) message.expiresAt = init.expiresAt;
  if (init.retain) message.retain = true;
  return message;
}

/** `now` defaults to the clock, read only for a message that can expire: most cannot, and a fan-out asks once per subscriber. */
export function isExpired(message: Message, now?: number): boolean {
  return message.expiresAt !== undefined && message.expiresAt <= (now ?? Date.now());
}
