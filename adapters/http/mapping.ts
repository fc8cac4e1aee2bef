import type { IncomingHttpHeaders } from 'node:http';
import { createMessage, GatewayError, type Message, type MessageInit, type MessageSource } from '../../src/index.js';

/**
 * Request headers that are transport or credentials, not message headers. Those mapped onto
 * Message fields (x-priority, traceparent…) are taken out in messageFromRequest.
 */
const NOT_MESSAGE_HEADERS = new Set([
  'host', 'connection', 'content-length', 'transfer-encoding', 'keep-alive', 'upgrade', 'te', 'trailer',
  'expect', 'authorization', 'cookie', 'proxy-authorization', 'proxy-connection', 'accept-encoding',
]);

/** What the rest of an API path names: a message's key, or a subscription's pattern. */
export type PathNames = 'key' | 'pattern';

/** The answer to a path whose key or pattern is not valid percent-encoding, whoever finds it out. */
export function badPercentEncoding(names: PathNames): GatewayError {
  return new GatewayError('bad_request', `the ${names} in the path is not valid percent-encoding`, { field: names });
}

/** The key (or pattern) is the rest of the path after the prefix, percent-decoded, query removed. */
export function keyFromUrl(url: string, prefix: string, names: PathNames): string {
  const path = url.slice(prefix.length);
  const q = path.indexOf('?');
  const raw = q === -1 ? path : path.slice(0, q);
  // decodeURIComponent copies even a key with nothing to decode, at several times the cost of the search.
  if (!raw.includes('%')) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    throw badPercentEncoding(names);
  }
}

/** The first value of a header sent more than once: the mapped headers take one value. */
function first(value: string | string[]): string {
  return typeof value === 'string' ? value : value[0]!;
}

function integerHeader(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n)) {
    throw new GatewayError('bad_request', `${name} must be an integer`, { field: name });
  }
  return n;
}

export function messageFromRequest(key: string, payload: Buffer, headers: IncomingHttpHeaders, source: MessageSource): Message {
  const messageHeaders: Record<string, string> = {};
  let contentType: string | undefined;
  let id: string | undefined;
  let traceparent: string | undefined;
  let replyTo: string | undefined;
  let correlationId: string | undefined;
  let priorityText: string | undefined;
  let qosText: string | undefined;
  let expiresInText: string | undefined;
  // One pass, each header looked up once: a lookup per mapped header besides cost as much as the
  // pass. for…in and fields set one by one: Object.entries and conditional spreads cost an array
  // per header and an object per optional field of every request.
  for (const name in headers) {
    const value = headers[name];
    if (value === undefined) continue;
    switch (name) {
      case 'content-type': contentType = first(value); break;
      case 'x-message-id': id = first(value); continue;
      case 'traceparent': traceparent = first(value); continue;
      case 'x-reply-to': replyTo = first(value); continue;
      case 'x-correlation-id': correlationId = first(value); continue;
      case 'x-priority': priorityText = first(value); continue;
      case 'x-qos': qosText = first(value); continue;
      case 'x-expires-in': expiresInText = first(value); continue;
    }
    if (!NOT_MESSAGE_HEADERS.has(name)) messageHeaders[name] = typeof value === 'string' ? value : value.join(', ');
  }
  const expiresIn = integerHeader('x-expires-in', expiresInText);
  if (expiresIn !== undefined && expiresIn <= 0) {
    throw new GatewayError('bad_request', 'x-expires-in must be a positive number of seconds', { field: 'x-expires-in' });
  }
  const qos = integerHeader('x-qos', qosText);
  // QoS 2 is MQTT's exactly-once handshake; an HTTP 202 can only be at-least-once.
  if (qos !== undefined && qos !== 0 && qos !== 1) throw new GatewayError('bad_request', 'x-qos must be 0 or 1', { field: 'x-qos' });
  const priority = integerHeader('x-priority', priorityText);
  // An HTTP 202 is an acknowledgement, so HTTP publishes are at-least-once unless asked otherwise.
  const init: MessageInit = { key, payload, headers: messageHeaders, qos: qos ?? 1, source };
  if (priority !== undefined) init.priority = priority;
  if (contentType !== undefined) init.contentType = contentType;
  if (id !== undefined) init.id = id;
  if (traceparent !== undefined) init.traceparent = traceparent;
  if (replyTo !== undefined) init.replyTo = replyTo;
  if (correlationId !== undefined) init.correlationId = correlationId;
  if (expiresIn !== undefined) init.expiresAt = Date.now() + expiresIn * 1000;
  return createMessage(init);
}

/** An SSE `data:` line carries the payload as text when it is UTF-8, else as base64. */
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function ssePayload(payload: Buffer): { payload: string; encoding?: 'base64' } {
  try {
    return { payload: strictUtf8.decode(payload) };
  } catch {
    return { payload: payload.toString('base64'), encoding: 'base64' };
  }
}
