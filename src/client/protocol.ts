/**
 * The /ws JSON frame protocol (docs/websocket.md, DESIGN.md "Protocol surfaces"), shared by the
 * gateway and the client library. Imports nothing, so it runs in browsers as well as in Node.
 *
 * Payloads: a string is UTF-8 text; a string with `"encoding":"base64"` is bytes; any other JSON
 * value (object, array, number, boolean, null) is JSON, and its bytes are its JSON text. The
 * gateway sends a payload as a JSON value when the message's content type is JSON and its bytes
 * are a JSON document other than a string; as text when they are UTF-8; else as base64.
 */

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** A frame's handle, chosen by the client and echoed in the answer: a string or an integer. */
export type FrameId = string | number;

export interface PayloadFields {
  payload?: JsonValue;
  encoding?: 'base64';
  contentType?: string;
}

export interface PublishFrame extends PayloadFields {
  op: 'publish';
  /** required for qos 1: the `ack` carries it */
  id?: FrameId;
  key: string;
  headers?: Record<string, string>;
  priority?: number;
  qos?: 0 | 1;
  traceparent?: string;
  /** answers a request: publish to its `replyTo` with its `correlationId` */
  correlationId?: string;
  replyTo?: string;
  /** ms until the message expires */
  ttl?: number;
}

export interface SubscribeFrame {
  op: 'subscribe';
  /** `message` frames of this subscription carry it as `sub` */
  id: FrameId;
  /** a pattern: MQTT wildcards `+` and `#` */
  key: string;
  /** whether requests may be handed to this subscription (default true) */
  responder?: boolean;
  /**
   * Join the group of this name on `key` (competing consumers): each message goes to one member.
   * Deliveries of qos 1 must be acknowledged with a `DeliveryAckFrame`.
   */
  group?: string;
}

export interface UnsubscribeFrame {
  op: 'unsubscribe';
  id: FrameId;
  key: string;
  /** leave this group's subscription on `key` rather than the plain one */
  group?: string;
}

/** Acknowledges a qos 1 delivery of a group subscription; unacknowledged, it goes to another member. */
export interface DeliveryAckFrame {
  op: 'ack';
  /** the `sub` of the delivery */
  sub: FrameId;
  /** the `id` (message id) of the delivery */
  id: string;
}

export interface RequestFrame extends PayloadFields {
  op: 'request';
  id: FrameId;
  key: string;
  headers?: Record<string, string>;
  priority?: number;
  traceparent?: string;
  /** ms to wait for the reply; a rule's timeout and `requests.timeout` may shorten it */
  timeout?: number;
}

export interface PingFrame {
  op: 'ping';
  id?: FrameId;
}

export type ClientFrame = PublishFrame | SubscribeFrame | UnsubscribeFrame | RequestFrame | PingFrame | DeliveryAckFrame;

export interface AckFrame {
  op: 'ack';
  id: FrameId;
  /** the message id the gateway gave a publish */
  messageId?: string;
  /** the publish had expired (ttl) before it could be routed: dropped and counted */
  expired?: boolean;
}

export interface MessageFrame extends PayloadFields {
  op: 'message';
  /** the id of the `subscribe` this delivery is for */
  sub: FrameId;
  /** the message id */
  id: string;
  key: string;
  headers: Record<string, string>;
  priority: number;
  qos: 0 | 1 | 2;
  /** ms since epoch at ingress */
  timestamp: number;
  traceparent: string;
  /** set on requests: answer with a `publish` to this key carrying `correlationId` */
  replyTo?: string;
  correlationId?: string;
}

export interface ReplyFrame extends PayloadFields {
  op: 'reply';
  id: FrameId;
  messageId: string;
  headers?: Record<string, string>;
  /** the downstream's HTTP status, when the reply came from an HTTP target */
  status?: number;
}

export interface ErrorFrame {
  op: 'error';
  /** absent when the frame in error had no usable id */
  id?: FrameId;
  /** one of DESIGN.md's error codes */
  code: string;
  message: string;
  /** the frame field that was wrong, for bad_request */
  field?: string;
  retryAfterMs?: number;
}

export interface PongFrame {
  op: 'pong';
  id?: FrameId;
}

export type ServerFrame = AckFrame | MessageFrame | ReplyFrame | ErrorFrame | PongFrame;

/** Offered first by clients that also carry a token as a subprotocol; the gateway selects it. */
export const SUBPROTOCOL = 'junction.v1';
/** `junction.token.<base64url of the token>`: browsers cannot set headers on a WebSocket. */
export const TOKEN_SUBPROTOCOL_PREFIX = 'junction.token.';
/** RFC 6750 §2.3's name for a bearer token in the query string */
export const TOKEN_QUERY_PARAMETER = 'access_token';

/** Close codes the gateway uses beyond RFC 6455's. */
export const CLOSE_CODES = {
  /** RFC 6455: the server is going away (shutting down) */
  goingAway: 1001,
  /** RFC 6455: a binary frame; the protocol is JSON text */
  unsupportedData: 1003,
  /** RFC 6455: a text frame that is not JSON */
  invalidPayload: 1007,
  /** RFC 6455: a frame larger than websocket.maxFrameSize */
  tooBig: 1009,
  /** RFC 6455 "try again later": a slow consumer */
  tryAgainLater: 1013,
  /** the credential the socket opened with expired (a JWT's exp): reconnect with a fresh one (DESIGN: close 4401) */
  unauthenticated: 4401,
  /** no subscription and no frame for websocket.idleTimeout: reconnect when there is something to do */
  idle: 4408,
} as const;

export function isJsonContentType(contentType: string | undefined): boolean {
  if (contentType === undefined) return false;
  const type = contentType.split(';', 1)[0]!.trim().toLowerCase();
  return type === 'application/json' || (type.startsWith('application/') && type.endsWith('+json'));
}
