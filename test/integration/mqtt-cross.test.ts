import { randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { builtins } from '../../src/builtins.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { payloadBytes, subscribeSse, type SseSubscriber } from '../helpers/sse.js';

describe('MQTT across protocols', () => {
  let gw: TestGateway | undefined;
  let downstream: Downstream | undefined;
  let sse: SseSubscriber | undefined;

  afterEach(async () => {
    sse?.close();
    await closeClients();
    await gw?.stop();
    await downstream?.close();
    gw = undefined;
    downstream = undefined;
    sse = undefined;
  });

  it('delivers an MQTT publish to SSE and MQTT subscribers once each, bytes unchanged', async () => {
    gw = await startGateway('defaultRoute: publish', builtins, { listeners: ['mqtt'] });
    sse = await subscribeSse(gw.http, 'sensors/#');
    const mqttSubscriber = await connectMqtt(gw.mqtt);
    await mqttSubscriber.client.subscribeAsync('sensors/#', { qos: 1 });
    const payload = randomBytes(300);
    const publisher = await connectMqtt(gw.mqtt, { clientId: 'sensor-7' });
    await publisher.client.publishAsync('sensors/7/raw', payload, { qos: 1 });
    await publisher.client.publishAsync('sensors/7/end', 'end', { qos: 1 });

    await eventually(() => expect(sse!.messages.map((m) => m.key)).toEqual(['sensors/7/raw', 'sensors/7/end']));
    expect(payloadBytes(sse.messages[0]!).equals(payload)).toBe(true);
    await eventually(() => expect(mqttSubscriber.messages.map((m) => m.topic)).toEqual(['sensors/7/raw', 'sensors/7/end']));
    expect(mqttSubscriber.messages[0]!.payload.equals(payload)).toBe(true);
  });

  it('acknowledges a QoS 1 publish routed to a downstream HTTP service, and forwards nothing by itself', async () => {
    downstream = await startDownstream();
    gw = await startGateway(`
targets:
  ingest: { type: http, url: "${downstream.url}/ingest", timeout: 2s }
routes:
  - { name: telemetry, match: { key: "devices/+/telemetry", protocols: [mqtt] }, to: [ingest] }
  - { name: dashboards, match: { key: "devices/+/status" }, to: [{ publish: "dash/{1}" }] }
defaultRoute: publish
`, builtins, { listeners: ['mqtt'] });
    const everything = await connectMqtt(gw.mqtt);
    await everything.client.subscribeAsync('#', { qos: 1 });
    const device = await connectMqtt(gw.mqtt, { clientId: 'd1' });
    await device.client.publishAsync('devices/d1/telemetry', '{"t":21}', { qos: 1 });
    await eventually(() => expect(downstream!.received).toHaveLength(1));
    expect(downstream.received[0]!.body.toString()).toBe('{"t":21}');
    expect(downstream.received[0]!.headers['x-junction-key']).toBe(encodeURIComponent('devices/d1/telemetry'));

    // Routed to another key: subscribers see that key only, never the device's own topic.
    await device.client.publishAsync('devices/d1/status', 'up', { qos: 1 });
    await device.client.publishAsync('other/end', 'end', { qos: 1 });
    await eventually(() => expect(everything.texts().at(-1)).toBe('end'));
    expect(everything.messages.map((m) => `${m.topic}=${m.payload.toString()}`)).toEqual(['dash/d1=up', 'other/end=end']);
  });

  it('delivers an HTTP POST to MQTT subscribers at the QoS it was sent with', async () => {
    gw = await startGateway('defaultRoute: publish', builtins, { listeners: ['mqtt'] });
    const subscriber = await connectMqtt(gw.mqtt);
    await subscriber.client.subscribeAsync('from-http/+', { qos: 2 });
    const body = randomBytes(64);
    expect((await fetch(`${gw.http}/v1/messages/from-http/a`, { method: 'POST', body })).status).toBe(202);
    expect((await fetch(`${gw.http}/v1/messages/from-http/b`, { method: 'POST', body: 'qos0', headers: { 'x-qos': '0' } })).status).toBe(202);
    await eventually(() => expect(subscriber.messages.map((m) => [m.topic, m.qos])).toEqual([['from-http/a', 1], ['from-http/b', 0]]));
    expect(subscriber.messages[0]!.payload.equals(body)).toBe(true);
  });

  it('carries MQTT over WebSocket at /mqtt to and from MQTT over TCP', async () => {
    gw = await startGateway('defaultRoute: publish', builtins, { listeners: ['mqtt'] });
    const tcp = await connectMqtt(gw.mqtt);
    await tcp.client.subscribeAsync('ws/#', { qos: 1 });
    const ws = await connectMqtt(gw.mqttWs);
    await ws.client.subscribeAsync('tcp/#', { qos: 1 });
    await ws.client.publishAsync('ws/hello', 'over websocket', { qos: 1 });
    await tcp.client.publishAsync('tcp/hello', 'over tcp', { qos: 2 });
    await eventually(() => expect(tcp.texts()).toEqual(['over websocket']));
    await eventually(() => expect(ws.texts()).toEqual(['over tcp']));
    expect(ws.messages[0]!.qos).toBe(1);

    // [MQTT-6.0.0-1]: a text frame closes the connection.
    const raw = new WebSocket(gw.mqttWs, 'mqtt');
    await new Promise<void>((resolve, reject) => {
      raw.once('open', () => resolve());
      raw.once('error', reject);
    });
    expect(raw.protocol).toBe('mqtt');
    const closed = new Promise<number>((resolve) => raw.once('close', (code) => resolve(code)));
    raw.send('not binary');
    expect(await closed).toBe(1003);
  });
});
