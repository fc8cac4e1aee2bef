import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MessageFrame } from '../../src/client/protocol.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { GatewayClient, subscribed, type Delivery } from '../helpers/grpc.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { subscribeSse, type SseSubscriber } from '../helpers/sse.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

/** What a subscriber saw of one message, whatever its protocol. */
interface Seen {
  key: string;
  payload: string;
  headers: Record<string, string>;
  priority: number;
  contentType: string | undefined;
  expires: boolean;
}

/** A message sent with a header, a content type, a priority and an expiry, by each protocol that can carry them. */
const PUBLISHERS: Record<string, (gw: TestGateway, key: string) => Promise<void>> = {
  http: async (gw, key) => {
    const response = await fetch(`${gw.http}/v1/messages/${key}`, {
      method: 'POST', body: '{"n":1}', headers: { 'content-type': 'application/json', 'X-Site': 'north', 'x-priority': '7', 'x-expires-in': '60' },
    });
    expect(response.status).toBe(202);
  },
  ws: async (gw, key) => {
    const ws = await connectWs(gw.http);
    ws.send({ op: 'publish', id: 1, key, payload: { n: 1 }, headers: { 'X-Site': 'north' }, priority: 7, qos: 1, ttl: 60_000 });
    await ws.next((f) => f.op === 'ack');
    await ws.close();
  },
  grpc: async (gw, key) => {
    const client = new GatewayClient(gw.grpc);
    await client.publish({ key, payload: '{"n":1}', contentType: 'application/json', headers: { 'X-Site': 'north' }, priority: 7, qos: 1, ttlMs: 60_000 });
    client.close();
  },
};

describe('what each protocol carries to each other one', () => {
  let gw: TestGateway;
  let sse: SseSubscriber;
  let ws: WsTestClient;
  let grpc: GatewayClient;
  const grpcSeen: Delivery[] = [];

  beforeAll(async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc', 'mqtt'] });
    sse = await subscribeSse(gw.http, 'map/#');
    ws = await connectWs(gw.http);
    ws.send({ op: 'subscribe', id: 's', key: 'map/#' });
    await ws.next((f) => f.op === 'ack');
    grpc = new GatewayClient(gw.grpc);
    const stream = grpc.subscribe('map/#');
    stream.on('data', (d: Delivery) => grpcSeen.push(d));
    stream.on('error', () => undefined);
    await subscribed(stream);
  });

  afterAll(async () => {
    sse.close();
    await ws.close();
    grpc.close();
    await closeClients();
    await gw.stop();
  });

  const subscribers: Record<string, (key: string) => Seen | undefined> = {
    sse: (key) => {
      const m = sse.messages.find((s) => s.key === key);
      return m && { key: m.key, payload: m.payload, headers: m.headers, priority: m.priority, contentType: m.contentType, expires: false };
    },
    ws: (key) => {
      const m = ws.frames.find((f): f is MessageFrame => f.op === 'message' && f.key === key);
      return m && { key: m.key, payload: JSON.stringify(m.payload), headers: m.headers, priority: m.priority, contentType: m.contentType, expires: false };
    },
    grpc: (key) => {
      const d = grpcSeen.find((g) => g.key === key);
      return d && { key: d.key, payload: Buffer.from(d.payload).toString(), headers: d.headers, priority: d.priority, contentType: d.contentType || undefined, expires: d.ttlMs > 0 };
    },
  };

  for (const [from, publish] of Object.entries(PUBLISHERS)) {
    it(`carries headers (names in lower case), content type, priority and expiry from ${from} to SSE, WebSocket and gRPC`, async () => {
      const key = `map/${from}`;
      await publish(gw, key);
      for (const [to, seen] of Object.entries(subscribers)) {
        await eventually(() => expect(seen(key), `${from} → ${to}`).toBeDefined());
        const got = seen(key)!;
        expect(got.headers['x-site'], `${from} → ${to}`).toBe('north');
        expect(Object.keys(got.headers).some((name) => name !== name.toLowerCase()), `${from} → ${to}`).toBe(false);
        expect(got.priority, `${from} → ${to}`).toBe(7);
        expect(got.contentType, `${from} → ${to}`).toBe('application/json');
        expect(JSON.parse(got.payload), `${from} → ${to}`).toEqual({ n: 1 });
        if (to === 'grpc') expect(got.expires, `${from} → grpc: ttl_ms`).toBe(true);
      }
    });
  }

  it('carries an MQTT 3.1.1 publish (no headers, no properties) with the defaults', async () => {
    const { client } = await connectMqtt(gw.mqtt);
    await client.publishAsync('map/mqtt', '{"n":1}', { qos: 1 });
    for (const [to, seen] of Object.entries(subscribers)) {
      await eventually(() => expect(seen('map/mqtt'), to).toBeDefined());
      expect(seen('map/mqtt')!.priority, to).toBe(4);
      expect(seen('map/mqtt')!.headers, to).toEqual({});
    }
  });
});
