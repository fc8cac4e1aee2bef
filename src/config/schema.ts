import { Type, type StaticDecode, type StaticEncode, type TProperties, type TSchema } from '@sinclair/typebox';
import { Value } from '@sinclair/typebox/value';
import { DURATION_PATTERN, SIZE_PATTERN, formatDuration, formatSize, parseDuration, parseSize } from './units.js';
import { MAX_PRIORITY, MIN_PRIORITY } from '../message.js';
import type { SharedSettings } from '../adapter.js';
import type { Registry } from '../registry.js';

/**
 * The one schema of gateway.yaml, composed from the core's sections and what the registry adds
 * (src/registry.ts): each protocol's section and listener, each target type's keys. It gives the
 * TypeScript types (StaticDecode), the JSON Schema file shipped in schema/ for editors, the
 * validation behind `junction validate`, and every default: a `default:` here (or in a
 * registered part), or, where a default depends on another value, a resolver declared beside
 * the key it fills. Durations and sizes are strings in YAML and numbers (ms, bytes) once decoded.
 *
 * Keywords beyond JSON Schema word errors for operators (schema-errors.ts): `expected`, what a
 * valid value looks like; `expectedKey`, the same for the names of a map's entries; and
 * `elsewhere`, where the values a key refuses belong instead; and `retired`, on an object, the
 * keys it no longer has, each with where its setting went.
 */

export const Duration = (description: string) =>
  Type.Transform(Type.String({ pattern: DURATION_PATTERN, expected: 'a duration such as 250ms, 2s, 1m', description: `${description} (a duration such as 250ms, 2s, 1m)` }))
    .Decode((text) => parseDuration(text))
    .Encode((ms) => formatDuration(ms));

export const Size = (description: string) =>
  Type.Transform(Type.Union([Type.Integer({ minimum: 0 }), Type.String({ pattern: SIZE_PATTERN, expected: 'a size such as 256kb, 1mb' })], { expected: 'a size such as 256kb, 1mb, or a number of bytes', description: `${description} (bytes, or a size such as 256kb, 1mb)` }))
    .Decode((value) => parseSize(value))
    .Encode((bytes) => formatSize(bytes));

/**
 * A key the file may leave out, taking `value` then. The JSON Schema marks it optional; the
 * decoded type marks it present, which holds for every config the loader returns, since the
 * loader applies each default before decoding (resolve.ts).
 */
export function Default<T extends TSchema>(schema: T, value: StaticEncode<T>): T {
  return withDefault(schema, value);
}

/** A section, list or map the file may leave out: it starts empty, then its keys take their defaults. */
export function Empty<T extends TSchema>(schema: T): T {
  return withDefault(schema, schema.type === 'array' ? [] : {});
}

function withDefault<T extends TSchema>(schema: T, value: unknown): T {
  // Spread, not TypeBox's CloneType: the error wording module knows some subschemas by identity.
  return Type.Optional({ ...schema, default: value }) as unknown as T;
}

/** Objects refuse keys they do not define: a misspelt key is an error, not a silent no-op. */
export const strict = { additionalProperties: false } as const;
const NAME = { pattern: '^[A-Za-z0-9_.-]+$', expected: 'a name made of letters, digits, _ . and -' };

/** Entries by name, as under `breakers` and `targets`. */
const Named = <T extends TSchema>(entry: T) =>
  // strict: without it a name that misses the pattern would skip validation instead of failing it
  Type.Record(Type.String(NAME), entry, { ...strict, expectedKey: NAME.expected });

export const TlsSchema = Type.Object({
  cert: Type.String({ minLength: 1, description: 'PEM certificate chain of this listener, relative to this config file; read again on change and on reload' }),
  key: Type.String({ minLength: 1, description: 'PEM private key of the certificate, relative to this config file' }),
  ca: Type.Optional(Type.String({ minLength: 1, description: 'PEM CA certificate(s) that sign client certificates (mutual TLS)' })),
  clientCert: Default(Type.Union([Type.Literal('none'), Type.Literal('request'), Type.Literal('require')], {
    description: 'mutual TLS: none; request (a client may present a certificate signed by `ca`, which then names its principal); require (no handshake without one)',
  }), 'none'),
}, { ...strict, description: 'TLS 1.2 or later on this listener (docs/security.md)' });


/**
 * How long each phase of a connection may take, so a client that trickles or sends nothing
 * (slowloris) holds its socket seconds, not minutes. MQTT's CONNECT is mqtt.connectTimeout.
 */
export const ListenerTimeoutsSchema = Type.Object({
  handshake: Default(Duration('TLS: a connection that has not finished its handshake by then is closed (counted as a handshake failure, reason timeout)'), '5s'),
  headers: Default(Duration('HTTP: a request whose line and headers have not all arrived by then is answered 408 and closed; a connection that sends nothing is closed too. At most `request`'), '10s'),
  request: Default(Duration('HTTP: a request whose body has not all arrived by then (from its first byte) is answered 408 and closed'), '30s'),
  keepAlive: Default(Duration('HTTP: a kept-alive connection with no request for this long is closed'), '5s'),
  idle: Default(Duration('gRPC: a connection with no call in progress for this long is closed (GOAWAY; grpc-js clients reconnect when they need to)'), '2m'),
}, { ...strict, description: 'Timeouts of each phase of a connection; they apply after a restart' });

const ListenerFields = {
  host: Type.String({ minLength: 1, description: 'address to bind, e.g. 0.0.0.0 or 127.0.0.1' }),
  port: Type.Integer({ minimum: 0, maximum: 65535, description: 'TCP port; 0 picks a free one' }),
  tls: Type.Optional(TlsSchema),
  timeouts: Empty(ListenerTimeoutsSchema),
};

/** processes one `junction start` may run (`workers`, `--workers`) */
export const MAX_WORKERS = 64;

/** Cluster mode (docs/scale-out.md): absent, the gateway is one process and loads no Redis code. */
export const ClusterSchema = Type.Object({
  redis: Type.String({ pattern: '^rediss?://', expected: 'a Redis URL such as redis://host:6379', description: 'the Redis that joins gateway processes into one gateway; ${REDIS_URL} works as for every value' }),
  nodeId: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', expected: 'up to 64 letters, digits, _ and -', description: 'this node\'s name, unique among the live nodes; default: the host name; with workers, -1, -2, … is appended' })),
  keyPrefix: Default(Type.String({ pattern: '^[^\\s]{1,64}$', expected: 'up to 64 characters without spaces', description: 'prefix of every Redis key and channel the gateway uses: gateways with different prefixes share a Redis without meeting' }), 'junction:'),
}, { ...strict, description: 'Several processes and machines acting as one gateway on one Redis (docs/scale-out.md).' });

/** The admin listener: its own token guards it (admin.token), not client credentials. */
export const AdminListenerSchema = Type.Object(ListenerFields, strict);

/** A listener clients connect to: what it admits, and with which credentials. */
export const ListenerSchema = Type.Object({
  ...ListenerFields,
  credentials: Type.Optional(Type.Array(Type.Union([Type.Literal('anonymous'), Type.Literal('password'), Type.Literal('apiKey'), Type.Literal('jwt'), Type.Literal('certificate')]), {
    minItems: 1, uniqueItems: true,
    description: 'credentials this listener accepts: anonymous, password, apiKey, jwt, certificate. Default: every kind auth: configures (anonymous when auth.anonymous, certificate when tls.clientCert is not none)',
  })),
  maxConnections: Default(Type.Integer({ minimum: 1, description: 'open TCP connections on this listener; one more is closed at accept' }), 50_000),
  maxConnectionsPerIp: Default(Type.Integer({ minimum: 1, description: 'open TCP connections from one remote address; one more is closed at accept' }), 1000),
  connectRate: Default(Type.Object({
    rate: Type.Integer({ minimum: 1, description: 'new connections one remote address may open per `per`' }),
    per: Duration('refill period'),
    burst: Type.Integer({ minimum: 1, description: 'new connections one address may open at once' }),
  }, strict), { rate: 50, per: '1s', burst: 100 }),
}, strict);

export const LimitsSchema = Type.Object({
  maxPayloadSize: Default(Size('largest payload accepted on any protocol'), '1mb'),
  maxInflight: Default(Type.Integer({
    minimum: 1,
    description: 'messages taken in whose dispatch has not settled (subscribers still taking them, a reply awaited); past it an HTTP publish or request is answered 503 overloaded with Retry-After before its body is read',
  }), 10_000),
}, strict);

// `default: {}`: Value.Default fills a map's entries only when the entry schema has a default of
// its own (see TargetSchema); an entry written as `{}` does take every default below.
export const BreakerSchema = Type.Object({
  timeout: Type.Optional(Duration('a call slower than this fails; caps the target timeout')),
  errorThresholdPercentage: Default(Type.Number({ minimum: 0, maximum: 100, description: 'failure share that opens the breaker' }), 50),
  resetTimeout: Default(Duration('how long the breaker stays open before probing'), '10s'),
  // 0 would open the breaker on the very first failure of a quiet target
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
  scope: Default(Type.Union([Type.Literal('client'), Type.Literal('route')], {
    description: 'whose bucket: one per client of the rule, or one for the whole rule',
    elsewhere: 'a rule\'s bucket is per client or one for the rule; to pace the calls to a target, give the target a rateLimit',
  }), 'route'),
}, strict))
  .Decode((limit) => withBurst(limit))
  .Encode((limit) => limit);

/** A target's token bucket: it paces every call to the target, whichever rule sent it. */
export const TargetRateLimitSchema = Type.Transform(Type.Object({
  ...RateLimitFields,
  scope: Type.Optional(Type.Literal('target', {
    description: 'a target\'s bucket is always its own; per client or per rule is a route\'s rateLimit',
    elsewhere: 'a target\'s bucket paces every call to it; to limit each client or a rule, give the route a rateLimit',
  })),
}, strict))
  .Decode((limit) => withBurst(limit))
  .Encode((limit) => limit);

/** The keys every target has, whatever its type: how its calls are protected (docs/protection.md). */
export const ProtectionFields = {
  timeout: Default(Duration('per-call timeout'), '5s'),
  breaker: Default(Type.String({ description: 'name of an entry under `breakers`; without it the entry named `default`, else a breaker with the defaults' }), DEFAULT_BREAKER),
  rateLimit: Type.Optional(TargetRateLimitSchema),
  concurrency: Default(Type.Integer({ minimum: 1, description: 'calls in flight at once' }), 64),
  queue: Empty(Type.Object({
    maxSize: Default(Type.Integer({ minimum: 1, description: 'messages waiting for a call slot, ordered by priority' }), 10_000),
    maxBytes: Default(Size('bytes of the messages waiting for a call slot, as the queue store counts them (payload plus about 100 bytes); bounds the memory and disk a slow target can take'), '64mb'),
  }, strict)),
  retry: Type.Optional(Type.Object({
    attempts: Type.Integer({ minimum: 1, description: 'total attempts, including the first' }),
    backoff: Duration('first backoff; doubles per attempt, with full jitter'),
    maxBackoff: Default(Duration('cap on one backoff'), '10s'),
  }, strict)),
};

/** Built-in targets that need no entry under `targets`. */
export const BUILTIN_TARGETS = ['publish', 'deadletter'] as const;

export const TargetRefSchema = Type.Union([
  Type.String({ minLength: 1, description: 'a name under `targets`, `publish` (subscribers of the key) or `deadletter`' }),
  Type.Object({ publish: Type.String({ minLength: 1, description: 'key to publish to; {1} is the first wildcard level of the match' }) }, strict),
], { expected: 'a target name (an entry under targets, publish or deadletter) or { publish: KEY }' });

/** A rule of `routes:`; `protocol` is what `match.protocols` may name (the registry's protocols). */
const routeSchema = <P extends TSchema>(protocol: P) => Type.Object({
  name: Type.String({ minLength: 1, ...NAME }),
  match: Type.Object({
    key: Type.String({ minLength: 1, description: 'MQTT topic filter: + one level, # the rest' }),
    protocols: Type.Optional(Type.Array(protocol, { minItems: 1, uniqueItems: true })),
    headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'header values that must be equal (names are case-insensitive)' })),
  }, strict),
  priority: Default(Type.Integer({ description: 'rule precedence: higher first, ties in file order' }), 0),
  set: Type.Optional(Type.Object({
    priority: Type.Optional(Type.Integer({ minimum: MIN_PRIORITY, maximum: MAX_PRIORITY, description: 'message priority from here on' })),
  }, strict)),
  mode: Default(Type.Union([Type.Literal('deliver'), Type.Literal('request')], { description: 'request: the first target\'s reply goes back to the sender' }), 'deliver'),
  timeout: Type.Optional(Duration('how long a request this rule answers waits for the reply (mode: request, or a sender waiting for one); the sender may ask for less. Default: requests.timeout')),
  to: Type.Array(TargetRefSchema, { minItems: 1 }),
  fallback: Type.Optional(Type.Array(TargetRefSchema, { minItems: 1, description: 'used when a target rejects: breaker open, queue full, retries spent' })),
  continue: Default(Type.Boolean({ description: 'keep matching lower-precedence rules after this one' }), false),
  rateLimit: Type.Optional(RouteRateLimitSchema),
  expired: Default(Type.Union([Type.Literal('drop'), Type.Literal('deadletter')], {
    description: 'what becomes of a message whose expiry passes while it waits in the queue of one of this rule\'s targets: drop (counted as expired) or deadletter (reason expired)',
  }), 'drop'),
}, strict);

/** A rule as the core reads it, whatever protocol names the registry allows in `match.protocols`. */
export const RouteSchema = routeSchema(Type.String());

/** A rule with its `timeout` given its default, which follows requests.timeout. */
export function resolveRoute(route: StaticDecode<typeof RouteSchema>, requests: { timeout: number }): RouteConfig {
  return { ...route, timeout: route.timeout ?? requests.timeout };
}

const KeyPatterns = (description: string) => Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description }));

const Roles = Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'roles ACL rules may name with `role:`' }));

const AuthUserSchema = Type.Transform(Type.Object({
  username: Type.String({ minLength: 1 }),
  password: Type.String({ minLength: 1, description: 'a hash, never the password: scrypt:… from `junction hash-password`, or a bcrypt $2b$… hash' }),
  principal: Type.Optional(Type.String({ minLength: 1, description: 'the name ACL rules and messages know this user by; default: the username' })),
  roles: Roles,
}, strict))
  .Decode((user) => ({ ...user, principal: user.principal ?? user.username }))
  .Encode((user) => user);

const ApiKeySchema = Type.Object({
  key: Type.String({ minLength: 1, description: 'the key\'s hash, never the key: scrypt:… from `junction api-key`' }),
  principal: Type.String({ minLength: 1, description: 'the name ACL rules and messages know the key\'s holder by' }),
  roles: Roles,
}, strict);

const JwtSchema = Type.Object({
  secret: Type.Optional(Type.String({ minLength: 32, description: 'HS256/384/512 shared secret, at least 32 characters; use ${JWT_SECRET}' })),
  publicKey: Type.Optional(Type.String({ minLength: 1, description: 'PEM file (SPKI public key or certificate) for RS*/PS*/ES*/EdDSA, relative to this config file' })),
  jwks: Type.Optional(Type.String({ pattern: '^https?://', expected: 'an http(s) URL of a JSON Web Key Set', description: 'URL of the issuer\'s JSON Web Key Set; keys are cached and fetched again for an unknown key id' })),
  issuer: Type.Optional(Type.String({ minLength: 1, description: 'the `iss` a token must carry' })),
  audience: Type.Optional(Type.String({ minLength: 1, description: 'the `aud` a token must carry' })),
  algorithms: Type.Optional(Type.Array(Type.String({ pattern: '^(HS|RS|PS|ES)(256|384|512)$|^EdDSA$|^Ed25519$', expected: 'a JWS algorithm such as RS256, ES256, EdDSA' }), { minItems: 1, description: 'accepted algorithms; default: any the key can verify (never none)' })),
  clockTolerance: Default(Duration('leeway on exp and nbf for clock skew'), '30s'),
  jwksCacheMaxAge: Default(Duration('how long a fetched key set is used'), '10m'),
  jwksCooldown: Default(Duration('after a fetch, an unknown key id fetches again only after this'), '30s'),
  principalClaim: Default(Type.String({ minLength: 1, description: 'the claim that names the principal' }), 'sub'),
  rolesClaim: Default(Type.String({ minLength: 1, description: 'the claim holding roles: an array of strings or a space-separated string' }), 'roles'),
}, { ...strict, description: 'JSON Web Tokens (jose): give one of secret, publicKey or jwks' });

const AclRuleSchema = Type.Object({
  principal: Type.Optional(Type.String({ minLength: 1, description: 'whom the rule is for: a principal, "*" for every authenticated one, or "anonymous"; or give role instead' })),
  role: Type.Optional(Type.String({ minLength: 1, description: 'whom the rule is for: every client with this role (users[].roles, apiKeys[].roles, the JWT roles claim)' })),
  effect: Default(Type.Union([Type.Literal('allow'), Type.Literal('deny')], { description: 'what the rule decides when one of its patterns concerns the request; the first such rule in file order wins' }), 'allow'),
  publish: KeyPatterns('keys: MQTT topic filters; {principal} and {claim.NAME} are replaced'),
  subscribe: KeyPatterns('subscriptions: allow covers a filter that falls entirely inside a pattern, deny one that overlaps it'),
  respond: KeyPatterns('answering requests (responder subscriptions) on these filters, as for subscribe'),
}, strict);

export const AuthSchema = Type.Object({
  // Nothing is open by default (DESIGN "Security"): config/gateway.yaml turns this on for its local demo.
  anonymous: Default(Type.Boolean({ description: 'let clients in without credentials; ACL rules name them "anonymous"' }), false),
  users: Empty(Type.Array(AuthUserSchema)),
  apiKeys: Empty(Type.Array(ApiKeySchema, { description: 'API keys, stored hashed; a client presents one as a Bearer token or MQTT password' })),
  jwt: Type.Optional(JwtSchema),
  certificate: Empty(Type.Object({
    principal: Default(Type.Union([Type.Literal('commonName'), Type.Literal('altName')], { description: 'what of a client certificate names the principal: the subject CN, or the first DNS, URI or email subjectAltName' }), 'commonName'),
  }, strict)),
  acl: Type.Optional(Type.Array(AclRuleSchema, {
    description: 'rules in order; the first whose pattern concerns a publish, subscription or responder decides (allow or deny), and what no rule decides is refused. Absent: everything is allowed when auth.anonymous is true (a local demo), nothing when it is false',
  })),
  backoff: Empty(Type.Object({
    after: Default(Type.Integer({ minimum: 1, description: 'failed credential checks in a row from one address before it backs off' }), 5),
    initial: Default(Duration('first back-off; doubles with each further failure'), '1s'),
    max: Default(Duration('longest back-off'), '1m'),
  }, { ...strict, description: 'while an address backs off its credentials are not checked: it is refused as rate_limited' })),
  verification: Empty(Type.Object({
    concurrency: Default(Type.Integer({ minimum: 1, description: 'password and API key hashes checked at once (they run on libuv\'s thread pool of 4)' }), 2),
    maxPending: Default(Type.Integer({ minimum: 1, description: 'checks waiting for a slot; past it a client is refused as overloaded' }), 1000),
    maxPendingPerIp: Default(Type.Integer({ minimum: 1, description: 'checks waiting from one address; past it it is refused as rate_limited' }), 8),
  }, { ...strict, description: 'checks wait in one queue per address, served in turn, so one address cannot delay the others' })),
}, { ...strict, description: 'Who may connect and what they may publish and subscribe to, on every protocol. A reload applies to new connections, publishes and subscriptions.' });

/** What the registry adds to the core's sections. */
interface RegisteredParts {
  /** listeners of protocols that have their own, beside http and admin */
  listeners: TProperties;
  /** each protocol's section, under its key */
  sections: TProperties;
  /** one target entry: a union of the registered types, told apart by `type` */
  target: TSchema;
  /** a name `match.protocols` may hold */
  protocol: TSchema;
  /** the sections' resolvers, run once their own defaults are in */
  resolve(config: Record<string, unknown> & { limits: SharedSettings['limits'] }): Record<string, unknown>;
}

function gatewaySchema<T extends TSchema, P extends TSchema>(parts: Omit<RegisteredParts, 'target' | 'protocol'> & { target: T; protocol: P }) {
  return Type.Transform(Type.Object({
    $schema: Type.Optional(Type.String()),
    listeners: Empty(Type.Object({
      http: Type.Optional(ListenerSchema),
      admin: Type.Optional(AdminListenerSchema),
      ...parts.listeners,
    }, { ...strict, description: 'Listeners that are absent are not started.' })),
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
      maxBytes: Default(Size('bound on the dead-letter file and its rotated predecessors together'), '1gb'),
      whenFull: Default(Type.Union([Type.Literal('refuse'), Type.Literal('dropOldest')], {
        description: 'at maxBytes: refuse new dead letters (a sender still waiting gets overloaded; an accepted message stays in the queue store), or delete the oldest rotated file and count each record dropped',
      }), 'refuse'),
    }, strict)),
    groups: Empty(Type.Object({
      maxQueue: Default(Type.Integer({ minimum: 1, description: 'messages a group holds while no member has room; past it the lowest priority is shed to the dead-letter store' }), 10_000),
      maxInflight: Default(Type.Integer({ minimum: 1, description: 'deliveries one member holds unacknowledged; past it the group offers to other members' }), 64),
      ackTimeout: Default(Duration('a delivery a member has not acknowledged by then goes to another member'), '30s'),
      retention: Default(Duration('a group whose members all left keeps collecting messages this long, then closes and dead-letters what it held'), '5m'),
      maxGroups: Default(Type.Integer({ minimum: 1, description: 'groups at once; past it the group left without members the longest closes early, and only when every group has members is one more refused with overloaded' }), 1000),
      maxQueuedBytes: Default(Size('bytes all groups queue together, as the queue store counts them (payload plus about 100 bytes); past it the group holding the most sheds its lowest priority to the dead-letter store'), '64mb'),
    }, { ...strict, description: 'Competing consumers (docs/groups.md): subscribers that join a named group each get a share of its messages.' })),
    storage: Empty(Type.Object({
      dir: Default(Type.String({ minLength: 1, description: 'directory of the queue store, relative to this config file; one gateway per directory' }), './data'),
      sync: Default(Type.Union([Type.Literal('os'), Type.Literal('fsync'), Type.Literal('none')], {
        description: 'when an acknowledged QoS 1 message is safe: os, once written to the operating system (survives a crash of the process); fsync, once flushed to the disk in a group commit (survives power loss); none, kept in memory only (lost with the process)',
      }), 'os'),
    }, { ...strict, description: 'Where acknowledged QoS 1 messages wait for their targets (docs/durability.md).' })),
    cluster: Type.Optional(ClusterSchema),
    workers: Default(Type.Integer({ minimum: 1, maximum: MAX_WORKERS, description: 'processes on this machine sharing the listeners (node:cluster), each a node of the cluster; above 1 needs cluster.redis. `junction start --workers N` overrides it' }), 1),
    ...parts.sections,
    auth: Empty(AuthSchema),
    breakers: Empty(BreakersSchema),
    // TypeBox's Value.Default fills a map's entries only when the entry schema has a default of
    // its own. No target as a whole has one (its `type` decides its keys), so this one gives
    // nothing; a function, it is left out of the JSON Schema file, where it would mislead editors.
    targets: Empty(Named({ ...parts.target, default: () => undefined })),
    routes: Empty(Type.Array(routeSchema(parts.protocol))),
    defaultRoute: Default(Type.Union([Type.Literal('publish'), Type.Literal('drop')], { description: 'what a message that matches no rule gets' }), 'publish'),
  }, { ...strict, title: 'Junction gateway configuration' }))
    // `$schema` only points editors at this schema.
    .Decode(({ $schema: _, ...config }) => parts.resolve(config) as typeof config)
    .Encode((config) => config);
}

/** A target entry of some registered type: its `type`, the protection keys, and its own keys. */
const AnyTargetSchema = Type.Object({ type: Type.String(), ...ProtectionFields }, { additionalProperties: true });

/**
 * The core's view of the config, whatever is registered: what the types of GatewayConfig come
 * from. A loaded config also holds each protocol's section (its adapter reads it) and each
 * target's own keys (its type reads them).
 */
export const CoreConfigSchema = gatewaySchema({
  listeners: {},
  sections: {},
  target: AnyTargetSchema,
  protocol: Type.String(),
  resolve: (config) => config,
});

const schemas = new WeakMap<Registry, TSchema>();

/** The whole schema of gateway.yaml for what `registry` holds. */
export function gatewayConfigSchema(registry: Registry): TSchema {
  let schema = schemas.get(registry);
  if (!schema) {
    const listeners: TProperties = {};
    const sections: TProperties = {};
    for (const { protocol, section, listener } of registry.protocols) {
      if (listener) listeners[protocol] = Type.Optional(ListenerSchema);
      if (section) sections[section.key] = Empty(section.schema);
    }
    const targets = registry.targetTypes.map(({ type, fields }) => Type.Object({ type: Type.Literal(type), ...fields, ...ProtectionFields }, strict));
    schema = gatewaySchema<TSchema, TSchema>({
      listeners,
      sections,
      target: targets.length === 1 ? targets[0]! : Type.Union(targets),
      protocol: Type.Union(registry.protocolNames.map((name) => Type.Literal(name))),
      resolve: (config) => {
        const resolved: Record<string, unknown> = { ...config };
        for (const { section } of registry.protocols) {
          if (section?.resolve) resolved[section.key] = section.resolve(config[section.key], { limits: config.limits });
        }
        return resolved;
      },
    });
    schemas.set(registry, schema);
  }
  return schema;
}

export type ListenerConfig = StaticDecode<typeof ListenerSchema>;
export type AdminListenerConfig = StaticDecode<typeof AdminListenerSchema>;
export type ClusterSettings = StaticDecode<typeof ClusterSchema>;
export type TlsSettings = StaticDecode<typeof TlsSchema>;
/** The credentials a listener can take (docs/security.md). */
export type CredentialKind = NonNullable<ListenerConfig['credentials']>[number];
export type RouteRateLimitConfig = StaticDecode<typeof RouteRateLimitSchema>;
/** The keys every target has, decoded: type-specific keys come with each TargetType's own config type. */
export type TargetSettings = StaticDecode<typeof AnyTargetSchema>;
export type TargetRefConfig = StaticDecode<typeof TargetRefSchema>;
/** A rule as loaded: its `timeout` given, requests.timeout when the file has none. */
export type RouteConfig = StaticDecode<typeof RouteSchema> & { timeout: number };
export type ListenerTimeouts = StaticDecode<typeof ListenerTimeoutsSchema>;
