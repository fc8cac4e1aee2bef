/**
 * The load generator's own protocol clients (src/bench/drivers/), driven directly against a real
 * Junction on ephemeral ports: each message a publisher sends is acknowledged (QoS 1, PublishAck)
 * and reaches the subscriber once, with the send stamp it carried. The CLI tests count messages;
 * these also check what the clients read out of each frame, and what the gateway read out of theirs. FrameSocket, the subscribers'
 * WebSocket client, is also checked against `ws`'s server for the parts of RFC 6455 Junction does
 * not exercise (pings, fragments, the closing handshake).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { http2StreamPublisher, type StreamCodec } from '../../src/bench/drivers/grpc-stream.js';
import { mqttDriver } from '../../src/bench/drivers/mqtt.js';
import { wsDriver } from '../../src/bench/drivers/ws.js';
import { FrameSocket } from '../../src/bench/drivers/frame-socket.js';
import type { Closable, ConnectionContext, PublisherConnection, ProtocolDriver } from '../../src/bench/drivers/driver.js';
import { paddingFor, readStampBytes, stampedPayload } from '../../src/bench/stamp.js';
import type { ScenarioName } from '../../src/bench/types.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { GatewayClient, service, subscribed, type Delivery } from '../helpers/grpc.js';

const ROUTES = 'routes:\n  - name: bench\n    match: { key: "bench/#" }\n    to: [publish]\n';

let gw: TestGateway;
const drops: string[] = [];
const open: Closable[] = [];
let n = 0;

function context(scenario: ScenarioName): ConnectionContext {
  const http = Number(new URL(gw.http).port);
  return {
    scenario, server: 'junction', host: '127.0.0.1', localAddress: '127.0.0.1',
    ports: { mqtt: gw.mqttPort, ws: http, wsPath: '/ws', grpc: Number(gw.grpc.split(':')[1]) },
    clientId: `bench-drivers-${n++}`, qos: 1, keepaliveS: 30, inflight: 1, tlsCa: undefined, persistent: false,
    onDrop: (reason) => drops.push(reason),
  };
}

/** Sends `count` stamped messages at once, alternating priorities 0 and 9; resolves with each send's outcome. */
function sendAll(publisher: PublisherConnection, key: string, count: number, size: number): Promise<(string | undefined)[]> {
  const padding = paddingFor(size);
  return Promise.all(Array.from({ length: count }, (_, i) => new Promise<string | undefined>((resolve) => {
    publisher.publish(key, stampedPayload(1_000_000 + i, size, padding), i % 2 === 0 ? 0 : 9, resolve);
  })));
}

/** A subscriber on `key` and a publisher, `count` messages of `size` bytes from one to the other. */
async function roundTrip(driver: ProtocolDriver, scenario: ScenarioName, key: string, count: number, size: number): Promise<void> {
  const stamps: number[] = [];
  open.push(await driver.subscriber(context(scenario), key, (stamp) => stamps.push(stamp)));
  const publisher = await driver.publisher(context(scenario));
  open.push(publisher);
  expect(await sendAll(publisher, key, count, size)).toEqual(new Array(count).fill(undefined));
  await eventually(() => expect(stamps).toHaveLength(count), 10_000);
  expect(stamps.sort((a, b) => a - b)).toEqual(Array.from({ length: count }, (_, i) => 1_000_000 + i));
}

describe('load generator clients against Junction', { timeout: 60_000 }, () => {
  beforeAll(async () => {
    gw = await startGateway(ROUTES, undefined, { listeners: ['mqtt', 'grpc'] });
  });

  afterAll(async () => {
    await Promise.all(open.map((c) => c.close()));
    await gw?.stop();
  });

  it('MQTT QoS 1: more PUBLISHes in one turn than one write holds, each acknowledged and delivered once with its stamp', async () => {
    // 1,500 publishes of about 120 bytes: the outbox's 64 KiB arena fills and is replaced within the turn.
    await roundTrip(mqttDriver, 'mqtt-pubsub', 'bench/drivers/mqtt', 1500, 100);
  });

  it('WebSocket QoS 1: a FrameSocket subscriber reads every delivery, small and larger than one read', async () => {
    await roundTrip(wsDriver, 'ws-fanout', 'bench/drivers/ws', 500, 100);
    // 100 KB payloads: each frame spans reads of the 64 KiB buffer, with a 64-bit length.
    await roundTrip(wsDriver, 'ws-fanout', 'bench/drivers/ws-large', 5, 100_000);
  });

  it('gRPC PublishStream on node:http2: every message acknowledged by sequence and delivered with its stamp and priority', async () => {
    // From the proto in the repository: grpcDriver finds it relative to dist/, which tests do not run from.
    const publisher = await http2StreamPublisher(context('grpc-stream'), service.PublishStream as unknown as StreamCodec);
    open.push(publisher);
    const subscriber = new GatewayClient(gw.grpc);
    const stream = subscriber.subscribe('bench/drivers/grpc');
    open.push({ close: async () => { stream.cancel(); subscriber.close(); } });
    stream.on('error', () => undefined);
    const deliveries: Delivery[] = [];
    stream.on('data', (delivery: Delivery) => deliveries.push(delivery));
    await subscribed(stream);
    const count = 1000;
    expect(await sendAll(publisher, 'bench/drivers/grpc', count, 100)).toEqual(new Array(count).fill(undefined));
    await eventually(() => expect(deliveries).toHaveLength(count), 10_000);
    expect(deliveries.map((d) => readStampBytes(d.payload)).sort((a, b) => a - b)).toEqual(Array.from({ length: count }, (_, i) => 1_000_000 + i));
    for (const d of deliveries) expect(d.priority).toBe((readStampBytes(d.payload) - 1_000_000) % 2 === 0 ? 0 : 9);
  });

  it('no connection dropped on the way', () => {
    expect(drops).toEqual([]);
  });
});

describe('FrameSocket against ws\'s server', { timeout: 30_000 }, () => {
  let server: WebSocketServer;
  let port: number;

  beforeAll(async () => {
    server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise((resolve) => server.once('listening', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve));
  });

  it('answers pings, gathers fragments, sends masked text, and reports the closing code and reason', async () => {
    const accepted = new Promise<WebSocket>((resolve) => server.once('connection', resolve));
    const client = new FrameSocket('127.0.0.1', port, '/', '127.0.0.1');
    const messages: string[] = [];
    client.on('message', (data: Buffer) => messages.push(data.toString()));
    await new Promise((resolve) => client.once('open', resolve));
    const peer = await accepted;

    const pong = new Promise<string>((resolve) => peer.once('pong', (data: Buffer) => resolve(data.toString())));
    peer.ping('are you there');
    expect(await pong).toBe('are you there');

    peer.send('frag', { fin: false });
    peer.send('ment', { fin: false });
    peer.send('ed', { fin: true });
    peer.send('whole');
    await eventually(() => expect(messages).toEqual(['fragmented', 'whole']));

    // ws's server refuses unmasked client frames: an echo proves the masking.
    const echoed = new Promise<string>((resolve) => peer.once('message', (data: Buffer) => resolve(data.toString())));
    client.send('{"op":"subscribe"}');
    expect(await echoed).toBe('{"op":"subscribe"}');

    const closed = new Promise<[number, string]>((resolve) => client.once('close', (code: number, reason: Buffer) => resolve([code, reason.toString()])));
    peer.close(4000, 'done');
    expect(await closed).toEqual([4000, 'done']);
  });

  it('refuses a server that answers the upgrade with anything but 101', async () => {
    const plain = http.createServer((_req, res) => res.writeHead(404).end());
    await new Promise<void>((resolve) => plain.listen(0, '127.0.0.1', resolve));
    try {
      const client = new FrameSocket('127.0.0.1', (plain.address() as AddressInfo).port, '/ws', '127.0.0.1');
      const error = await new Promise<Error>((resolve) => client.once('error', resolve));
      expect(error.message).toBe('unexpected server response: 404');
      await new Promise((resolve) => client.once('close', resolve));
    } finally {
      plain.closeAllConnections();
      await new Promise((resolve) => plain.close(resolve));
    }
  });
});
