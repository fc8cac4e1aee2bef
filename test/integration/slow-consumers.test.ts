/**
 * Fan-out never waits for one subscriber (issue 19). On each protocol, and for a group member,
 * one subscriber stops reading while an HTTP publisher sends 200 messages a second and a healthy
 * subscriber of the same protocol reads: the healthy one gets its messages without a gap of a
 * second, the publisher's acknowledgements stay as fast as in the same run without the stuck
 * client, and the stuck one is shed (its qos 0 deliveries dropped) then disconnected with its
 * protocol's signal, as /metrics says.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { constants as http2 } from 'node:http2';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { Agent, EventSource, request } from 'undici';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVERY_LISTENER, type RunningGateway, startCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { GatewayClient, rawCall, service, subscribed } from '../helpers/grpc.js';
import { connectPacket, subscribePacket } from '../helpers/mqtt.js';
import { sample, scrape } from '../helpers/prometheus.js';

type Protocol = 'mqtt' | 'ws' | 'grpc' | 'http';

const PATTERN = 'stall/#';
const KEY = 'stall/x';
const GROUP = 'workers';
const RATE = 200;
const SECONDS = 3;
const TOTAL = RATE * SECONDS;
/** 16 kB a message: 3 s of them (9.6 MB) are more than loopback and the buffers below hold */
const PAYLOAD = Buffer.alloc(16 * 1024, 'p');
// Long enough that a stall (acknowledgements and the healthy subscriber held until the stuck one
// is cut) stands well clear of a busy machine's own delays, which reach 1.7 s at load 10.
const DRAIN_TIMEOUT_MS = 6000;

/**
 * Small buffers and a short drain timeout, so a stuck client is shed then cut within the run.
 * gRPC keeps its default buffer: a grpc-js client's 64 kB HTTP/2 window makes it a few MB/s
 * reader on a busy machine, and a healthy subscriber needs the buffer to ride out bursts.
 */
const config = (dir: string) => `
${EVERY_LISTENER}storage: { dir: ${join(dir, 'store')} }
deadletter: { path: ${join(dir, 'deadletter.jsonl')} }
defaultRoute: publish
limits: { maxPayloadSize: 64kb }
mqtt: { maxOutboundBuffer: 256kb, drainTimeout: ${DRAIN_TIMEOUT_MS}ms }
websocket: { maxOutboundBuffer: 256kb, drainTimeout: ${DRAIN_TIMEOUT_MS}ms }
grpc: { drainTimeout: ${DRAIN_TIMEOUT_MS}ms }
sse: { maxOutboundBuffer: 256kb, drainTimeout: ${DRAIN_TIMEOUT_MS}ms }
`;

/** A subscriber that reads: when each delivery arrived. */
interface Healthy {
  arrivals: number[];
  close(): void;
}

/** A subscriber that stopped reading. `signal` resumes reading and resolves with how the gateway ended it. */
interface Stuck {
  signal(): Promise<string>;
  destroy(): void;
}

interface TestGateway {
  running: RunningGateway;
  dir: string;
  http: string;
  admin: string;
  grpc: string;
  mqtt: string;
  ports: Record<string, number>;
}

async function spawnGateway(): Promise<TestGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'junction-slow-'));
  const configPath = join(dir, 'gateway.yaml');
  await writeFile(configPath, config(dir));
  const running = await startCli(configPath);
  const ports = running.ports;
  return {
    running, dir, ports,
    http: `http://127.0.0.1:${ports.http}`, admin: `http://127.0.0.1:${ports.admin}`, grpc: `127.0.0.1:${ports.grpc}`, mqtt: `mqtt://127.0.0.1:${ports.mqtt}`,
  };
}

async function openWebSocket(gw: TestGateway, subscribe: Record<string, string>, onMessage: (frame: { op: string }) => void): Promise<WebSocket> {
  const socket = new WebSocket(`${gw.http.replace(/^http/, 'ws')}/ws`);
  socket.on('error', () => undefined);
  await new Promise((resolve, reject) => socket.once('open', resolve).once('error', reject));
  const acked = new Promise<void>((resolve) => socket.on('message', (data: Buffer) => {
    const frame = JSON.parse(data.toString()) as { op: string };
    if (frame.op === 'ack') resolve();
    onMessage(frame);
  }));
  socket.send(JSON.stringify({ op: 'subscribe', id: 's', ...subscribe }));
  await acked;
  return socket;
}

async function healthy(gw: TestGateway, protocol: Protocol | 'group'): Promise<Healthy> {
  const arrivals: number[] = [];
  const arrived = () => arrivals.push(Date.now());
  switch (protocol) {
    case 'mqtt': {
      const client = await mqtt.connectAsync(gw.mqtt, { protocolVersion: 4, reconnectPeriod: 0 });
      client.on('message', arrived);
      await client.subscribeAsync(PATTERN, { qos: 0 });
      return { arrivals, close: () => void client.endAsync(true) };
    }
    case 'ws': {
      const socket = await openWebSocket(gw, { key: PATTERN }, (frame) => frame.op === 'message' && arrived());
      return { arrivals, close: () => socket.terminate() };
    }
    case 'grpc':
    case 'group': {
      const client = new GatewayClient(gw.grpc);
      const stream = client.subscribe(PATTERN, protocol === 'group' ? { group: GROUP } : {});
      stream.on('data', arrived);
      stream.on('error', () => undefined);
      await subscribed(stream);
      return { arrivals, close: () => { stream.cancel(); client.close(); } };
    }
    case 'http': {
      const source = new EventSource(`${gw.http}/v1/subscribe/stall/%23`);
      source.addEventListener('message', arrived);
      await new Promise<void>((resolve, reject) => {
        source.onopen = () => resolve();
        source.onerror = () => reject(new Error('SSE subscription failed'));
      });
      return { arrivals, close: () => source.close() };
    }
  }
}

/**
 * A TCP client that sends `hello`, waits until `ready` says the subscription is in place, then
 * reads nothing more; resumed, it reads what was left for it until the gateway's close.
 */
async function rawStuck(port: number, hello: Buffer | string, ready: (received: Buffer) => boolean): Promise<Stuck> {
  const socket = createConnection(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let received = Buffer.alloc(0);
  await new Promise<void>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (!ready(received)) return;
      socket.off('data', onData);
      socket.pause();
      resolve();
    };
    socket.on('data', onData);
    socket.once('close', () => reject(new Error('closed before it subscribed')));
    socket.write(hello);
  });
  return {
    signal: () => new Promise((resolve) => {
      socket.once('close', () => resolve('connection closed'));
      socket.resume();
    }),
    destroy: () => socket.destroy(),
  };
}

async function stuck(gw: TestGateway, protocol: Protocol | 'group'): Promise<Stuck> {
  switch (protocol) {
    case 'mqtt':
      // CONNACK (4 bytes) then SUBACK (5 bytes).
      return rawStuck(gw.ports.mqtt!, Buffer.concat([connectPacket('stuck'), subscribePacket(PATTERN, 0)]), (r) => r.length >= 9);
    case 'ws': {
      const socket = await openWebSocket(gw, { key: PATTERN }, () => undefined);
      socket.pause();
      return {
        signal: () => new Promise((resolve) => {
          socket.once('close', (code: number) => resolve(`close ${code}`));
          socket.resume();
        }),
        destroy: () => socket.terminate(),
      };
    }
    case 'grpc':
    case 'group': {
      const request = service.Subscribe.requestSerialize({ pattern: PATTERN, responder: false, group: protocol === 'group' ? GROUP : '' });
      const call = rawCall(gw.grpc, service.Subscribe.path, request);
      await call.headers;
      call.pause();
      return {
        // Without reading on: what it was sent and did not read is dropped with the stream.
        signal: async () => {
          const code = await call.closedWith;
          return `RST_STREAM ${code}, connection ${call.session.closed ? 'closed' : 'open'}`;
        },
        destroy: () => call.close(),
      };
    }
    case 'http':
      return rawStuck(gw.ports.http!, 'GET /v1/subscribe/stall/%23 HTTP/1.1\r\nHost: junction\r\n\r\n', (r) => r.includes(': subscribed'));
  }
}

interface Run {
  /** ms each POST took to be acknowledged */
  latencies: number[];
  /** the healthy subscriber's deliveries, and the largest gap between two of them */
  received: number;
  largestGapMs: number;
}

/** RATE POSTs a second for SECONDS, qos 0, on a few keep-alive connections. */
async function publish(gw: TestGateway, sub: Healthy, expected: (received: number) => void): Promise<Run> {
  const agent = new Agent({ connections: 4 });
  try {
    const latencies: number[] = [];
    const start = Date.now();
    const inflight: Promise<void>[] = [];
    for (let i = 0; i < TOTAL; i++) {
      const wait = start + (i * 1000) / RATE - Date.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      const sent = Date.now();
      inflight.push(request(`${gw.http}/v1/messages/${KEY}`, { method: 'POST', body: PAYLOAD, headers: { 'x-qos': '0' }, dispatcher: agent }).then(async (response) => {
        await response.body.dump();
        expect(response.statusCode).toBe(202);
        latencies.push(Date.now() - sent);
      }));
    }
    await Promise.all(inflight);
    await eventually(() => expected(sub.arrivals.length), 10_000);
    let largestGapMs = 0;
    for (let i = 1; i < sub.arrivals.length; i++) largestGapMs = Math.max(largestGapMs, sub.arrivals[i]! - sub.arrivals[i - 1]!);
    return { latencies, received: sub.arrivals.length, largestGapMs };
  } finally {
    await agent.close();
  }
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

/** The two slow-consumer counters of one protocol, as /metrics has them now. */
async function slowConsumerCounts(gw: TestGateway, protocol: Protocol): Promise<{ shed: number; disconnected: number }> {
  const metrics = await scrape(gw.admin);
  return {
    shed: sample(metrics, 'junction_subscriber_shed_total', { protocol }),
    disconnected: sample(metrics, 'junction_subscriber_disconnects_total', { protocol }),
  };
}

/** How the gateway tells each kind of subscriber it was too slow. */
const SIGNALS: Record<Protocol | 'group', string> = {
  mqtt: 'connection closed',
  ws: 'close 1013',
  // ENHANCE_YOUR_CALM, which gRPC clients report as RESOURCE_EXHAUSTED
  grpc: `RST_STREAM ${http2.NGHTTP2_ENHANCE_YOUR_CALM}, connection open`,
  group: `RST_STREAM ${http2.NGHTTP2_ENHANCE_YOUR_CALM}, connection open`,
  http: 'connection closed',
};

describe('a subscriber that stops reading costs only itself', () => {
  let gw: TestGateway;
  const cleanups: (() => void)[] = [];

  beforeAll(async () => {
    gw = await spawnGateway();
  });

  afterAll(async () => {
    for (const cleanup of cleanups.splice(0)) cleanup();
    gw.running.child.kill('SIGKILL');
    await gw.running.exited;
    await rm(gw.dir, { recursive: true, force: true });
  });

  for (const kind of ['mqtt', 'ws', 'grpc', 'http', 'group'] as const) {
    const protocol: Protocol = kind === 'group' ? 'grpc' : kind;
    it(`${kind}: the healthy subscriber and the publisher go on; the stuck one is shed, then disconnected`, async () => {
      const baselineSub = await healthy(gw, kind);
      cleanups.push(baselineSub.close);
      const baseline = await publish(gw, baselineSub, (n) => expect(n).toBe(TOTAL));
      baselineSub.close();

      const before = await slowConsumerCounts(gw, protocol);
      const sub = await healthy(gw, kind);
      cleanups.push(sub.close);
      const slow = await stuck(gw, kind);
      cleanups.push(slow.destroy);
      // A group member gets the share the stuck one took before its connection filled up;
      // every other subscriber gets every message.
      const run = await publish(gw, sub, (n) => (kind === 'group' ? expect(n).toBeGreaterThan(TOTAL / 2) : expect(n).toBe(TOTAL)));

      expect(run.largestGapMs).toBeLessThan(DRAIN_TIMEOUT_MS / 2);
      // The stall this guards against holds acknowledgements for the whole drain timeout; the
      // floor keeps a busy machine's noise from failing it.
      expect(percentile(run.latencies, 0.99)).toBeLessThanOrEqual(Math.max(2 * percentile(baseline.latencies, 0.99), DRAIN_TIMEOUT_MS / 2));

      // Shed while its buffer was full (a group skips a full member instead), then cut.
      await eventually(async () => expect((await slowConsumerCounts(gw, protocol)).disconnected).toBe(before.disconnected + 1), DRAIN_TIMEOUT_MS * 3);
      const after = await slowConsumerCounts(gw, protocol);
      if (kind === 'group') expect(after.shed).toBe(before.shed);
      else expect(after.shed).toBeGreaterThan(before.shed);
      expect(await slow.signal()).toBe(SIGNALS[kind]);
      sub.close();
    }, 60_000);
  }
});
