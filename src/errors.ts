/**
 * The one error vocabulary (DESIGN.md "One error vocabulary"). Every rejection in every adapter
 * is a GatewayError with one of these codes; adapters translate it with this table only.
 */
export type ErrorCode =
  | 'bad_request'
  | 'too_large'
  | 'no_route'
  | 'unauthenticated'
  | 'forbidden'
  | 'rate_limited'
  | 'overloaded'
  | 'upstream_unavailable'
  | 'upstream_timeout'
  | 'not_found'
  | 'method_not_allowed'
  | 'internal';

export interface ErrorSpec {
  title: string;
  http: number;
  /** gRPC status code number (grpc.status) */
  grpc: number;
  /** MQTT 5 PUBACK reason code, when the condition has one */
  mqtt?: number;
}

export const ERRORS: Readonly<Record<ErrorCode, ErrorSpec>> = Object.freeze({
  bad_request: { title: 'Malformed input', http: 400, grpc: 3, mqtt: 0x81 },
  too_large: { title: 'Payload too large', http: 413, grpc: 8, mqtt: 0x95 },
  no_route: { title: 'No route', http: 404, grpc: 5, mqtt: 0x10 },
  unauthenticated: { title: 'Not authenticated', http: 401, grpc: 16, mqtt: 0x87 },
  forbidden: { title: 'Not allowed', http: 403, grpc: 7, mqtt: 0x87 },
  rate_limited: { title: 'Rate limited', http: 429, grpc: 8, mqtt: 0x96 },
  overloaded: { title: 'Overloaded', http: 503, grpc: 14, mqtt: 0x97 },
  upstream_unavailable: { title: 'Upstream unavailable', http: 502, grpc: 14 },
  upstream_timeout: { title: 'Upstream timed out', http: 504, grpc: 4 },
  // HTTP only: a path or method the API does not have (gRPC answers unknown methods UNIMPLEMENTED itself).
  not_found: { title: 'No such endpoint', http: 404, grpc: 12 },
  method_not_allowed: { title: 'Method not allowed', http: 405, grpc: 12 },
  internal: { title: 'Internal error', http: 500, grpc: 13, mqtt: 0x80 },
});

export interface GatewayErrorDetails {
  /** the input field that was wrong, for bad_request */
  field?: string;
  /** when the sender may retry, for rate_limited and overloaded */
  retryAfterMs?: number;
  /** whether trying the same call again may succeed (connect errors, timeouts, 5xx) */
  retryable?: boolean;
  /** the upstream's HTTP status or gRPC code, for upstream_* */
  upstreamStatus?: number;
  /** set when the gateway itself gave up on the message because it is stopping */
  shutdown?: boolean;
  /** set when a circuit breaker refused the call without trying it */
  breakerOpen?: boolean;
  /** set when the message was evicted from a full queue by one of higher priority */
  shed?: boolean;
  /** set when the message's expiry passed while it waited */
  expired?: boolean;
  /** calls made to the target before it gave up */
  attempts?: number;
  /** set when the queue store could not write the message (a full disk, an I/O error): nothing was accepted */
  storage?: boolean;
  /** set when the dead-letter store is at deadletter.maxBytes and refuses new records */
  deadLetterFull?: boolean;
}

export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly details: GatewayErrorDetails;

  constructor(code: ErrorCode, message: string, details: GatewayErrorDetails = {}) {
    super(message);
    this.name = 'GatewayError';
    this.code = code;
    this.details = details;
  }

  get spec(): ErrorSpec {
    return ERRORS[this.code];
  }
}

export function isGatewayError(err: unknown): err is GatewayError {
  return err instanceof GatewayError;
}

/**
 * A start or a reload that cannot go on because of the configuration: its message is one line
 * that names the key to change (`targets.billing.proto: cannot load …`).
 */
export class SetupError extends Error {
  constructor(readonly path: string, message: string) {
    super(`${path}: ${message}`);
    this.name = 'SetupError';
  }
}

export type ListenerName = 'http' | 'mqtt' | 'grpc' | 'admin';

/** A listener that could not bind, said in terms of the config key to change. */
export class ListenerError extends SetupError {
  constructor(listener: ListenerName, address: string, cause: NodeJS.ErrnoException) {
    const why = cause.code === 'EADDRINUSE' ? 'is already in use'
      : cause.code === 'EACCES' ? 'needs privileges this process lacks'
      : cause.code === 'EADDRNOTAVAIL' ? 'is not an address of this machine'
      : `cannot be bound (${cause.code ?? cause.message})`;
    super(`listeners.${listener}`, `${address} ${why}; change listeners.${listener}.host/port in the config file`);
    this.name = 'ListenerError';
  }
}

/** How a sender is refused while the gateway drains: `overloaded`, to retry against another node or later. */
export function shuttingDown(): GatewayError {
  return new GatewayError('overloaded', SHUTTING_DOWN, { retryAfterMs: 1000 });
}

/** The words every protocol uses to say the gateway is draining (a WebSocket close reason too). */
export const SHUTTING_DOWN = 'the gateway is shutting down';

/** Anything thrown that is not a GatewayError is a bug or an unexpected fault: report it as internal. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  return new GatewayError('internal', err instanceof Error ? err.message : String(err));
}
