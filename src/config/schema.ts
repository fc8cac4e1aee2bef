import { Type, type StaticDecode, type StaticEncode, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { DURATION_PATTERN, SIZE_PATTERN, formatDuration, formatSize, parseDuration, parseSize } from './units.js';
import { MAX_PRIORITY, MIN_PRIORITY } from '../message.js';

/**
 * The one schema of gateway.yaml. It gives the TypeScript types (StaticDecode), the JSON Schema
 * file shipped in schema/ for editors, the validation behind `junction validate`, and every
 * default: a `default:` here, or, where a default depends on another value, a resolver declared
 * beside the key it fills. Durations and sizes are strings in YAML and numbers (ms, bytes) once
 * decoded.
 */

const Duration = (description: string) =>
  Type.Transform(Type.String({ pattern: DURATION_PATTERN, description: `${description} (a duration such as 250ms, 2s, 1m)` }))
    .Decode((text) => parseDuration(text))
    .Encode((ms) => formatDuration(ms));

const Size = (description: string) =>
  Type.Transform(Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: SIZE_PATTERN })], { description: `${description} (bytes, or a size such as 256kb, 1mb)` }))
    .Decode((value) => parseSize(value))
    .Encode((bytes) => formatSize(bytes));

/**
 * A key the file may leave out, taking `value` then. The JSON Schema marks it optional; the
 * decoded type marks it present, which holds for every config the loader returns, since the
 * loader applies each default before decoding (resolve.ts).
 */
function Default<T extends TSchema>(schema: T, value: StaticEncode<T>): T {
  return withDefault(schema, value);
}

/** A section, list or map the file may leave out: it starts empty, then its keys take their defaults. */
function Empty<T extends TSchema>(schema: T): T {
  return withDefault(schema, schema.type === 'array' ? [] : {});
}

function withDefault<T extends TSchema>(schema: T, value: unknown): T {
  // Spread, not TypeBox's CloneType: the error wording module knows some subschemas by identity.
  return Type.Optional({ ...schema, default: value }) as unknown as T;
}

const strict = { additionalProperties: false } as const;
const NAME_PATTERN = '^[A-Za-z0-9_.-]+$';

/** Entries by name, as under `breakers` and `targets`. */
const Named = <T extends TSchema>(entry: T) =>
  // strict: without it a name that misses the pattern would skip validation instead of failing it
  Type.Record(Type.String({ pattern: NAME_PATTERN }), entry, strict);

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

export const LimitsSchema = Type.Object({
  maxPayloadSize: Default(Size('largest payload accepted on any protocol'), '1mb'),
}, strict);

/** What the protocol sections' resolvers size their limits from. */
type LimitsConfig = StaticDecode<typeof LimitsSchema>;

// `default: {}`: Value.Default fills a map's entries only when the entry schema has a default of
// its own (see TargetSchema); an entry written as `{}` does take every default below.
export const BreakerSchema = Type.Object({
  timeout: Type.Optional(Duration('a call slower than this fails; caps the target timeout')),
  errorThresholdPercentage: Default(Type.Number({ minimum: 0, maximum: 100, description: 'failure share that opens the breaker' }), 50),
  resetTimeout: Default(Duration('how long the breaker stays open before probing'), '10s'),
  // opossum's own default of 0 would open on the very first failure of a quiet target
  volumeThreshold: Default(Type.Integer({ minimum: 0, description: 'calls in the window before the breaker may open' }), 10),
  rollingCountTimeout: Default(Duration('length of the statistics window'), '10s'),
  slowCallThreshold: Type.Optional(Duration('a successful call slower than this counts as a failure')),
  halfOpenProbes: Default(Type.Integer({ minimum: 1, description: 'trial calls let through when half-open' }), 1),
}, { ...strict, default: {} });

/** The breaker a target gets when it names none. */
const DEFAULT_BREAKER = 'default';

/**
 * Every target has a breaker: the entry its `breaker:` names, else the entry named `default`,
 * which, when the file has none, is one with every default above.
 */
export const BreakersSchema = Type.Transform(Named(BreakerSchema))
  .Decode((breakers) => Object.hasOwn(breakers, DEFAULT_BREAKER)
    ? breakers
    : { ...breakers, [DEFAULT_BREAKER]: Value.Decode(BreakerSchema, Value.Default(BreakerSchema, {})) })
  .Encode((breakers) => breakers);

const RateLimitFields = {
  rate: Type.Integer({ minimum: 1, description: 'tokens added per `per`' }),
  per: Duration('refill period'),
  burst: Type.Optional(Type.Integer({ minimum: 1, description: 'bucket size; defaults to rate' })),
};

/** A bucket without `burst` holds one period's worth of tokens. */
const withBurst = <T extends { rate: number; burst?: number }>(limit: T): T & { burst: number } => ({ ...limit, burst: limit.burst ?? limit.rate });

/** A rule's token bucket, checked when a message arrives. */
export const RouteRateLimitSchema = Type.Transform(Type.Object({
  ...RateLimitFields,
  scope: Default(Type.Union([Type.Literal('client'), Type.Literal('route')], { description: 'whose bucket: one per client of the rule, or one for the whole rule' }), 'route'),
}, strict))
  .Decode((limit) => withBurst(limit))
  .Encode((limit) => limit);

/** A target's token bucket: it paces every call to the target, whichever rule sent it. */
export const TargetRateLimitSchema = Type.Transform(Type.Object({
  ...RateLimitFields,
  scope: Type.Optional(Type.Literal('target', { description: 'a target\'s bucket is always its own; per client or per rule is a route\'s rateLimit' })),
}, strict))
  .Decode((limit) => withBurst(limit))
  .Encode((limit) => limit);

const ProtectionFields = {
  timeout: Default(Duration('per-call timeout'), '5s'),
  breaker: Default(Type.String({ description: 'name of an entry under `breakers`; without it the entry named `default`, else a breaker with the defaults' }), DEFAULT_BREAKER),
  rateLimit: Type.Optional(TargetRateLimitSchema),
  concurrency: Default(Type.Integer({ minimum: 1, description: 'calls in flight at once' }), 64),
  queue: Default(Type.Object({
    maxSize: Type.Integer({ minimum: 1, description: 'messages waiting for a call slot, ordered by priority' }),
  }, strict), { maxSize: 10_000 }),
  retry: Type.Optional(Type.Object({
    attempts: Type.Integer({ minimum: 1, description: 'total attempts, including the first' }),
    backoff: Duration('first backoff; doubles per attempt, with full jitter'),
    maxBackoff: Default(Duration('cap on one backoff'), '10s'),
  }, strict)),
};

export const HttpTargetSchema = Type.Object({
  type: Type.Literal('http'),
  url: Type.String({ pattern: '^https?://', description: 'URL the message is sent to' }),
  method: Default(Type.Union([Type.Literal('POST'), Type.Literal('PUT'), Type.Literal('PATCH')]), 'POST'),
  headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'extra request headers, e.g. authorization: "Bearer ${TOKEN}"' })),
  connections: Default(Type.Integer({ minimum: 1, description: 'keep-alive connections in the pool' }), 64),
  ...ProtectionFields,
}, strict);

export const GrpcTargetSchema = Type.Object({
  type: Type.Literal('grpc'),
  address: Type.String({ minLength: 1, description: 'host:port of the gRPC server' }),
  proto: Type.String({ minLength: 1, description: '.proto file, relative to this config file' }),
  method: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*$', description: 'package.Service/Method' }),
  tls: Default(Type.Boolean(), false),
  ...ProtectionFields,
}, strict);

export const TargetSchemas = {
  http: HttpTargetSchema,
  grpc: GrpcTargetSchema,
} as const satisfies Record<string, TSchema>;

// TypeBox's Value.Default fills a map's entries only when the entry schema has a default of its
// own. No target as a whole has one (its `type` decides its keys), so this one gives nothing; a
// function, it is left out of the JSON Schema file, where it would mislead editors.
export const TargetSchema = Type.Union([HttpTargetSchema, GrpcTargetSchema], { default: () => undefined });

/** Built-in targets that need no entry under `targets`. */
export const BUILTIN_TARGETS = ['publish', 'deadletter'] as const;

export const TargetRefSchema = Type.Union([
  Type.String({ minLength: 1, description: 'a name under `targets`, `publish` (subscribers of the key) or `deadletter`' }),
  Type.Object({ publish: Type.String({ minLength: 1, description: 'key to publish to; {1} is the first wildcard level of the match' }) }, strict),
]);

export const RouteSchema = Type.Object({
  name: Type.String({ minLength: 1, pattern: NAME_PATTERN }),
  match: Type.Object({
    key: Type.String({ minLength: 1, description: 'MQTT topic filter: + one level, # the rest' }),
    protocols: Type.Optional(Type.Array(Type.Union([Type.Literal('mqtt'), Type.Literal('ws'), Type.Literal('http'), Type.Literal('grpc'), Type.Literal('internal')]), { minItems: 1, uniqueItems: true })),
    headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'header values that must be equal (names are case-insensitive)' })),
  }, strict),
  priority: Default(Type.Integer({ description: 'rule precedence: higher first, ties in file order' }), 0),
  set: Type.Optional(Type.Object({
    priority: Type.Optional(Type.Integer({ minimum: MIN_PRIORITY, maximum: MAX_PRIORITY, description: 'message priority from here on' })),
  }, strict)),
  mode: Default(Type.Union([Type.Literal('deliver'), Type.Literal('request')], { description: 'request: the first target\'s reply goes back to the sender' }), 'deliver'),
  timeout: Type.Optional(Duration('request mode: how long to wait for the reply')),
  to: Type.Array(TargetRefSchema, { minItems: 1 }),
  fallback: Type.Optional(Type.Array(TargetRefSchema, { minItems: 1, description: 'used when a target rejects: breaker open, queue full, retries spent' })),
  continue: Default(Type.Boolean({ description: 'keep matching lower-precedence rules after this one' }), false),
  rateLimit: Type.Optional(RouteRateLimitSchema),
}, strict);

/** Bounds in both units: whichever is reached first applies. */
const MessagesAndBytes = (what: string, messages: number, bytes: string) => Empty(Type.Object({
  messages: Default(Type.Integer({ minimum: 1, description: `${what}: most messages` }), messages),
  bytes: Default(Size(`${what}: most payload bytes`), bytes),
}, strict));

export const GrpcSchema = Type.Object({
  maxReceiveMessageSize: Type.Optional(Size('largest gRPC message accepted (payload plus key, headers and framing); larger is RESOURCE_EXHAUSTED. Default: limits.maxPayloadSize + 64kb')),
  keepalive: Empty(Type.Object({
    time: Default(Duration('the server pings each connection this often, to find dead peers behind NATs and load balancers'), '60s'),
    timeout: Default(Duration('a connection whose ping is not answered within this is closed'), '20s'),
  }, strict)),
  maxConcurrentStreams: Default(Type.Integer({ minimum: 1, description: 'calls in flight at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)' }), 1000),
  publishWindow: MessagesAndBytes('PublishStream, per stream, messages read but not yet acknowledged; past it the gateway stops reading', 1024, '4mb'),
  subscriberBuffer: MessagesAndBytes('Subscribe, per stream, deliveries waiting for a slow client; past it qos 0 deliveries are dropped, then the stream ends', 1024, '4mb'),
}, { ...strict, description: 'The gRPC listener (listeners.grpc); these apply after a restart.' });

/** room for the key, headers and protobuf framing around a payload of the largest size */
const GRPC_MESSAGE_OVERHEAD = parseSize('64kb');

/** The section with `maxReceiveMessageSize` given its default, which follows limits.maxPayloadSize. */
export function resolveGrpc(grpc: StaticDecode<typeof GrpcSchema>, limits: LimitsConfig) {
  return { ...grpc, maxReceiveMessageSize: grpc.maxReceiveMessageSize ?? limits.maxPayloadSize + GRPC_MESSAGE_OVERHEAD };
}

const KeyPatterns = (description: string) => Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description }));

const AuthUserSchema = Type.Transform(Type.Object({
  username: Type.String({ minLength: 1 }),
  password: Type.String({ minLength: 1, description: 'a hash, never the password: scrypt:… from `junction hash-password`, or a bcrypt $2b$… hash' }),
  principal: Type.Optional(Type.String({ minLength: 1, description: 'the name ACL rules and messages know this user by; default: the username' })),
}, strict))
  .Decode((user) => ({ ...user, principal: user.principal ?? user.username }))
  .Encode((user) => user);

export const AuthSchema = Type.Object({
  // Nothing is open by default (DESIGN "Security"): config/gateway.yaml turns this on for its local demo.
  anonymous: Default(Type.Boolean({ description: 'let clients in without credentials; ACL rules name them "anonymous"' }), false),
  users: Empty(Type.Array(AuthUserSchema)),
  acl: Type.Optional(Type.Array(Type.Object({
    principal: Type.String({ minLength: 1, description: 'whom the rule is for: a principal, "*" for every authenticated one, or "anonymous"' }),
    publish: KeyPatterns('keys the principal may publish to: MQTT topic filters, {principal} is replaced by its name'),
    subscribe: KeyPatterns('patterns the principal may subscribe to: a subscription must fall entirely inside one of them; {principal} is replaced by its name'),
  }, strict), { description: 'allow rules: when present, whatever no rule allows is refused (MQTT: SUBACK 0x80, publish acknowledged and dropped). Absent: every client let in may publish and subscribe to every key' })),
}, { ...strict, description: 'Who may connect and what they may publish and subscribe to, on every protocol. A reload applies to new connections, publishes and subscriptions.' });

export const MqttSchema = Type.Object({
  websocket: Default(Type.Boolean({ description: 'also serve MQTT over WebSocket at /mqtt on the HTTP listener' }), true),
  maxConnections: Default(Type.Integer({ minimum: 1, description: 'open MQTT connections, TCP and WebSocket, counted from accept (before CONNECT); one more is closed at once' }), 10_000),
  maxPacketSize: Type.Optional(Size('largest MQTT packet a client may send; its fixed header alone gets the connection closed. Default: limits.maxPayloadSize + 64kb')),
  connectTimeout: Default(Duration('a connection whose CONNECT has not arrived by then is closed'), '10s'),
  keepaliveLimit: Default(Type.Integer({ minimum: 0, maximum: 65535, description: 'largest keepalive, in seconds, a client may ask for; 0 = any. A client asking for more, or for none, is refused with CONNACK return code 6' }), 0),
  maxSubscriptions: Default(Type.Integer({ minimum: 1, description: 'topic filters one client may hold; past it SUBACK answers 0x80' }), 1000),
  maxInflightInbound: Default(Type.Integer({ minimum: 1, description: 'QoS 2 PUBLISHes of one client awaiting its PUBREL; one more closes the connection' }), 1000),
  maxOutboundBuffer: Default(Size('bytes waiting to be written to one client; past it QoS 0 deliveries to that client are dropped and counted'), '1mb'),
  drainTimeout: Default(Duration('a client whose socket stays full this long is disconnected (its QoS 1/2 messages stay queued if its session is persistent)'), '30s'),
  maxHold: Default(Duration('a QoS 1/2 PUBLISH refused as rate_limited or overloaded is retried with its acknowledgement withheld, pacing the client, at most this long; then its connection is closed'), '10s'),
}, { ...strict, description: 'The embedded MQTT broker (listeners.mqtt, and /mqtt on listeners.http); these apply after a restart.' });

/** room for the fixed header, topic (up to 64 KiB) and packet id around a payload of the largest size */
const MQTT_PACKET_OVERHEAD = parseSize('64kb');

/** The section with `maxPacketSize` given its default, which follows limits.maxPayloadSize. */
export function resolveMqtt(mqtt: StaticDecode<typeof MqttSchema>, limits: LimitsConfig) {
  return { ...mqtt, maxPacketSize: mqtt.maxPacketSize ?? limits.maxPayloadSize + MQTT_PACKET_OVERHEAD };
}

export const WebSocketSchema = Type.Object({
  enabled: Default(Type.Boolean({ description: 'serve the JSON frame protocol at /ws on the HTTP listener (docs/websocket.md)' }), true),
  maxConnections: Default(Type.Integer({ minimum: 1, description: 'open /ws sockets on the listener, counted from the upgrade request; past it the handshake is refused with 503' }), 10_000),
  maxConnectionsPerIp: Default(Type.Integer({ minimum: 1, description: 'open /ws sockets from one remote address; past it the handshake is refused with 503' }), 1000),
  maxSubscriptions: Default(Type.Integer({ minimum: 1, description: 'patterns one socket may hold; past it `subscribe` is answered with error overloaded' }), 1000),
  maxInflight: Default(Type.Integer({ minimum: 1, description: 'frames of one socket being processed at once (publishes awaiting acceptance, requests awaiting replies); past it the gateway stops reading that socket until one completes' }), 64),
  maxFrameSize: Type.Optional(Size('largest frame a client may send; a larger one closes the socket with 1009. Default: limits.maxPayloadSize in base64 (4/3) + 64kb. The WebSocket server behind /ws and /mqtt takes the larger of this and mqtt.maxPacketSize at start')),
  maxOutboundBuffer: Default(Size('bytes waiting to be sent to one socket; past it QoS 0 deliveries are dropped, lowest priority first, and a socket that cannot take a QoS 1 delivery or a response is closed with 1013'), '1mb'),
  drainTimeout: Default(Duration('a socket with data waiting that accepts none of it for this long is closed with 1013'), '30s'),
  pingInterval: Default(Duration('the server pings sockets it has not heard from this often; one that has not answered the previous ping is terminated. 0s = no pings'), '30s'),
  idleTimeout: Default(Duration('a socket holding no subscription that sends no frame for this long is closed with 4408; 0s = never'), '5m'),
  handshakeTimeout: Default(Duration('an upgrade request whose credentials are not verified by then is refused with 503'), '10s'),
  perMessageDeflate: Default(Type.Boolean({ description: 'permessage-deflate compression; it costs memory and CPU per socket. Applies after a restart, to /mqtt too' }), false),
}, { ...strict, description: 'The WebSocket JSON frame protocol at /ws on listeners.http. Limits apply to new sockets and frames at once after a reload unless noted.' });

/** room for the op, key, headers and JSON escaping around a payload of the largest size */
const WEBSOCKET_FRAME_OVERHEAD = parseSize('64kb');

/** The section with `maxFrameSize` given its default, which follows limits.maxPayloadSize. */
export function resolveWebSocket(websocket: StaticDecode<typeof WebSocketSchema>, limits: LimitsConfig) {
  // A binary payload travels as base64, 4/3 of its size: the largest accepted payload must fit.
  return { ...websocket, maxFrameSize: websocket.maxFrameSize ?? Math.ceil(limits.maxPayloadSize / 3) * 4 + WEBSOCKET_FRAME_OVERHEAD };
}

export const GatewayConfigSchema = Type.Transform(Type.Object({
  $schema: Type.Optional(Type.String()),
  listeners: Empty(ListenersSchema),
  log: Empty(Type.Object({
    level: Default(Type.Union([
      Type.Literal('fatal'), Type.Literal('error'), Type.Literal('warn'), Type.Literal('info'),
      Type.Literal('debug'), Type.Literal('trace'), Type.Literal('silent'),
    ], { description: 'LOG_LEVEL overrides it' }), 'info'),
  }, strict)),
  limits: Empty(LimitsSchema),
  requests: Empty(Type.Object({
    timeout: Default(Duration('default wait for a reply in request mode'), '5s'),
  }, strict)),
  shutdown: Empty(Type.Object({
    drainTimeout: Default(Duration('how long SIGTERM waits for in-flight work'), '10s'),
  }, strict)),
  admin: Empty(Type.Object({
    token: Type.Optional(Type.String({ minLength: 16, description: 'when set, /metrics, /admin/* and /dashboard need it as `Authorization: Bearer TOKEN` (or ?token= for the dashboard page); /healthz and /readyz stay open. Use ${ADMIN_TOKEN}' })),
  }, strict)),
  deadletter: Empty(Type.Object({
    path: Default(Type.String({ minLength: 1, description: 'JSONL file, relative to this config file' }), 'data/deadletter.jsonl'),
    maxFileSize: Default(Size('rotate the file past this size'), '64mb'),
  }, strict)),
  grpc: Empty(GrpcSchema),
  mqtt: Empty(MqttSchema),
  auth: Empty(AuthSchema),
  websocket: Empty(WebSocketSchema),
  breakers: Empty(BreakersSchema),
  targets: Empty(Named(TargetSchema)),
  routes: Empty(Type.Array(RouteSchema)),
  defaultRoute: Default(Type.Union([Type.Literal('publish'), Type.Literal('drop')], { description: 'what a message that matches no rule gets' }), 'publish'),
}, { ...strict, title: 'Junction gateway configuration' }))
  // `$schema` only points editors at this schema.
  .Decode(({ $schema: _, ...config }) => ({
    ...config,
    grpc: resolveGrpc(config.grpc, config.limits),
    mqtt: resolveMqtt(config.mqtt, config.limits),
    websocket: resolveWebSocket(config.websocket, config.limits),
  }))
  .Encode((config) => config);

export type ListenerConfig = StaticDecode<typeof ListenerSchema>;
export type BreakerConfig = StaticDecode<typeof BreakerSchema>;
export type RouteRateLimitConfig = StaticDecode<typeof RouteRateLimitSchema>;
export type HttpTargetConfig = StaticDecode<typeof HttpTargetSchema>;
export type GrpcTargetConfig = StaticDecode<typeof GrpcTargetSchema>;
export type TargetConfig = StaticDecode<typeof TargetSchema>;
export type TargetRefConfig = StaticDecode<typeof TargetRefSchema>;
export type RouteConfig = StaticDecode<typeof RouteSchema>;
