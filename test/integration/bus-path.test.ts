import { afterEach, describe, expect, it } from 'vitest';
import type { Delivery } from '../helpers/grpc.js';
import { GatewayClient, subscribed } from '../helpers/grpc.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type ExtraListener, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt, rawConnection } from '../helpers/mqtt.js';
import { sample, scrape } from '../helpers/prometheus.js';
import { subscribeSse, type SseSubscriber } from '../helpers/sse.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';
import type { MessageFrame } from '../../src/client/protocol.js';

interface AdminStats {
  rejections: Record<string, Record<string, number>>;
  adapters: Record<string, { counters: Record<string, number>; gauges?: Record<string, number>; slowConsumers?: Record<string, number> }>;
}

describe('one bus to every subscriber', () => {
  let gw: TestGateway | undefined;
  const closers: (() => void | Promise<void>)[] = [];

  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await closeClients();
    await gw?.stop();
    gw = undefined;
  });

  /** WebSocket, gRPC and SSE subscribers of `fan/#`, each collecting the payloads it receives. */
  async function subscribers(gateway: TestGateway): Promise<Record<'ws' | 'grpc' | 'sse', () => string[]>> {
    const ws: WsTestClient = await connectWs(gateway.http);
    closers.push(() => ws.close());
    ws.send({ op: 'subscribe', id: 1, key: 'fan/#' });
    await ws.next((f) => f.op === 'ack');
    const client = new GatewayClient(gateway.grpc);
    closers.push(() => client.close());
    const stream = client.subscribe('fan/#');
    const grpc: Delivery[] = [];
    stream.on('data', (d: Delivery) => grpc.push(d));
    stream.on('error', () => undefined);
    closers.push(() => stream.cancel());
    await subscribed(stream);
    const sse: SseSubscriber = await subscribeSse(gateway.http, 'fan/#');
    closers.push(() => sse.close());
    return {
      ws: () => ws.frames.filter((f): f is MessageFrame => f.op === 'message').map((f) => String(f.payload)),
      grpc: () => grpc.map((d) => Buffer.from(d.payload).toString()),
      sse: () => sse.messages.map((m) => m.payload),
    };
  }

  for (const listeners of [['grpc'], ['grpc', 'mqtt']] as ExtraListener[][]) {
    it(`delivers an HTTP publish once to WebSocket, gRPC and SSE subscribers with listeners ${listeners.join('+')}`, async () => {
      gw = await startGateway('defaultRoute: publish', undefined, { listeners });
      const got = await subscribers(gw);
      const mqtt = listeners.includes('mqtt') ? await connectMqtt(gw.mqtt) : undefined;
      await mqtt?.client.subscribeAsync('fan/#', { qos: 1 });
      for (const text of ['one', 'two']) {
        expect((await fetch(`${gw.http}/v1/messages/fan/${text}`, { method: 'POST', body: text, headers: { 'x-qos': '1' } })).status).toBe(202);
      }
      await eventually(() => {
        for (const read of Object.values(got)) expect(read()).toEqual(['one', 'two']);
        if (mqtt) expect(mqtt.texts()).toEqual(['one', 'two']);
      });
    });
  }

  it('delivers an MQTT publish to the other protocols through the same bus', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc', 'mqtt'] });
    const got = await subscribers(gw);
    const publisher = await connectMqtt(gw.mqtt);
    await publisher.client.publishAsync('fan/m', 'from-mqtt', { qos: 1 });
    await eventually(() => {
      for (const read of Object.values(got)) expect(read()).toEqual(['from-mqtt']);
    });
  });
});

describe('what adapters count reaches /metrics and /admin/stats', () => {
  let gw: TestGateway | undefined;

  afterEach(async () => {
    await gw?.stop();
    gw = undefined;
  });

  it('counts WebSocket refusals, frame errors included, like every other protocol', async () => {
    gw = await startGateway('defaultRoute: drop', undefined, { listeners: ['mqtt'] });
    const ws = await connectWs(gw.http);
    ws.send({ op: 'publish', id: 1, key: 'nowhere', payload: 'x', qos: 1 });
    expect(await ws.next((f) => f.op === 'error')).toMatchObject({ code: 'no_route' });
    ws.send({ op: 'publish', id: 2, key: 'bad/#', payload: 'x' });
    expect(await ws.next((f) => f.op === 'error')).toMatchObject({ code: 'bad_request' });
    ws.socket.send('not json');
    expect((await ws.closed).code).toBe(1007);

    const mqtt = await rawConnection(gw.mqttPort);
    // A PUBLISH whose Remaining Length announces more than mqtt.maxPacketSize: closed at its header.
    mqtt.socket.write(Buffer.from([0x30, 0xff, 0xff, 0xff, 0x7f]));
    await mqtt.closed;

    const metrics = await scrape(gw.admin);
    expect(sample(metrics, 'junction_rejections_total', { protocol: 'ws', code: 'no_route' })).toBe(1);
    expect(sample(metrics, 'junction_rejections_total', { protocol: 'ws', code: 'bad_request' })).toBe(2);
    expect(sample(metrics, 'junction_adapter_events_total', { protocol: 'mqtt', event: 'oversizePackets' })).toBe(1);
    const stats = await (await fetch(`${gw.admin}/admin/stats`)).json() as AdminStats;
    expect(stats.rejections.ws).toEqual({ no_route: 1, bad_request: 2 });
    expect(stats.rejections.mqtt).toEqual({ too_large: 1 });
    expect(stats.adapters.mqtt!.counters.oversizePackets).toBe(1);
    expect(stats.adapters.ws!.counters).toMatchObject({ handshakesRefused: 0 });
    expect(stats.adapters.ws!.slowConsumers).toEqual({ shed: 0, disconnected: 0 });
    expect(Object.keys(stats.adapters).sort()).toEqual(['grpc', 'http', 'mqtt', 'ws']);
  });
});
