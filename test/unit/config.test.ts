import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it, expect } from 'vitest';
import { Value } from '@sinclair/typebox/value';
import { loadConfigFile, loadConfigText } from '../../src/config/load.js';
import { builtins } from '../../src/builtins.js';
import { gatewayConfigSchema } from '../../src/config/schema.js';
import { ConfigError, type ConfigIssue } from '../../src/config/types.js';
import { gatewayJsonSchema, gatewayJsonSchemaText } from '../../src/config/write-json-schema.js';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const FILE = '/etc/junction/gateway.yaml';

const yaml = (...lines: string[]): string => `${lines.join('\n')}\n`;

/** The protocol sections' sizes that follow limits.maxPayloadSize (each adapter types its own section). */
interface Sizes {
  grpc: { maxReceiveMessageSize: number };
  mqtt: { maxPacketSize: number };
  websocket: { maxFrameSize: number };
}

/** `LINE:COL PATH: MESSAGE`, so a failing assertion shows everything at once. */
const brief = (issue: ConfigIssue): string => `${issue.line}:${issue.column} ${issue.path}: ${issue.message}`;

function issuesOf(text: string, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    loadConfigText(text, FILE, env);
  } catch (err) {
    if (err instanceof ConfigError) return err.issues.map(brief);
    throw err;
  }
  throw new Error('expected a ConfigError');
}

function warningsOf(text: string): string[] {
  return loadConfigText(text, FILE, {}).warnings.map(brief);
}

interface SchemaNode {
  default?: unknown;
  properties?: Record<string, SchemaNode>;
  patternProperties?: Record<string, SchemaNode>;
  items?: SchemaNode;
  anyOf?: SchemaNode[];
  const?: unknown;
}

const isRecord = (value: unknown): value is Record<string, unknown> => value !== null && typeof value === 'object' && !Array.isArray(value);

/**
 * Walks the schema beside a resolved config: for each key with a default, the default decoded
 * and what the config holds there. Entries of a map are `*` in the path, list items `[]`, and a
 * target's branch is named by its type.
 */
function collectDefaults(schema: SchemaNode, value: unknown, at: string, found: Map<string, { expected: unknown; actual: unknown }>): void {
  const fallback = schema.default;
  const startsEmpty = isRecord(fallback) ? Object.keys(fallback).length === 0 : Array.isArray(fallback) && fallback.length === 0;
  if (fallback !== undefined && typeof fallback !== 'function' && !startsEmpty) {
    found.set(at, { expected: Value.Decode(schema as Parameters<typeof Value.Decode>[0], fallback), actual: value });
  }
  if (schema.properties && isRecord(value)) {
    for (const [key, property] of Object.entries(schema.properties)) collectDefaults(property, value[key], `${at}.${key}`, found);
  } else if (schema.patternProperties && isRecord(value)) {
    const entry = Object.values(schema.patternProperties)[0]!;
    for (const item of Object.values(value)) collectDefaults(entry, item, `${at}.*`, found);
  } else if (schema.items && Array.isArray(value)) {
    for (const item of value) collectDefaults(schema.items, item, `${at}[]`, found);
  } else if (schema.anyOf && isRecord(value)) {
    const branch = schema.anyOf.find((b) => b.properties?.type?.const === value.type);
    if (branch) collectDefaults(branch, value, `${at}<${String(value.type)}>`, found);
  }
}

/** Every listener's phase timeouts by default: a slowloris is cut within seconds. */
const DEFAULT_TIMEOUTS = { handshake: 5000, headers: 10_000, request: 30_000, keepAlive: 5000, idle: 120_000 };

describe('shipped configs', () => {
  it('accepts the DESIGN.md sample and decodes it', async () => {
    const { config, warnings } = await loadConfigFile(path.join(ROOT, 'config/examples/design-sample.yaml'), {});
    expect(config.listeners.admin).toEqual({ host: '127.0.0.1', port: 9180, timeouts: DEFAULT_TIMEOUTS });
    expect(config.breakers.default).toEqual({ timeout: 2000, errorThresholdPercentage: 50, resetTimeout: 10_000, volumeThreshold: 10, rollingCountTimeout: 10_000, halfOpenProbes: 1 });
    expect(config.targets.ingest).toMatchObject({ type: 'http', timeout: 2000, rateLimit: { rate: 500, per: 1000, burst: 1000 }, retry: { attempts: 3, backoff: 100 } });
    expect(config.targets.billing).toMatchObject({ type: 'grpc', method: 'billing.v1.Billing/Charge' });
    expect(config.routes.map((r) => r.name)).toEqual(['alarms', 'telemetry', 'charge']);
    expect(config.routes[1]!.to).toEqual(['ingest', { publish: 'dashboards/{1}/telemetry' }]);
    expect(config.routes[2]!.match.headers).toEqual({ 'content-type': 'application/json' });
    expect(config.defaultRoute).toBe('publish');
    // Paths resolve against the config file's folder: config/examples/proto links to the
    // project's proto/, so the sample's `proto/examples/billing.proto` resolves as written.
    expect(warnings).toEqual([]);
    expect(config.targets.billing).toMatchObject({ proto: path.join(ROOT, 'config/examples/proto/examples/billing.proto') });
  });

  it('accepts config/gateway.yaml as a self-contained local demo', async () => {
    const { config, warnings } = await loadConfigFile(path.join(ROOT, 'config/gateway.yaml'), {});
    expect(warnings).toEqual([]);
    expect(Object.values(config.listeners).map((l) => l?.host)).toEqual(['127.0.0.1', '127.0.0.1', '127.0.0.1', '127.0.0.1']);
    expect(config.targets).toEqual({});
    expect(config.deadletter.path).toBe(path.join(ROOT, 'data/deadletter.jsonl'));
  });

  it('loads every file in config/examples without a warning', async () => {
    const files = (await readdir(path.join(ROOT, 'config/examples'))).filter((name) => name.endsWith('.yaml'));
    expect(files.length).toBeGreaterThan(1);
    for (const name of files) {
      const { warnings } = await loadConfigFile(path.join(ROOT, 'config/examples', name), {});
      expect({ name, warnings }).toEqual({ name, warnings: [] });
    }
  });
});

describe('YAML problems', () => {
  it('points an unclosed bracket at the line that opens it, not where the parser gives up', () => {
    expect(issuesOf(yaml('routes:', '  - name: a', '    to: [publish', 'defaultRoute: drop'))).toEqual([
      '3:9 routes[0].to: this [ is never closed: end it with ] on the same line',
    ]);
    expect(issuesOf(yaml('listeners:', '  http: { host: 127.0.0.1, port: 0', 'routes: []'))).toEqual([
      '2:9 listeners.http: this { is never closed: end it with } on the same line',
    ]);
  });

  it('points an unclosed quote at the line that opens it', () => {
    expect(issuesOf(yaml('routes:', '  - name: a', '    to: [publish]', '  - name: "unterminated', '    to: [publish]'))).toEqual([
      '4:11 routes[1].name: this "…" string is never closed: add the closing "',
    ]);
  });

  it('says why a route appended below defaultRoute: does not parse, and where it belongs', () => {
    const routes = ['routes:', '  - name: a', '    match: { key: "a/#" }', '    to: [publish]', 'defaultRoute: publish'];
    const indented = issuesOf(yaml(...routes, '  - name: b', '    match: { key: "b/#" }', '    to: [publish]'));
    expect(indented).toEqual([
      '6:3 defaultRoute: this line is indented under "defaultRoute: publish" (line 5), so YAML reads it as more of that value; '
        + 'to add an item to a list such as routes:, put it under that key, lined up with the items already there',
    ]);
    const flush = issuesOf(yaml(...routes, '- name: b', '  to: [publish]'));
    expect(flush).toEqual([
      '6:1 : a list item among the keys of the top level; to add an item to a list such as routes:, indent it under that key, lined up with the items already there',
    ]);
  });

  it('reports only the syntax error, no duplicate keys echoed after it', () => {
    expect(issuesOf(yaml('listeners:', '  http: { host: a, port: 1 }', '  http: { host: b, port: 2', 'routes: []'))).toEqual([
      '3:9 listeners.http: this { is never closed: end it with } on the same line',
    ]);
  });

  it('explains tabs, misaligned keys and several documents in plain words', () => {
    expect(issuesOf('listeners:\n\thttp: {}\n')).toEqual(['2:1 : a tab indents this line; YAML indents with spaces only']);
    expect(issuesOf(yaml('listeners:', '  http:', '    host: 127.0.0.1', '   port: 0'))).toEqual([
      '4:4 : this key starts in column 4, in line with no mapping above it; the keys of one mapping start in the same column',
    ]);
    expect(issuesOf(yaml('log: { level: info }', '---', 'defaultRoute: drop'))).toEqual([
      '2:1 : the file holds more than one YAML document (a --- separator); keep the whole config in one',
    ]);
  });

  it('asks for quotes when ${…} breaks a flow mapping', () => {
    expect(issuesOf(yaml('listeners:', '  http: { host: a, port: ${PORT} }'))).toEqual([
      '2:27 listeners.http: inside { } or [ ], a value that uses ${…} must be quoted: "${PORT}"',
    ]);
  });

  it('keeps the parser\'s words, marked as YAML, for what it does not explain', () => {
    expect(issuesOf(yaml('a: b: c'))).toEqual([expect.stringMatching(/^1:\d+ : not valid YAML: /)]);
  });

  it('reports a duplicate key at the second occurrence, with the other errors', () => {
    expect(issuesOf(yaml('listeners:', '  http: { host: a, port: 1 }', '  http: { host: b, port: 2 }', 'defaultRoute: maybe'))).toEqual([
      '3:3 listeners.http: duplicate key "http"',
      '4:15 defaultRoute: expected one of: publish, drop, got "maybe"',
    ]);
  });

  it('points an unknown key at the key itself and lists what is allowed', () => {
    expect(issuesOf(yaml('listeners:', '  http:', '    host: a', '    port: 1', '    tls12: true'))).toEqual([
      '5:5 listeners.http.tls12: unknown key "tls12"; expected one of: host, port, tls, timeouts, credentials, maxConnections, maxConnectionsPerIp, connectRate',
    ]);
    expect(issuesOf(yaml('listener: {}'))).toEqual([
      '1:1 listener: unknown key "listener"; expected one of: $schema, listeners, log, limits, requests, shutdown, admin, deadletter, groups, storage, cluster, workers, sse, grpc, mqtt, websocket, auth, breakers, targets, routes, defaultRoute',
    ]);
  });

  it('says where a retired key\'s setting went: the connection limits of a protocol are its listener\'s', () => {
    expect(issuesOf(yaml('mqtt:', '  maxConnections: 10', 'websocket: { maxConnections: 10, maxConnectionsPerIp: 2, maxSubscriptions: 5 }'))).toEqual([
      '2:3 mqtt.maxConnections: "maxConnections" is no longer a key here: open connections are limited per listener, before CONNECT: set listeners.mqtt.maxConnections (MQTT over TCP) and listeners.http.maxConnections (the HTTP listener, MQTT over WebSocket included)',
      '3:14 websocket.maxConnections: "maxConnections" is no longer a key here: open connections are limited per listener, at accept: set listeners.http.maxConnections (a WebSocket is one connection of the HTTP listener)',
      '3:34 websocket.maxConnectionsPerIp: "maxConnectionsPerIp" is no longer a key here: open connections are limited per listener, at accept: set listeners.http.maxConnectionsPerIp (a WebSocket is one connection of the HTTP listener)',
    ]);
  });

  it('wants a mapping at the top', () => {
    expect(issuesOf(yaml('- a'))).toEqual(['1:1 : expected a mapping, got a list']);
  });
});

describe('schema errors', () => {
  it('says what a value should look like', () => {
    expect(issuesOf(yaml(
      'listeners:',
      '  http: { host: 0.0.0.0, port: 99999 }',
      'log: { level: loud }',
      'limits: { maxPayloadSize: 12 MB }',
      'requests: { timeout: 5 }',
      'breakers:',
      '  default: { timeout: 2 s }',
      '  bad name: {}',
    ))).toEqual([
      '2:32 listeners.http.port: expected an integer from 0 to 65535, got 99999',
      '3:15 log.level: expected one of: fatal, error, warn, info, debug, trace, silent, got "loud"',
      '4:27 limits.maxPayloadSize: expected a size such as 256kb, 1mb, or a number of bytes, got "12 MB"',
      '5:22 requests.timeout: expected a duration such as 250ms, 2s, 1m, got 5',
      '7:23 breakers.default.timeout: expected a duration such as 250ms, 2s, 1m, got "2 s"',
      '8:3 breakers["bad name"]: invalid name "bad name"; expected a name made of letters, digits, _ . and -',
    ]);
  });

  it('reports a target against the branch its type names', () => {
    expect(issuesOf(yaml(
      'targets:',
      '  ingest:',
      '    type: http',
      '    url: ftp://x',
      '    method: GET',
      '    address: x:1',
      '  billing: { type: grpc }',
      '  kafka: { type: kafka }',
      '  untyped: { url: "http://x" }',
      '  text: hello',
    ))).toEqual([
      '4:10 targets.ingest.url: expected an http:// or https:// URL, got "ftp://x"',
      '5:13 targets.ingest.method: expected one of: POST, PUT, PATCH, got "GET"',
      '6:5 targets.ingest.address: unknown key "address"; expected one of: type, url, method, headers, connections, timeout, breaker, rateLimit, concurrency, queue, retry',
      '7:12 targets.billing: missing required keys "address", "proto", "method"',
      '8:18 targets.kafka.type: expected one of: http, grpc, got "kafka"',
      '9:12 targets.untyped: missing required key "type"; expected one of: http, grpc',
      '10:9 targets.text: expected a mapping whose type is one of: http, grpc, got "hello"',
    ]);
  });

  it('reports routes: target refs, ranges, lists', () => {
    expect(issuesOf(yaml(
      'routes:',
      '  - name: a',
      '    match: { key: "devices/+/alarm", protocols: [mqtt, mqtt, smtp] }',
      '    set: { priority: 12 }',
      '    mode: ask',
      '    to: [publish, 5, { pub: x }]',
      '  - name: b',
      '    match: { key: k }',
      '    to: []',
      '  - match: { key: k }',
    ))).toEqual([
      '3:56 routes[0].match.protocols[1]: duplicate entry "mqtt"',
      '3:62 routes[0].match.protocols[2]: expected one of: http, grpc, mqtt, ws, internal, got "smtp"',
      '4:22 routes[0].set.priority: expected an integer from 0 to 9, got 12',
      '5:11 routes[0].mode: expected one of: deliver, request, got "ask"',
      '6:19 routes[0].to[1]: expected a target name (an entry under targets, publish or deadletter) or { publish: KEY }, got 5',
      '6:22 routes[0].to[2]: missing required key "publish"',
      '6:24 routes[0].to[2].pub: unknown key "pub"; expected one of: publish',
      '9:9 routes[1].to: expected a non-empty list',
      '10:5 routes[2]: missing required keys "name", "to"',
    ]);
  });
});

describe('options that would do nothing', () => {
  it('refuses a bucket scope its place cannot have, saying where it belongs', () => {
    expect(issuesOf(yaml(
      'targets:',
      '  ingest: { type: http, url: "http://x", rateLimit: { rate: 5, per: 1s, scope: client } }',
      'routes:',
      '  - name: r',
      '    match: { key: k }',
      '    rateLimit: { rate: 5, per: 1s, scope: target }',
      '    to: [ingest]',
    ))).toEqual([
      '2:80 targets.ingest.rateLimit.scope: expected "target", got "client"; a target\'s bucket paces every call to it; to limit each client or a rule, give the route a rateLimit',
      '6:43 routes[0].rateLimit.scope: expected one of: client, route, got "target"; a rule\'s bucket is per client or one for the rule; to pace the calls to a target, give the target a rateLimit',
    ]);
  });

  it('accepts the scope each place has', () => {
    const { config } = loadConfigText(yaml(
      'targets: { ingest: { type: http, url: "http://x", rateLimit: { rate: 5, per: 1s, scope: target } } }',
      'routes: [{ name: r, match: { key: k }, rateLimit: { rate: 5, per: 1s, scope: client }, to: [ingest] }]',
    ), FILE, {});
    expect(config.targets.ingest!.rateLimit).toMatchObject({ scope: 'target' });
    expect(config.routes[0]!.rateLimit).toMatchObject({ scope: 'client' });
  });
});

describe('cross-checks', () => {
  it('reports unknown and reserved names', () => {
    expect(issuesOf(yaml(
      'breakers:',
      '  default: {}',
      'targets:',
      '  ingest: { type: http, url: "http://x", breaker: fast }',
      '  publish: { type: http, url: "http://y" }',
      'routes:',
      '  - name: a',
      '    match: { key: k }',
      '    to: [ingest, nope]',
      '    fallback: [deadletter, gone]',
    ))).toEqual([
      '4:51 targets.ingest.breaker: unknown breaker "fast"; expected one of: default',
      '5:3 targets.publish: "publish" is a built-in target and cannot be redefined; choose another name',
      '9:18 routes[0].to[1]: unknown target "nope"; expected one of: ingest, publish, deadletter',
      '10:28 routes[0].fallback[1]: unknown target "gone"; expected one of: ingest, publish, deadletter',
    ]);
  });

  it('checks match keys, publish templates, route names and header names', () => {
    expect(issuesOf(yaml(
      'routes:',
      '  - name: a',
      '    match: { key: "a/#/b" }',
      '    to: [publish]',
      '  - name: a',
      '    match: { key: "devices/+/x", headers: { X-Id: "1", x-id: "2" } }',
      '    to: [{ publish: "out/{2}" }, { publish: "out/+/{1}" }, { publish: "out/{0}" }]',
      '  - name: c',
      '    match: { key: "fixed" }',
      '    to: [{ publish: "out/{1}" }]',
      '  - name: d',
      '    match: { key: "a/b+" }',
      '    to: [publish]',
    ))).toEqual([
      '3:19 routes[0].match.key: # must be a whole level and the last one',
      '5:11 routes[1].name: duplicate route name "a"; routes[0] already uses it',
      '6:56 routes[1].match.headers.x-id: header "x-id" repeats "X-Id" (header names are case-insensitive)',
      '7:21 routes[1].to[0].publish: {2} is out of range: match.key "devices/+/x" has 1 wildcard, so use {1}',
      '7:45 routes[1].to[1].publish: a publish key must not contain the wildcards + or #; use {1}, {2}… to insert the levels the match captured',
      '7:71 routes[1].to[2].publish: {0} is out of range: match.key "devices/+/x" has 1 wildcard, so use {1}',
      '10:21 routes[2].to[0].publish: {1} has nothing to refer to: match.key "fixed" has no wildcards',
      '12:19 routes[3].match.key: + must be a whole level',
    ]);
  });

  it('reports schema and cross-check problems in one run', () => {
    expect(issuesOf(yaml(
      'routes:',
      '  - name: a',
      '    priority: high',
      '    match: { key: k }',
      '    to: [nope]',
    ))).toEqual([
      '3:15 routes[0].priority: expected an integer, got "high"',
      '5:10 routes[0].to[0]: unknown target "nope"; expected one of: publish, deadletter',
    ]);
  });

  it('warns about shadowed rules, naming both', () => {
    expect(warningsOf(yaml(
      'routes:',
      '  - name: first',
      '    match: { key: "k/+", protocols: [ws, mqtt], headers: { X-A: "1" } }',
      '    to: [publish]',
      '  - name: second',
      '    match: { key: "k/+", protocols: [mqtt, ws], headers: { x-a: "1" } }',
      '    to: [publish]',
      '  - name: passes-on',
      '    priority: 5',
      '    match: { key: "other" }',
      '    continue: true',
      '    to: [publish]',
      '  - name: reached',
      '    match: { key: "other" }',
      '    to: [publish]',
      '  - name: later-but-higher',
      '    priority: 1',
      '    match: { key: "k/+", protocols: [mqtt, ws], headers: { x-a: "1" } }',
      '    to: [publish]',
    ))).toEqual([
      '3:12 routes[0].match: rule "first" is shadowed by rule "later-but-higher" (routes[4]): same match, higher or equal precedence, and no continue: true',
      '6:12 routes[1].match: rule "second" is shadowed by rule "later-but-higher" (routes[4]): same match, higher or equal precedence, and no continue: true',
    ]);
  });

  it('warns when a request can never be answered', () => {
    expect(warningsOf(yaml(
      'routes:',
      '  - name: ask',
      '    match: { key: ask }',
      '    mode: request',
      '    to: [deadletter]',
      // A timeout on a deliver rule bounds requests that senders wait on (HTTP /v1/requests, WS request, gRPC Request).
      '  - name: tell',
      '    match: { key: tell }',
      '    timeout: 1s',
      '    to: [publish]',
    ))).toEqual([
      '5:10 routes[0].to[0]: mode: request answers with the first target\'s reply, but deadletter never replies: every request will time out',
    ]);
  });
});

describe('environment variables', () => {
  const text = yaml(
    'listeners:',
    '  http:',
    '    host: ${HOST:-127.0.0.1}',
    '    port: ${PORT:-8080}',
    'targets:',
    '  ingest:',
    '    type: http',
    '    url: "${INGEST_URL}"',
    '    headers: { authorization: "Bearer ${TOKEN}", x-template: "$${literal}" }',
  );

  it('substitutes values, defaults and escapes; unquoted values are typed afterwards', () => {
    const { config } = loadConfigText(text, FILE, { PORT: '9000', INGEST_URL: 'http://ingest:9000/in', TOKEN: 's3cret' });
    expect(config.listeners.http).toMatchObject({ host: '127.0.0.1', port: 9000 });
    expect(config.targets.ingest).toMatchObject({ url: 'http://ingest:9000/in', headers: { authorization: 'Bearer s3cret', 'x-template': '${literal}' } });
  });

  it('uses the default for an empty variable, like the shell', () => {
    const { config } = loadConfigText(text, FILE, { HOST: '', INGEST_URL: 'http://x', TOKEN: 't' });
    expect(config.listeners.http).toMatchObject({ host: '127.0.0.1', port: 8080 });
  });

  it('reports every unset variable at its value, without schema noise on top', () => {
    expect(issuesOf(text, {})).toEqual([
      '8:10 targets.ingest.url: environment variable INGEST_URL is not set (write ${INGEST_URL:-default} to give a default)',
      '9:31 targets.ingest.headers.authorization: environment variable TOKEN is not set (write ${TOKEN:-default} to give a default)',
    ]);
  });

  it('keeps quoted values strings and rejects malformed references', () => {
    expect(issuesOf(yaml('listeners:', '  http:', '    host: "${H"', '    port: "${P:-1}"'))).toEqual([
      '3:11 listeners.http.host: unterminated ${; write $${ for a literal ${',
      '4:11 listeners.http.port: expected an integer from 0 to 65535, got "1"',
    ]);
    expect(issuesOf(yaml('log: { level: "${1X}" }'))).toEqual([
      '1:15 log.level: invalid reference ${1X}; expected ${NAME} or ${NAME:-default}',
    ]);
  });
});

describe('the resolved config', () => {
  it('applies defaults and decodes durations and sizes', () => {
    const { config, warnings } = loadConfigText('', FILE, {});
    expect(warnings).toEqual([]);
    expect(config).toEqual({
      file: FILE,
      listeners: {},
      log: { level: 'info' },
      limits: { maxPayloadSize: 1024 * 1024, maxInflight: 10_000 },
      requests: { timeout: 5000 },
      shutdown: { drainTimeout: 10_000 },
      deadletter: { path: '/etc/junction/data/deadletter.jsonl', maxFileSize: 64 * 1024 * 1024, maxBytes: 1024 ** 3, whenFull: 'refuse' },
      storage: { dir: '/etc/junction/data', sync: 'os' },
      workers: 1,
      admin: {},
      groups: { maxQueue: 10_000, maxInflight: 64, ackTimeout: 30_000, retention: 300_000, maxGroups: 1000, maxQueuedBytes: 64 * 1024 * 1024 },
      grpc: {
        maxReceiveMessageSize: 1024 * 1024 + 64 * 1024,
        keepalive: { time: 60_000, timeout: 20_000 },
        maxConcurrentStreams: 1000,
        publishWindow: { messages: 1024, bytes: 4 * 1024 * 1024 },
        subscriberBuffer: { messages: 1024, bytes: 4 * 1024 * 1024 },
        drainTimeout: 30_000,
      },
      sse: { maxOutboundBuffer: 1024 * 1024, drainTimeout: 30_000 },
      mqtt: {
        websocket: true,
        maxPacketSize: 1024 * 1024 + 64 * 1024,
        connectTimeout: 10_000,
        keepaliveLimit: 0,
        maxSubscriptions: 1000,
        maxInflightInbound: 1000,
        maxOutboundBuffer: 1024 * 1024,
        drainTimeout: 30_000,
        maxQueuedPerSession: 1000,
        sessionExpiry: 7 * 24 * 3600 * 1000,
        maxHold: 10_000,
        maxPendingRequests: 100,
      },
      auth: {
        anonymous: false, users: [], apiKeys: [], certificate: { principal: 'commonName' },
        backoff: { after: 5, initial: 1000, max: 60_000 },
        verification: { concurrency: 2, maxPending: 1000, maxPendingPerIp: 8 },
      },
      websocket: {
        enabled: true,
        maxSubscriptions: 1000,
        maxInflight: 64,
        maxFrameSize: Math.ceil(1024 * 1024 / 3) * 4 + 64 * 1024,
        maxOutboundBuffer: 1024 * 1024,
        drainTimeout: 30_000,
        pingInterval: 30_000,
        idleTimeout: 300_000,
        handshakeTimeout: 10_000,
        perMessageDeflate: false,
      },
      breakers: {
        default: { errorThresholdPercentage: 50, resetTimeout: 10_000, volumeThreshold: 10, rollingCountTimeout: 10_000, halfOpenProbes: 1 },
      },
      targets: {},
      routes: [],
      defaultRoute: 'publish',
    });
  });

  it('holds every default of the schema where the file leaves the key out', () => {
    const tls = 'tls: { cert: c.pem, key: k.pem }';
    const { config } = loadConfigText(yaml(
      // Optional sections and listeners are given, so their own defaults are looked at too.
      'listeners:',
      ...['http', 'mqtt', 'grpc', 'admin'].map((name, i) => `  ${name}: { host: a, port: ${i + 1}, ${tls} }`),
      'auth: { jwt: { secret: "a secret of thirty-two characters!" }, acl: [{ principal: "*", publish: [x] }] }',
      'breakers: { quick: {} }',
      'cluster: { redis: "redis://x:6379" }',
      'targets:',
      '  h: { type: http, url: "http://x", retry: { attempts: 2, backoff: 1s }, rateLimit: { rate: 5, per: 1s } }',
      '  g: { type: grpc, address: "x:1", proto: /dev/null, method: a.B/C, retry: { attempts: 2, backoff: 1s } }',
      'routes: [{ name: r, match: { key: k }, to: [publish], rateLimit: { rate: 5, per: 1s } }]',
    ), FILE, {});
    const found = new Map<string, { expected: unknown; actual: unknown }>();
    collectDefaults(gatewayConfigSchema(builtins), config, '', found);
    // Relative paths are resolved against the config file's folder.
    found.get('.deadletter.path')!.expected = path.join(path.dirname(FILE), 'data/deadletter.jsonl');
    found.get('.storage.dir')!.expected = path.join(path.dirname(FILE), 'data');
    const side = (which: 'expected' | 'actual') => Object.fromEntries([...found].map(([at, values]) => [at, values[which]]));
    expect(side('actual')).toEqual(side('expected'));
    // Every default the JSON Schema file shows, sections that merely start empty aside, was looked at.
    expect(found.size).toBe(gatewayJsonSchemaText().match(/"default": (?!\{\}|\[\])/g)!.length);
  });

  it('derives the defaults that depend on other values from them', () => {
    const derived = loadConfigText(yaml(
      'limits: { maxPayloadSize: 3kb }',
      'auth: { users: [{ username: ann, password: "scrypt:16384:8:1:c2FsdA==:a2V5a2V5a2V5a2V5a2V5a2V5" }] }',
      'routes: [{ name: r, match: { key: k }, to: [publish], rateLimit: { rate: 5, per: 1s } }]',
    ), FILE, {}).config;
    const sections = derived as unknown as Sizes;
    expect(sections.grpc.maxReceiveMessageSize).toBe(3 * 1024 + 64 * 1024);
    expect(sections.mqtt.maxPacketSize).toBe(3 * 1024 + 64 * 1024);
    expect(sections.websocket.maxFrameSize).toBe(4 * 1024 + 64 * 1024);
    expect(derived.auth.users[0]!.principal).toBe('ann');
    expect(derived.routes[0]!.rateLimit!.burst).toBe(5);
    const given = loadConfigText(yaml(
      'limits: { maxPayloadSize: 3kb }',
      'grpc: { maxReceiveMessageSize: 5kb }',
      'mqtt: { maxPacketSize: 6kb }',
      'websocket: { maxFrameSize: 7kb }',
      'auth: { users: [{ username: ann, principal: anna, password: "scrypt:16384:8:1:c2FsdA==:a2V5a2V5a2V5a2V5a2V5a2V5" }] }',
      'routes: [{ name: r, match: { key: k }, to: [publish], rateLimit: { rate: 5, per: 1s, burst: 9 } }]',
    ), FILE, {}).config;
    const sized = given as unknown as Sizes;
    expect([sized.grpc.maxReceiveMessageSize, sized.mqtt.maxPacketSize, sized.websocket.maxFrameSize]).toEqual([5 * 1024, 6 * 1024, 7 * 1024]);
    expect(given.auth.users[0]!.principal).toBe('anna');
    expect(given.routes[0]!.rateLimit!.burst).toBe(9);
  });

  it('gives a target without breaker: the entry named default, else one with the defaults', () => {
    const target = 'targets: { h: { type: http, url: "http://x" } }';
    const builtIn = loadConfigText(yaml('breakers: { slow: { timeout: 9s } }', target), FILE, {}).config;
    expect(builtIn.targets.h!.breaker).toBe('default');
    expect(builtIn.breakers.default).toEqual({ errorThresholdPercentage: 50, resetTimeout: 10_000, volumeThreshold: 10, rollingCountTimeout: 10_000, halfOpenProbes: 1 });
    const named = loadConfigText(yaml('breakers: { default: { timeout: 1s, volumeThreshold: 3 } }', target), FILE, {}).config;
    expect(named.breakers.default).toMatchObject({ timeout: 1000, volumeThreshold: 3 });
  });

  it('decodes the units operators write', () => {
    const { config } = loadConfigText(yaml(
      'limits: { maxPayloadSize: 256kb }',
      'requests: { timeout: 1.5s }',
      'shutdown: { drainTimeout: 1m }',
      'deadletter: { maxFileSize: 4096, maxBytes: 2gb, whenFull: dropOldest }',
      'breakers: { slow: { timeout: 250ms, resetTimeout: 1h } }',
      'targets: { t: { type: http, url: "http://x", queue: { maxBytes: 8mb } } }',
    ), FILE, {});
    expect(config.limits.maxPayloadSize).toBe(256 * 1024);
    expect(config.requests.timeout).toBe(1500);
    expect(config.shutdown.drainTimeout).toBe(60_000);
    expect(config.deadletter).toMatchObject({ maxFileSize: 4096, maxBytes: 2 * 1024 ** 3, whenFull: 'dropOldest' });
    expect(config.targets.t!.queue).toEqual({ maxSize: 10_000, maxBytes: 8 * 1024 ** 2 });
    expect(config.breakers.slow).toMatchObject({ timeout: 250, resetTimeout: 3_600_000 });
  });

  it('resolves relative paths against the config file folder and keeps absolute ones', () => {
    const grpc = (proto: string) => yaml(
      'deadletter: { path: ../dl/out.jsonl }',
      'storage: { dir: ../queue }',
      'targets:',
      `  billing: { type: grpc, address: "h:1", proto: ${proto}, method: b.v1.B/C }`,
    );
    const relative = loadConfigText(grpc('protos/b.proto'), 'conf/gateway.yaml', {});
    expect(relative.config.file).toBe(path.resolve('conf/gateway.yaml'));
    expect(relative.config.deadletter.path).toBe(path.resolve('dl/out.jsonl'));
    expect(relative.config.storage.dir).toBe(path.resolve('queue'));
    expect(relative.config.targets.billing).toMatchObject({ proto: path.resolve('conf/protos/b.proto') });
    expect(relative.warnings.map(brief)).toEqual([`4:49 targets.billing.proto: file not found: ${path.resolve('conf/protos/b.proto')}`]);
    const absolute = loadConfigText(grpc('/srv/b.proto'), FILE, {});
    expect(absolute.config.targets.billing).toMatchObject({ proto: '/srv/b.proto' });
  });

  it('lower-cases header names in route matches', () => {
    const { config } = loadConfigText(yaml('routes:', '  - { name: a, match: { key: k, headers: { Content-Type: text/plain } }, to: [publish] }'), FILE, {});
    expect(config.routes[0]!.match.headers).toEqual({ 'content-type': 'text/plain' });
  });

  it('is deeply frozen', () => {
    const { config } = loadConfigText(yaml('listeners: { http: { host: a, port: 1 } }', 'routes: [{ name: a, match: { key: k }, to: [publish] }]'), FILE, {});
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.listeners.http)).toBe(true);
    expect(Object.isFrozen(config.routes[0]!.to)).toBe(true);
    expect(() => { (config.routes as unknown[]).push({}); }).toThrow(TypeError);
  });
});

describe('loadConfigFile', () => {
  it('names the file and the OS reason when it cannot be read', async () => {
    const missing = path.join(tmpdir(), 'junction-no-such-dir', 'gateway.yaml');
    const error = await loadConfigFile(missing, {}).catch((err: unknown) => err);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues).toEqual([
      { file: missing, line: 0, column: 0, path: '', message: 'cannot read the config file: no such file or directory (ENOENT)' },
    ]);
  });

  it('returns the absolute path and positions issues in the file as named', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'junction-config-'));
    try {
      const file = path.join(dir, 'gateway.yaml');
      await writeFile(file, yaml('defaultRoute: publish'));
      const { config } = await loadConfigFile(path.relative(process.cwd(), file), {});
      expect(config.file).toBe(file);
      await writeFile(file, yaml('', 'defaultRoute: nowhere'));
      const error = await loadConfigFile(file, {}).catch((err: unknown) => err);
      expect((error as ConfigError).message).toBe(`${file}:2:15: defaultRoute: expected one of: publish, drop, got "nowhere"`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('gatewayJsonSchema', () => {
  it('is plain draft-07 JSON Schema without an $id', () => {
    const schema = gatewayJsonSchema() as Record<string, unknown>;
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#');
    expect(schema.$id).toBeUndefined();
    expect(Object.getOwnPropertySymbols(schema)).toEqual([]);
    expect(JSON.parse(JSON.stringify(schema))).toEqual(schema);
  });

  it('is what schema/gateway.schema.json holds (npm run build && npm run schema regenerates it)', async () => {
    expect(await readFile(path.join(ROOT, 'schema/gateway.schema.json'), 'utf8')).toBe(gatewayJsonSchemaText());
  });
});
