import { Type, type StaticDecode, type TSchema } from '@sinclair/typebox';
import { DURATION_PATTERN, SIZE_PATTERN, formatDuration, formatSize, parseDuration, parseSize } from './units.js';
import { MAX_PRIORITY, MIN_PRIORITY } from '../message.js';

/**
 * The one schema of gateway.yaml. It gives the TypeScript types (StaticDecode), the JSON Schema
 * file shipped in schema/ for editors, and the validation behind `junction validate`.
 * Durations and sizes are strings in YAML and numbers (ms, bytes) once decoded.
 */

const Duration = (description: string, defaultText?: string) =>
  Type.Transform(Type.String({ pattern: DURATION_PATTERN, description: `${description} (a duration such as 250ms, 2s, 1m)`, ...(defaultText ? { default: defaultText } : {}) }))
    .Decode((text) => parseDuration(text))
    .Encode((ms) => formatDuration(ms));

const Size = (description: string, defaultText?: string) =>
  Type.Transform(Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: SIZE_PATTERN })], { description: `${description} (bytes, or a size such as 256kb, 1mb)`, ...(defaultText ? { default: defaultText } : {}) }))
    .Decode((value) => parseSize(value))
    .Encode((bytes) => formatSize(bytes));

const strict = { additionalProperties: false } as const;

export const ListenerSchema = Type.Object({
  host: Type.String({ minLength: 1, description: 'address to bind, e.g. 0.0.0.0 or 127.0.0.1' }),
  port: Type.Integer({ minimum: 0, maximum: 65535, description: 'TCP port; 0 picks a free one' }),
}, strict);

export const ListenersSchema = Type.Object({
  http: Type.Optional(ListenerSchema),
  mqtt: Type.Optional(ListenerSchema),
  grpc: Type.Optional(ListenerSchema),
  admin: Type.Optional(ListenerSchema),
}, { ...strict, description: 'Listeners that are absent are not started.' });

/** A target without `breaker:` uses the entry named `default`, else these defaults. */
export const BreakerSchema = Type.Object({
  timeout: Type.Optional(Duration('a call slower than this fails; caps the target timeout')),
  errorThresholdPercentage: Type.Optional(Type.Number({ minimum: 0, maximum: 100, default: 50 })),
  resetTimeout: Type.Optional(Duration('how long the breaker stays open before probing', '10s')),
  volumeThreshold: Type.Optional(Type.Integer({ minimum: 0, default: 10, description: 'calls in the window before the breaker may open' })),
  rollingCountTimeout: Type.Optional(Duration('length of the statistics window', '10s')),
  slowCallThreshold: Type.Optional(Duration('a successful call slower than this counts as a failure')),
  halfOpenProbes: Type.Optional(Type.Integer({ minimum: 1, default: 1, description: 'trial calls let through when half-open' })),
}, strict);

export const RateLimitSchema = Type.Object({
  rate: Type.Integer({ minimum: 1, description: 'tokens added per `per`' }),
  per: Duration('refill period'),
  burst: Type.Optional(Type.Integer({ minimum: 1, description: 'bucket size; defaults to rate' })),
  scope: Type.Optional(Type.Union([Type.Literal('client'), Type.Literal('route'), Type.Literal('target')], { description: 'whose bucket: per client, per route (default on a route) or per target (default on a target)' })),
}, strict);

const ProtectionFields = {
  timeout: Type.Optional(Duration('per-call timeout', '5s')),
  breaker: Type.Optional(Type.String({ description: 'name of an entry under `breakers`; default: the entry named `default`, if any' })),
  rateLimit: Type.Optional(RateLimitSchema),
  concurrency: Type.Optional(Type.Integer({ minimum: 1, default: 64, description: 'calls in flight at once' })),
  queue: Type.Optional(Type.Object({
    maxSize: Type.Integer({ minimum: 1, default: 10000, description: 'messages waiting for a call slot, ordered by priority' }),
  }, strict)),
  retry: Type.Optional(Type.Object({
    attempts: Type.Integer({ minimum: 1, description: 'total attempts, including the first' }),
    backoff: Duration('first backoff; doubles per attempt, with full jitter'),
    maxBackoff: Type.Optional(Duration('cap on one backoff', '10s')),
  }, strict)),
};

export const HttpTargetSchema = Type.Object({
  type: Type.Literal('http'),
  url: Type.String({ pattern: '^https?://', description: 'URL the message is sent to' }),
  method: Type.Optional(Type.Union([Type.Literal('POST'), Type.Literal('PUT'), Type.Literal('PATCH')], { default: 'POST' })),
  headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'extra request headers, e.g. authorization: "Bearer ${TOKEN}"' })),
  connections: Type.Optional(Type.Integer({ minimum: 1, default: 64, description: 'keep-alive connections in the pool' })),
  ...ProtectionFields,
}, strict);

export const GrpcTargetSchema = Type.Object({
  type: Type.Literal('grpc'),
  address: Type.String({ minLength: 1, description: 'host:port of the gRPC server' }),
  proto: Type.String({ minLength: 1, description: '.proto file, relative to this config file' }),
  method: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*$', description: 'package.Service/Method' }),
  tls: Type.Optional(Type.Boolean({ default: false })),
  ...ProtectionFields,
}, strict);

export const TargetSchemas = {
  http: HttpTargetSchema,
  grpc: GrpcTargetSchema,
} as const satisfies Record<string, TSchema>;

export const TargetSchema = Type.Union([HttpTargetSchema, GrpcTargetSchema]);

/** Built-in targets that need no entry under `targets`. */
export const BUILTIN_TARGETS = ['publish', 'deadletter'] as const;

export const TargetRefSchema = Type.Union([
  Type.String({ minLength: 1, description: 'a name under `targets`, `publish` (subscribers of the key) or `deadletter`' }),
  Type.Object({ publish: Type.String({ minLength: 1, description: 'key to publish to; {1} is the first wildcard level of the match' }) }, strict),
]);

export const RouteSchema = Type.Object({
  name: Type.String({ minLength: 1, pattern: '^[A-Za-z0-9_.-]+$' }),
  match: Type.Object({
    key: Type.String({ minLength: 1, description: 'MQTT topic filter: + one level, # the rest' }),
    protocols: Type.Optional(Type.Array(Type.Union([Type.Literal('mqtt'), Type.Literal('ws'), Type.Literal('http'), Type.Literal('grpc'), Type.Literal('internal')]), { minItems: 1, uniqueItems: true })),
    headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'header values that must be equal (names are case-insensitive)' })),
  }, strict),
  priority: Type.Optional(Type.Integer({ default: 0, description: 'rule precedence: higher first, ties in file order' })),
  set: Type.Optional(Type.Object({
    priority: Type.Optional(Type.Integer({ minimum: MIN_PRIORITY, maximum: MAX_PRIORITY, description: 'message priority from here on' })),
  }, strict)),
  mode: Type.Optional(Type.Union([Type.Literal('deliver'), Type.Literal('request')], { default: 'deliver', description: 'request: the first target\'s reply goes back to the sender' })),
  timeout: Type.Optional(Duration('request mode: how long to wait for the reply')),
  to: Type.Array(TargetRefSchema, { minItems: 1 }),
  fallback: Type.Optional(Type.Array(TargetRefSchema, { minItems: 1, description: 'used when a target rejects: breaker open, queue full, retries spent' })),
  continue: Type.Optional(Type.Boolean({ default: false, description: 'keep matching lower-precedence rules after this one' })),
  rateLimit: Type.Optional(RateLimitSchema),
}, strict);

/** Bounds in both units: whichever is reached first applies. */
const MessagesAndBytes = (what: string, messages: number, bytes: string) => Type.Object({
  messages: Type.Optional(Type.Integer({ minimum: 1, default: messages, description: `${what}: most messages` })),
  bytes: Type.Optional(Size(`${what}: most payload bytes`, bytes)),
}, strict);

export const GrpcSchema = Type.Object({
  maxReceiveMessageSize: Type.Optional(Size('largest gRPC message accepted (payload plus key, headers and framing); larger is RESOURCE_EXHAUSTED. Default: limits.maxPayloadSize + 64kb')),
  keepalive: Type.Optional(Type.Object({
    time: Type.Optional(Duration('the server pings each connection this often, to find dead peers behind NATs and load balancers', '60s')),
    timeout: Type.Optional(Duration('a connection whose ping is not answered within this is closed', '20s')),
  }, strict)),
  maxConcurrentStreams: Type.Optional(Type.Integer({ minimum: 1, default: 1000, description: 'calls in flight at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)' })),
  publishWindow: Type.Optional(MessagesAndBytes('PublishStream, per stream, messages read but not yet acknowledged; past it the gateway stops reading', 1024, '4mb')),
  subscriberBuffer: Type.Optional(MessagesAndBytes('Subscribe, per stream, deliveries waiting for a slow client; past it qos 0 deliveries are dropped, then the stream ends', 1024, '4mb')),
}, { ...strict, description: 'The gRPC listener (listeners.grpc); these apply after a restart.' });

const KeyPatterns = (description: string) => Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description }));

export const AuthSchema = Type.Object({
  anonymous: Type.Optional(Type.Boolean({ default: false, description: 'let clients in without credentials; ACL rules name them "anonymous"' })),
  users: Type.Optional(Type.Array(Type.Object({
    username: Type.String({ minLength: 1 }),
    password: Type.String({ minLength: 1, description: 'a hash, never the password: scrypt:… from `junction hash-password`, or a bcrypt $2b$… hash' }),
    principal: Type.Optional(Type.String({ minLength: 1, description: 'the name ACL rules and messages know this user by; default: the username' })),
  }, strict))),
  acl: Type.Optional(Type.Array(Type.Object({
    principal: Type.String({ minLength: 1, description: 'whom the rule is for: a principal, "*" for every authenticated one, or "anonymous"' }),
    publish: KeyPatterns('keys the principal may publish to: MQTT topic filters, {principal} is replaced by its name'),
    subscribe: KeyPatterns('patterns the principal may subscribe to: a subscription must fall entirely inside one of them; {principal} is replaced by its name'),
  }, strict), { description: 'allow rules: when present, whatever no rule allows is refused (MQTT: SUBACK 0x80, publish acknowledged and dropped). Absent: every client let in may publish and subscribe to every key' })),
}, { ...strict, description: 'Who may connect and what they may publish and subscribe to, on every protocol. A reload applies to new connections, publishes and subscriptions.' });

export const MqttSchema = Type.Object({
  websocket: Type.Optional(Type.Boolean({ default: true, description: 'also serve MQTT over WebSocket at /mqtt on the HTTP listener' })),
  maxConnections: Type.Optional(Type.Integer({ minimum: 1, default: 10000, description: 'open MQTT connections, TCP and WebSocket, counted from accept (before CONNECT); one more is closed at once' })),
  maxPacketSize: Type.Optional(Size('largest MQTT packet a client may send; its fixed header alone gets the connection closed. Default: limits.maxPayloadSize + 64kb')),
  connectTimeout: Type.Optional(Duration('a connection whose CONNECT has not arrived by then is closed', '10s')),
  keepaliveLimit: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535, default: 0, description: 'largest keepalive, in seconds, a client may ask for; 0 = any. A client asking for more, or for none, is refused with CONNACK return code 6' })),
  maxSubscriptions: Type.Optional(Type.Integer({ minimum: 1, default: 1000, description: 'topic filters one client may hold; past it SUBACK answers 0x80' })),
  maxInflightInbound: Type.Optional(Type.Integer({ minimum: 1, default: 1000, description: 'QoS 2 PUBLISHes of one client awaiting its PUBREL; one more closes the connection' })),
  maxOutboundBuffer: Type.Optional(Size('bytes waiting to be written to one client; past it QoS 0 deliveries to that client are dropped and counted', '1mb')),
  drainTimeout: Type.Optional(Duration('a client whose socket stays full this long is disconnected (its QoS 1/2 messages stay queued if its session is persistent)', '30s')),
  maxHold: Type.Optional(Duration('a QoS 1/2 PUBLISH refused as rate_limited or overloaded is retried with its acknowledgement withheld, pacing the client, at most this long; then its connection is closed', '10s')),
}, { ...strict, description: 'The embedded MQTT broker (listeners.mqtt, and /mqtt on listeners.http); these apply after a restart.' });

export const WebSocketSchema = Type.Object({
  enabled: Type.Optional(Type.Boolean({ default: true, description: 'serve the JSON frame protocol at /ws on the HTTP listener (docs/websocket.md)' })),
  maxConnections: Type.Optional(Type.Integer({ minimum: 1, default: 10000, description: 'open /ws sockets on the listener, counted from the upgrade request; past it the handshake is refused with 503' })),
  maxConnectionsPerIp: Type.Optional(Type.Integer({ minimum: 1, default: 1000, description: 'open /ws sockets from one remote address; past it the handshake is refused with 503' })),
  maxSubscriptions: Type.Optional(Type.Integer({ minimum: 1, default: 1000, description: 'patterns one socket may hold; past it `subscribe` is answered with error overloaded' })),
  maxInflight: Type.Optional(Type.Integer({ minimum: 1, default: 64, description: 'frames of one socket being processed at once (publishes awaiting acceptance, requests awaiting replies); past it the gateway stops reading that socket until one completes' })),
  maxFrameSize: Type.Optional(Size('largest frame a client may send; a larger one closes the socket with 1009. Default: limits.maxPayloadSize in base64 (4/3) + 64kb. The WebSocket server behind /ws and /mqtt takes the larger of this and mqtt.maxPacketSize at start')),
  maxOutboundBuffer: Type.Optional(Size('bytes waiting to be sent to one socket; past it QoS 0 deliveries are dropped, lowest priority first, and a socket that cannot take a QoS 1 delivery or a response is closed with 1013', '1mb')),
  drainTimeout: Type.Optional(Duration('a socket with data waiting that accepts none of it for this long is closed with 1013', '30s')),
  pingInterval: Type.Optional(Duration('the server pings sockets it has not heard from this often; one that has not answered the previous ping is terminated. 0s = no pings', '30s')),
  idleTimeout: Type.Optional(Duration('a socket holding no subscription that sends no frame for this long is closed with 4408; 0s = never', '5m')),
  handshakeTimeout: Type.Optional(Duration('an upgrade request whose credentials are not verified by then is refused with 503', '10s')),
  perMessageDeflate: Type.Optional(Type.Boolean({ default: false, description: 'permessage-deflate compression; it costs memory and CPU per socket. Applies after a restart, to /mqtt too' })),
}, { ...strict, description: 'The WebSocket JSON frame protocol at /ws on listeners.http. Limits apply to new sockets and frames at once after a reload unless noted.' });

export const GatewayConfigSchema = Type.Object({
  $schema: Type.Optional(Type.String()),
  listeners: Type.Optional(ListenersSchema),
  log: Type.Optional(Type.Object({
    level: Type.Optional(Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)), { default: 'info', description: 'LOG_LEVEL overrides it' })),
  }, strict)),
  limits: Type.Optional(Type.Object({
    maxPayloadSize: Type.Optional(Size('largest payload accepted on any protocol', '1mb')),
  }, strict)),
  requests: Type.Optional(Type.Object({
    timeout: Type.Optional(Duration('default wait for a reply in request mode', '5s')),
  }, strict)),
  shutdown: Type.Optional(Type.Object({
    drainTimeout: Type.Optional(Duration('how long SIGTERM waits for in-flight work', '10s')),
  }, strict)),
  admin: Type.Optional(Type.Object({
    token: Type.Optional(Type.String({ minLength: 16, description: 'when set, /metrics, /admin/* and /dashboard need it as `Authorization: Bearer TOKEN` (or ?token= for the dashboard page); /healthz and /readyz stay open. Use ${ADMIN_TOKEN}' })),
  }, strict)),
  deadletter: Type.Optional(Type.Object({
    path: Type.Optional(Type.String({ minLength: 1, default: 'data/deadletter.jsonl', description: 'JSONL file, relative to this config file' })),
    maxFileSize: Type.Optional(Size('rotate the file past this size', '64mb')),
  }, strict)),
  grpc: Type.Optional(GrpcSchema),
  mqtt: Type.Optional(MqttSchema),
  auth: Type.Optional(AuthSchema),
  websocket: Type.Optional(WebSocketSchema),
  // strict: without it a name that misses the pattern would skip validation instead of failing it
  breakers: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]+$' }), BreakerSchema, strict)),
  targets: Type.Optional(Type.Record(Type.String({ pattern: '^[A-Za-z0-9_.-]+$' }), TargetSchema, strict)),
  routes: Type.Optional(Type.Array(RouteSchema)),
  defaultRoute: Type.Optional(Type.Union([Type.Literal('publish'), Type.Literal('drop')], { default: 'publish', description: 'what a message that matches no rule gets' })),
}, { ...strict, title: 'Junction gateway configuration' });

export type GatewayConfigFile = StaticDecode<typeof GatewayConfigSchema>;
export type ListenerConfig = StaticDecode<typeof ListenerSchema>;
export type BreakerConfig = StaticDecode<typeof BreakerSchema>;
export type RateLimitConfig = StaticDecode<typeof RateLimitSchema>;
export type HttpTargetConfig = StaticDecode<typeof HttpTargetSchema>;
export type GrpcTargetConfig = StaticDecode<typeof GrpcTargetSchema>;
export type TargetConfig = StaticDecode<typeof TargetSchema>;
export type TargetRefConfig = StaticDecode<typeof TargetRefSchema>;
export type RouteConfig = StaticDecode<typeof RouteSchema>;
export type AuthConfigFile = StaticDecode<typeof AuthSchema>;
