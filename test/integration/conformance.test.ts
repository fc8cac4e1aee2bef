/**
 * One suite, every adapter: the same cases run over HTTP, WebSocket (/ws), gRPC
 * (junction.v1.Gateway) and MQTT 3.1.1 (mqtt.js), each through a small driver. A case says what
 * to do; the driver says how its protocol does it and what its client must see, from DESIGN.md's
 * error table and the protocol's doc. Adding a protocol is adding a driver.
 */
import { status as GrpcStatus, type ServiceError } from '@grpc/grpc-js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/auth/password.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { GatewayClient, subscribed, type Ack } from '../helpers/grpc.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { sample, scrape } from '../helpers/prometheus.js';
import { subscribeSse } from '../helpers/sse.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';
import type { ErrorFrame, MessageFrame } from '../../src/client/protocol.js';

type Protocol = 'http' | 'ws' | 'grpc' | 'mqtt';

/** The refusals of DESIGN.md's table a publish can meet (upstream_* need request mode). */
type RefusalCode = 'bad_request' | 'too_large' | 'no_route' | 'unauthenticated' | 'forbidden' | 'rate_limited' | 'overloaded';

/** DESIGN.md "One error vocabulary", the HTTP and gRPC columns, written out independently of src/errors.ts. */
const DESIGN_TABLE: Record<RefusalCode, { http: number; grpc: GrpcStatus }> = {
  bad_request: { http: 400, grpc: GrpcStatus.INVALID_ARGUMENT },
  too_large: { http: 413, grpc: GrpcStatus.RESOURCE_EXHAUSTED },
  no_route: { http: 404, grpc: GrpcStatus.NOT_FOUND },
  unauthenticated: { http: 401, grpc: GrpcStatus.UNAUTHENTICATED },
  forbidden: { http: 403, grpc: GrpcStatus.PERMISSION_DENIED },
  rate_limited: { http: 429, grpc: GrpcStatus.RESOURCE_EXHAUSTED },
  overloaded: { http: 503, grpc: GrpcStatus.UNAVAILABLE },
};

/** The refusals that tell the sender when to try again. */
const RETRY_AFTER: readonly RefusalCode[] = ['rate_limited', 'overloaded'];

/** What a client saw after one publish, in its protocol's own terms. */
interface Outcome {
  /** the protocol's acknowledgement came: 202, `ack` frame, Publish reply, PUBACK */
  acked: boolean;
  /** HTTP status (of the request or the WebSocket handshake), gRPC status, or CONNACK return code */
  status?: number;
  /** the gateway's error code, where the protocol carries one (problem+json, error frame, trailer) */
  code?: string;
  retryAfterMs?: number;
  /** the gateway closed the connection */
  closed?: boolean;
}

interface Credentials {
  username: string;
  password: string;
}

interface Subscriber {
  /** payloads received, as text, in arrival order */
  payloads(): string[];
}

interface Session {
  /** one QoS 1 publish, resolved with what the gateway answered */
  publish(key: string, payload: string): Promise<Outcome>;
  /** resolves once the gateway has the subscription */
  subscribe(pattern: string): Promise<Subscriber>;
}

interface Driver {
  protocol: Protocol;
  /** A refused handshake (WebSocket 401, MQTT CONNACK) gives a session whose publishes report it. */
  connect(gw: TestGateway, credentials?: Credentials): Promise<Session>;
  /** asserts that `outcome` is how this protocol refuses with `code` */
  expectRefusal(outcome: Outcome, code: RefusalCode): void;
}

/** Everything a driver opened, closed after each test. */
const cleanups: (() => unknown)[] = [];

function keyPath(key: string): string {
  return key.split('/').map(encodeURIComponent).join('/');
}

const http: Driver = {
  protocol: 'http',
  async connect(gw, credentials) {
    const headers: Record<string, string> = credentials ? { authorization: `Bearer ${credentials.username}:${credentials.password}` } : {};
    return {
      async publish(key, payload) {
        const response = await fetch(`${gw.http}/v1/messages/${keyPath(key)}`, { method: 'POST', body: payload, headers });
        if (response.status === 202) return { acked: true };
        const problem = (await response.json()) as { code: string; retryAfterMs?: number };
        const retryAfter = response.headers.get('retry-after');
        return {
          acked: false,
          status: response.status,
          code: problem.code,
          // Retry-After is whole seconds; the problem body has the ms.
          ...(retryAfter !== null ? { retryAfterMs: Number(retryAfter) * 1000 } : {}),
        };
      },
      async subscribe(pattern) {
        const sse = await subscribeSse(gw.http, pattern);
        cleanups.push(() => sse.close());
        return { payloads: () => sse.messages.map((m) => m.payload) };
      },
    };
  },
  expectRefusal(outcome, code) {
    expect(outcome).toMatchObject({ acked: false, status: DESIGN_TABLE[code].http, code });
    if (RETRY_AFTER.includes(code)) expect(outcome.retryAfterMs).toBeGreaterThan(0);
  },
};

const websocket: Driver = {
  protocol: 'ws',
  async connect(gw, credentials) {
    let client: WsTestClient;
    try {
      client = await connectWs(gw.http, credentials ? { headers: { authorization: `Bearer ${credentials.username}:${credentials.password}` } } : {});
    } catch (err) {
      const refused = /Unexpected server response: (\d+)/.exec(String(err));
      if (!refused) throw err;
      const outcome: Outcome = { acked: false, status: Number(refused[1]) };
      return { publish: async () => outcome, subscribe: () => Promise.reject(new Error(`handshake refused: ${outcome.status}`)) };
    }
    cleanups.push(() => client.close());
    let frames = 0;
    return {
      async publish(key, payload) {
        const id = `p${++frames}`;
        client.send({ op: 'publish', id, key, payload, qos: 1 });
        const answer = await client.next((f) => (f.op === 'ack' || f.op === 'error') && f.id === id);
        if (answer.op === 'ack') return { acked: true };
        const error = answer as ErrorFrame;
        return { acked: false, code: error.code, ...(error.retryAfterMs !== undefined ? { retryAfterMs: error.retryAfterMs } : {}) };
      },
      async subscribe(pattern) {
        const id = `s${++frames}`;
        client.send({ op: 'subscribe', id, key: pattern });
        await client.next((f) => f.op === 'ack' && f.id === id);
        return { payloads: () => client.frames.filter((f): f is MessageFrame => f.op === 'message' && f.sub === id).map((f) => String(f.payload)) };
      },
    };
  },
  expectRefusal(outcome, code) {
    // docs/websocket.md: credentials are checked at the handshake; every other refusal is an
    // `error` frame answering the publish.
    if (code === 'unauthenticated') expect(outcome).toEqual({ acked: false, status: 401 });
    else expect(outcome).toMatchObject({ acked: false, code });
    if (code === 'rate_limited') expect(outcome.retryAfterMs).toBeGreaterThan(0);
  },
};

const grpc: Driver = {
  protocol: 'grpc',
  async connect(gw, credentials) {
    const client = new GatewayClient(gw.grpc);
    cleanups.push(() => client.close());
    const metadata: Record<string, string> = credentials ? { authorization: `Bearer ${credentials.username}:${credentials.password}` } : {};
    return {
      async publish(key, payload) {
        let ack: Ack;
        try {
          ack = await client.publish({ key, payload, qos: 1 }, { metadata });
        } catch (err) {
          const failure = err as ServiceError;
          const [code] = failure.metadata.get('junction-error-code');
          const [retryAfter] = failure.metadata.get('junction-retry-after-ms');
          return { acked: false, status: failure.code, code: String(code), ...(retryAfter !== undefined ? { retryAfterMs: Number(retryAfter) } : {}) };
        }
        return ack.error ? { acked: false, code: ack.error.code } : { acked: true };
      },
      async subscribe(pattern) {
        const stream = client.subscribe(pattern, { metadata });
        const payloads: string[] = [];
        stream.on('data', (delivery: { payload: Buffer }) => payloads.push(delivery.payload.toString()));
        stream.on('error', () => undefined);
        cleanups.push(() => stream.cancel());
        await subscribed(stream);
        return { payloads: () => payloads };
      },
    };
  },
  expectRefusal(outcome, code) {
    expect(outcome).toMatchObject({ acked: false, status: DESIGN_TABLE[code].grpc, code });
    if (RETRY_AFTER.includes(code)) expect(outcome.retryAfterMs).toBeGreaterThan(0);
  },
};

const mqtt: Driver = {
  protocol: 'mqtt',
  async connect(gw, credentials) {
    let client: Awaited<ReturnType<typeof connectMqtt>>;
    try {
      client = await connectMqtt(gw.mqtt, credentials ?? {});
    } catch (err) {
      const returnCode = (err as { code?: unknown }).code;
      if (typeof returnCode !== 'number') throw err;
      const outcome: Outcome = { acked: false, status: returnCode, closed: true };
      return { publish: async () => outcome, subscribe: () => Promise.reject(new Error(`CONNACK ${returnCode}`)) };
    }
    return {
      publish: (key, payload) => new Promise<Outcome>((resolve) => {
        const closed = () => resolve({ acked: false, closed: true });
        client.client.once('close', closed);
        client.client.publish(key, payload, { qos: 1 }, (err) => {
          client.client.off('close', closed);
          resolve(err ? { acked: false, closed: !client.client.connected } : { acked: true });
        });
      }),
      async subscribe(pattern) {
        await client.client.subscribeAsync(pattern, { qos: 1 });
        return { payloads: client.texts };
      },
    };
  },
  expectRefusal(outcome, code) {
    // docs/mqtt.md "Errors and refusals on MQTT 3.1.1": no reason codes, so the gateway
    // acknowledges and drops, holds the PUBACK (here past mqtt.maxHold, which closes), or closes.
    const expected: Record<RefusalCode, Outcome> = {
      forbidden: { acked: true },
      no_route: { acked: true },
      rate_limited: { acked: false, closed: true },
      overloaded: { acked: false, closed: true },
      too_large: { acked: false, closed: true },
      bad_request: { acked: false, closed: true },
      // CONNACK 0x04: bad user name or password
      unauthenticated: { acked: false, status: 4, closed: true },
    };
    expect(outcome).toEqual(expected[code]);
  },
};

const DRIVERS: readonly Driver[] = [http, websocket, grpc, mqtt];

const ALICE_WRONG: Credentials = { username: 'alice', password: 'not her password' };
const ALICE_HASH = await hashPassword('alice');

/** A session of the driver under test on the gateway under test, anonymous unless given credentials. */
type Connect = (credentials?: Credentials) => Promise<Session>;

/** How to provoke each refusal; every driver runs every row. */
const REFUSALS: { code: RefusalCode; provoke(connect: Connect, gw: TestGateway): Promise<Outcome> }[] = [
  { code: 'bad_request', provoke: async (connect) => (await connect()).publish('conf/open/nul\u0000level', 'x') },
  { code: 'too_large', provoke: async (connect) => (await connect()).publish('conf/open/big', 'x'.repeat(2048)) },
  { code: 'no_route', provoke: async (connect) => (await connect()).publish('conf/unrouted', 'x') },
  { code: 'unauthenticated', provoke: async (connect) => (await connect(ALICE_WRONG)).publish('conf/open/x', 'x') },
  { code: 'forbidden', provoke: async (connect) => (await connect()).publish('secret/x', 'x') },
  {
    code: 'rate_limited',
    provoke: async (connect) => {
      const session = await connect();
      expect(await session.publish('conf/limited', 'first')).toEqual({ acked: true });
      return session.publish('conf/limited', 'second');
    },
  },
  {
    code: 'overloaded',
    provoke: async (connect, gw) => {
      // One call to the never-answering target runs, one waits in its queue of one: it is full.
      for (const n of [1, 2]) expect((await fetch(`${gw.http}/v1/messages/conf/full`, { method: 'POST', body: String(n) })).status).toBe(202);
      return (await connect()).publish('conf/full', '3');
    },
  },
];

function rejections(gw: TestGateway, protocol: Protocol, code: RefusalCode): Promise<number> {
  return scrape(gw.admin).then((scraped) => sample(scraped, 'junction_rejections_total', { protocol, code }));
}

describe.each(DRIVERS)('conformance over $protocol', (driver) => {
  let gw: TestGateway;
  let downstream: Downstream;

  beforeAll(async () => {
    // Never answers: one target stays full, the other holds what it accepted.
    downstream = await startDownstream(() => undefined);
    gw = await startGateway(`
limits: { maxPayloadSize: 1kb }
defaultRoute: drop
shutdown: { drainTimeout: 100ms }
mqtt: { maxHold: 300ms }
auth:
  anonymous: true
  users: [ { username: alice, password: "${ALICE_HASH}" } ]
  acl:
    - { principal: anonymous, publish: ["conf/#"], subscribe: ["conf/#"] }
targets:
  stuck: { type: http, url: "${downstream.url}/stuck", timeout: 1m, concurrency: 1, queue: { maxSize: 1 } }
  sink: { type: http, url: "${downstream.url}/sink", timeout: 1m }
routes:
  - { name: open, match: { key: "conf/open/#" }, to: [publish] }
  - { name: limited, match: { key: "conf/limited" }, rateLimit: { rate: 1, per: 1h, burst: 1 }, to: [publish] }
  - { name: full, match: { key: "conf/full" }, to: [stuck] }
  - { name: accept, match: { key: "conf/accept" }, to: [sink] }
`, undefined, { listeners: ['grpc', 'mqtt'] });
  });

  afterEach(async () => {
    await Promise.all(cleanups.splice(0).map((close) => close()));
    await closeClients();
  });

  afterAll(async () => {
    await gw.stop();
    await downstream.close();
  });

  it('delivers a publish to a subscriber of its own protocol and of every other', async () => {
    const subscribers = await Promise.all(DRIVERS.map(async (d) => [d.protocol, await (await d.connect(gw)).subscribe('conf/open/#')] as const));
    const payload = `hello over ${driver.protocol}`;
    expect(await (await driver.connect(gw)).publish(`conf/open/${driver.protocol}`, payload)).toEqual({ acked: true });
    for (const [protocol, subscriber] of subscribers) {
      await eventually(() => expect(subscriber.payloads(), `subscriber over ${protocol}`).toEqual([payload]));
    }
  });

  it('acknowledges QoS 1 once the message is accepted: queued for its target, before the target answered', async () => {
    const lane = gw.gateway.lanes().get('sink')!;
    const before = lane.stats;
    expect(await (await driver.connect(gw)).publish('conf/accept', 'x')).toEqual({ acked: true });
    expect(lane.stats).toMatchObject({ accepted: before.accepted + 1, delivered: 0 });
    expect(lane.stats.queued + lane.stats.inFlight).toBe(before.queued + before.inFlight + 1);
  });

  for (const { code, provoke } of REFUSALS) {
    it(`refuses ${code} the way ${driver.protocol} says it, and counts it in junction_rejections_total`, async () => {
      const before = await rejections(gw, driver.protocol, code);
      driver.expectRefusal(await provoke((credentials) => driver.connect(gw, credentials), gw), code);
      await eventually(async () => expect(await rejections(gw, driver.protocol, code)).toBe(before + 1));
    });
  }
});
