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

export const BreakerSchema = Type.Object({
  timeout: Type.Optional(Duration('a call slower than this fails', '10s')),
  errorThresholdPercentage: Type.Optional(Type.Number({ minimum: 0, maximum: 100, default: 50 })),
  resetTimeout: Type.Optional(Duration('how long the breaker stays open before probing', '30s')),
  volumeThreshold: Type.Optional(Type.Integer({ minimum: 0, default: 0, description: 'calls in the window before the breaker may open' })),
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
  breaker: Type.Optional(Type.String({ description: 'name of an entry under `breakers`' })),
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
  deadletter: Type.Optional(Type.Object({
    path: Type.Optional(Type.String({ minLength: 1, default: 'data/deadletter.jsonl', description: 'JSONL file, relative to this config file' })),
    maxFileSize: Type.Optional(Size('rotate the file past this size', '64mb')),
  }, strict)),
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
