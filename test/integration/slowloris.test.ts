/**
 * Timeouts for every phase on every listener (issue 19): connections that send nothing or
 * trickle are closed within their listener's timeouts and counted, while a normal client keeps
 * being served; with the open-file limit lowered, idle sockets on one listener cannot stop the
 * others from accepting, nor /healthz from answering.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as http2Connect } from 'node:http2';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { Agent, request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { makePki } from '../helpers/certs.js';
import { startCli, type RunningGateway, type StartOptions } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { parseScrape, sample, scrape } from '../helpers/prometheus.js';

/** Generous: the timeouts under test are 1-2 s, the defaults they replace 5 s to 2 minutes. */
const CLOSED_WITHIN_MS = 6000;
const PER_KIND = 10;

interface Spawned {
  running: RunningGateway;
  dir: string;
  port(listener: string): number;
}

const spawned: Spawned[] = [];

async function spawnGateway(config: (dir: string) => string, options: StartOptions = {}): Promise<Spawned> {
  const dir = await mkdtemp(join(tmpdir(), 'junction-slowloris-'));
  const path = join(dir, 'gateway.yaml');
  await writeFile(path, config(dir));
  const running = await startCli(path, {}, options);
  const gw = { running, dir, port: (listener: string) => running.ports[listener]! };
  spawned.push(gw);
  return gw;
}

afterEach(async () => {
  for (const gw of spawned.splice(0)) {
    gw.running.child.kill('SIGKILL');
    await gw.running.exited;
    await rm(gw.dir, { recursive: true, force: true });
  }
});

/** A client socket and, once the gateway closed it, how long it had been open. */
interface Held {
  socket: Socket;
  closedAfter: Promise<number>;
}

/** Opens a connection and keeps `behave` going on it (sending nothing, or trickling) until the gateway closes it. */
async function hold(port: number, behave: (socket: Socket) => void = () => undefined): Promise<Held> {
  const socket = createConnection(port, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.on('data', () => undefined);
  const opened = Date.now();
  const closedAfter = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - opened)));
  await new Promise((resolve) => socket.once('connect', resolve));
  behave(socket);
  return { socket, closedAfter };
}

/** An HTTP/2 connection that makes one gRPC call (a health check), then stays idle until the gateway closes it. */
async function idleAfterCall(port: number): Promise<Held> {
  const session = http2Connect(`http://127.0.0.1:${port}`);
  session.on('error', () => undefined);
  const opened = Date.now();
  const closedAfter = new Promise<number>((resolve) => session.once('close', () => resolve(Date.now() - opened)));
  const call = session.request({ ':method': 'POST', ':path': '/grpc.health.v1.Health/Check', 'content-type': 'application/grpc', te: 'trailers' });
  call.on('data', () => undefined);
  call.end(Buffer.alloc(5));
  const trailers = await new Promise<Record<string, unknown>>((resolve) => call.once('trailers', resolve));
  expect(trailers['grpc-status']).toBe('0');
  return { socket: session.socket as Socket, closedAfter };
}

/** Writes the next piece every 200 ms while the socket is open (bounded by the gateway's timeout, and by the count). */
function trickle(pieces: (i: number) => string) {
  return (socket: Socket) => {
    let i = 0;
    const timer = setInterval(() => {
      if (socket.destroyed || i >= 100) clearInterval(timer);
      else socket.write(pieces(i++));
    }, 200);
    socket.once('close', () => clearInterval(timer));
  };
}

describe('every phase of every listener has a timeout', () => {
  it('closes idle and trickling connections on each listener within its timeouts, counted, while a normal client is served', async () => {
    const gw = await spawnGateway((dir) => {
      const pki = makePki(dir);
      // undici keeps no connection whose server says keep-alive 1 s (less than its own threshold),
      // so the normal client below opens one per request: more than the default connectRate.
      return `
listeners:
  http: { host: 127.0.0.1, port: 0, timeouts: { headers: 1s, request: 2s, keepAlive: 1s }, connectRate: { rate: 10000, per: 1s, burst: 10000 } }
  mqtt: { host: 127.0.0.1, port: 0 }
  grpc: { host: 127.0.0.1, port: 0, timeouts: { idle: 1s } }
  admin: { host: 127.0.0.1, port: 0, tls: { cert: ${pki.serverCert}, key: ${pki.serverKey} }, timeouts: { handshake: 1s } }
auth: { anonymous: true }
storage: { dir: ${join(dir, 'store')} }
deadletter: { path: ${join(dir, 'deadletter.jsonl')} }
defaultRoute: publish
mqtt: { connectTimeout: 1s }
`;
    });
    const ca = readFileSync(join(gw.dir, 'ca.crt'));
    const admin = new Agent({ connect: { ca } });
    const http = gw.port('http');

    const kinds: Record<string, () => Promise<Held>> = {
      'HTTP, nothing sent': () => hold(http),
      'HTTP, headers trickling': () => hold(http, trickle((i) => (i === 0 ? 'POST /v1/messages/a HTTP/1.1\r\n' : `x-${i}: y\r\n`))),
      'HTTP, body trickling': () => hold(http, (socket) => {
        socket.write('POST /v1/messages/a HTTP/1.1\r\nHost: junction\r\nContent-Length: 1000\r\n\r\n');
        trickle(() => 'b')(socket);
      }),
      'HTTP, kept alive after a request': () => hold(http, (socket) => socket.write('POST /v1/messages/a HTTP/1.1\r\nHost: junction\r\nContent-Length: 1\r\n\r\nx')),
      'WebSocket upgrade trickling': () => hold(http, trickle((i) => (i === 0 ? 'GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n' : `x-${i}: y\r\n`))),
      'MQTT, no CONNECT': () => hold(gw.port('mqtt')),
      'gRPC, no HTTP/2 preface': () => hold(gw.port('grpc')),
      'gRPC, idle after a call': () => idleAfterCall(gw.port('grpc')),
      'TLS, no handshake': () => hold(gw.port('admin')),
    };
    const held = new Map<string, Held[]>();
    for (const [kind, open] of Object.entries(kinds)) held.set(kind, await Promise.all(Array.from({ length: PER_KIND }, open)));

    // Meanwhile a normal client publishes and the admin listener answers, one request at a time.
    let served = 0;
    const stop = Date.now() + 3000;
    while (Date.now() < stop) {
      const published = await request(`http://127.0.0.1:${http}/v1/messages/normal`, { method: 'POST', body: 'ok' });
      await published.body.dump();
      expect(published.statusCode).toBe(202);
      const health = await request(`https://localhost:${gw.port('admin')}/healthz`, { dispatcher: admin });
      await health.body.dump();
      expect(health.statusCode).toBe(200);
      served++;
    }
    expect(served).toBeGreaterThan(0);

    for (const [kind, connections] of held) {
      const after = await Promise.all(connections.map((c) => c.closedAfter));
      expect({ kind, slowest: Math.max(...after) < CLOSED_WITHIN_MS }).toEqual({ kind, slowest: true });
    }

    const metricsResponse = await request(`https://localhost:${gw.port('admin')}/metrics`, { dispatcher: admin });
    const metrics = parseScrape(await metricsResponse.body.text());
    // nothing sent, headers, body and the WebSocket upgrade: 408 each
    expect(sample(metrics, 'junction_request_timeouts_total', { listener: 'http', timeout: 'request' })).toBeGreaterThanOrEqual(4 * PER_KIND);
    // the kept-alive ones, and perhaps some of the normal client's
    expect(sample(metrics, 'junction_request_timeouts_total', { listener: 'http', timeout: 'keepAlive' })).toBeGreaterThanOrEqual(PER_KIND);
    // no HTTP/2 preface, and idle after a call
    expect(sample(metrics, 'junction_request_timeouts_total', { listener: 'grpc', timeout: 'idle' })).toBe(2 * PER_KIND);
    expect(sample(metrics, 'junction_adapter_events_total', { protocol: 'mqtt', event: 'connectTimeouts' })).toBe(PER_KIND);
    expect(sample(metrics, 'junction_tls_handshake_failures_total', { listener: 'admin', reason: 'timeout' })).toBe(PER_KIND);
    await admin.close();
  }, 30_000);
});

describe('with few file descriptors', () => {
  it('lets idle sockets on one listener take only its own share: the others accept and /healthz answers', async () => {
    const gw = await spawnGateway((dir) => `
listeners:
  http: { host: 127.0.0.1, port: 0, maxConnections: 100, maxConnectionsPerIp: 1000, connectRate: { rate: 1000, per: 1s, burst: 1000 } }
  mqtt: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
auth: { anonymous: true }
storage: { dir: ${join(dir, 'store')} }
deadletter: { path: ${join(dir, 'deadletter.jsonl')} }
defaultRoute: publish
`, { openFiles: 256 });

    // More idle sockets than the process has descriptors; the default headers timeout (10 s) outlasts the test.
    const idle = await Promise.all(Array.from({ length: 300 }, () => hold(gw.port('http'))));
    const admitted = () => idle.filter((h) => !h.socket.destroyed).length;
    await eventually(() => expect(admitted()).toBe(100));

    const health = await request(`http://127.0.0.1:${gw.port('admin')}/healthz`);
    await health.body.dump();
    expect(health.statusCode).toBe(200);
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port('mqtt')}`, { reconnectPeriod: 0, connectTimeout: 5000 });
    await client.publishAsync('fd/check', 'x', { qos: 1 });
    await client.endAsync();

    const metrics = await scrape(`http://127.0.0.1:${gw.port('admin')}`);
    expect(sample(metrics, 'junction_admission_refusals_total', { listener: 'http', limit: 'connections' })).toBe(200);
    for (const h of idle) h.socket.destroy();
  }, 30_000);
});
