import {
  createMessage, DEFAULT_PRIORITY,
  type ErrorCode, type Message, type MessageSource, type QoS,
} from '../../src/index.js';

/**
 * The MQTT 5 PUBLISH properties the gateway maps, with mqtt-packet's names. aedes 1.2 speaks
 * 3.1.1 only, where a PUBLISH has none; the mapping is here so MQTT 5 needs no new model.
 */
export interface PublishProperties {
  contentType?: string;
  responseTopic?: string;
  correlationData?: Buffer;
  /** seconds [MQTT-5 3.3.2.3.3] */
  messageExpiryInterval?: number;
  /** a name may repeat [MQTT-5 3.3.2.3.7]; mqtt-packet then gives an array */
  userProperties?: Record<string, string | string[]>;
}

/** A PUBLISH as aedes hands it over (from the wire, or a will). */
export interface InboundPublish {
  topic: string;
  payload: Buffer | string;
  qos: QoS;
  retain?: boolean;
  properties?: PublishProperties;
}

/** User properties that set Message fields (DESIGN "The message model") rather than headers. */
const PRIORITY_PROPERTY = 'priority';
const TRACEPARENT_PROPERTY = 'traceparent';
/** Mirrored into headers so a rule's `match.headers.content-type` works for MQTT 5 as for HTTP. */
const CONTENT_TYPE_HEADER = 'content-type';

/**
 * Correlation data is bytes, a Message's correlationId a string: text that is UTF-8 stays as
 * is, anything else (or text that could be mistaken for the encoding) becomes `base64:…`
 * (base64url, since a correlation id is a label: no `+`), so MQTT-to-MQTT request/reply gets
 * the exact bytes back.
 */
const BINARY_PREFIX = 'base64:';
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

export function correlationIdFromData(data: Buffer): string {
  try {
    const text = strictUtf8.decode(data);
    if (!text.startsWith(BINARY_PREFIX)) return text;
  } catch {
    // not UTF-8: carried as base64 below
  }
  return BINARY_PREFIX + data.toString('base64url');
}

export function correlationDataFromId(id: string): Buffer {
  return id.startsWith(BINARY_PREFIX) ? Buffer.from(id.slice(BINARY_PREFIX.length), 'base64url') : Buffer.from(id, 'utf8');
}

/**
 * One PUBLISH as one Message: topic = key, payload untouched, QoS and retain as sent.
 * MQTT 5 properties: user properties become headers (names lower-cased, as header matching
 * in routes is case-insensitive; repeats joined with ", " as HTTP does), except `priority` and
 * `traceparent`, which set those fields; content type, response topic, correlation data and
 * message expiry map to their fields. Throws `bad_request` (e.g. a bad `priority`).
 */
export function messageFromPublish(packet: InboundPublish, source: MessageSource, now = Date.now()): Message {
  const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload;
  const properties = packet.properties;
  // 3.1.1 (every PUBLISH with aedes 1.2): nothing to map, and this is the hot path.
  if (properties === undefined) return createMessage({ key: packet.topic, payload, qos: packet.qos, source, timestamp: now, retain: packet.retain === true });
  const headers: Record<string, string> = {};
  let priority: number | undefined;
  let traceparent: string | undefined;
  for (const [name, value] of Object.entries(properties.userProperties ?? {})) {
    const text = Array.isArray(value) ? value.join(', ') : value;
    const lower = name.toLowerCase();
    if (lower === PRIORITY_PROPERTY) priority = text.trim() === '' ? NaN : Number(text);
    else if (lower === TRACEPARENT_PROPERTY) traceparent = text;
    else headers[lower] = text;
  }
  if (properties.contentType !== undefined) headers[CONTENT_TYPE_HEADER] = properties.contentType;
  return createMessage({
    key: packet.topic,
    payload,
    headers,
    qos: packet.qos,
    source,
    timestamp: now,
    retain: packet.retain === true,
    ...(priority !== undefined ? { priority } : {}),
    ...(traceparent !== undefined ? { traceparent } : {}),
    ...(properties.contentType !== undefined ? { contentType: properties.contentType } : {}),
    ...(properties.responseTopic !== undefined ? { replyTo: properties.responseTopic } : {}),
    ...(properties.correlationData !== undefined ? { correlationId: correlationIdFromData(properties.correlationData) } : {}),
    ...(properties.messageExpiryInterval !== undefined ? { expiresAt: now + properties.messageExpiryInterval * 1000 } : {}),
  });
}

/**
 * The MQTT 5 properties a Message is delivered with: the reverse of messageFromPublish. The
 * expiry interval is what is left of it [MQTT-5 3.3.2-6], rounded up. aedes 1.2 writes
 * 3.1.1 packets and leaves them out.
 */
export function publishProperties(message: Message, now = Date.now()): PublishProperties {
  const userProperties: Record<string, string> = {};
  for (const [name, value] of Object.entries(message.headers)) {
    if (name !== CONTENT_TYPE_HEADER || message.contentType === undefined) userProperties[name] = value;
  }
  if (message.priority !== DEFAULT_PRIORITY) userProperties[PRIORITY_PROPERTY] = String(message.priority);
  userProperties[TRACEPARENT_PROPERTY] = message.traceparent;
  const properties: PublishProperties = { userProperties };
  if (message.contentType !== undefined) properties.contentType = message.contentType;
  if (message.replyTo !== undefined) properties.responseTopic = message.replyTo;
  if (message.correlationId !== undefined) properties.correlationData = correlationDataFromId(message.correlationId);
  if (message.expiresAt !== undefined) properties.messageExpiryInterval = Math.max(1, Math.ceil((message.expiresAt - now) / 1000));
  return properties;
}

/**
 * What a 3.1.1 client gets when the router refuses its PUBLISH, since 3.1.1 has no reason codes
 * and [MQTT-3.3.5-2] leaves two choices: acknowledge as usual, or close the connection.
 * - `drop`: acknowledge and discard (retrying cannot help: no route, not allowed, upstream failed);
 * - `hold`: keep the acknowledgement back and retry, which paces the client (rate limited,
 *   overloaded), QoS 1 and 2 only: a QoS 0 sender expects no acknowledgement, so its message is dropped;
 * - `close`: close the connection (the packet itself is wrong: bad_request, too_large), as
 *   MQTT 5 does with DISCONNECT 0x81/0x95.
 * MQTT 5 would answer with the PUBACK reason code of ERRORS[code].mqtt instead.
 */
export type Refusal = 'drop' | 'hold' | 'close';

export function refusalFor(code: ErrorCode, qos: QoS): Refusal {
  switch (code) {
    case 'bad_request':
    case 'too_large':
      return 'close';
    case 'rate_limited':
    case 'overloaded':
      return qos > 0 ? 'hold' : 'drop';
    default:
      return 'drop';
  }
}
