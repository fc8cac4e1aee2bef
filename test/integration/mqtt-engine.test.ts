import type { PublishPacket } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import { GatewayBroker, type MqttEngineFactory } from '../../adapters/mqtt/broker.js';
import { mqttProtocolOn } from '../../adapters/mqtt/index.js';
import { httpProtocol } from '../../adapters/http/index.js';
import { Registry } from '../../src/registry.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';

/** aedes 1.2 standing in for an MQTT 5 engine: it records what the adapter hands it to publish. */
class RecordingMqtt5Broker extends GatewayBroker {
  override readonly mqtt5 = true;
  readonly forwarded: PublishPacket[] = [];

  override forward(packet: PublishPacket, done: (error?: Error) => void): void {
    this.forwarded.push(packet);
    super.forward(packet, done);
  }
}

describe('the MQTT engine seam', () => {
  let gw: TestGateway | undefined;

  afterEach(async () => {
    await closeClients();
    await gw?.stop();
    gw = undefined;
  });

  async function start(engine: MqttEngineFactory): Promise<void> {
    gw = await startGateway('defaultRoute: publish', new Registry({ protocols: [httpProtocol, mqttProtocolOn(engine)] }), { listeners: ['mqtt'] });
  }

  /** An MQTT client subscribed to everything: the engine is handed only what a client could want. */
  async function subscribeAll(): Promise<void> {
    await (await connectMqtt(gw!.mqtt)).client.subscribeAsync('#', { qos: 1 });
  }

  async function post(key: string, body: string, headers: Record<string, string> = {}): Promise<void> {
    expect((await fetch(`${gw!.http}/v1/messages/${key}`, { method: 'POST', body, headers })).status).toBe(202);
  }

  it('hands an MQTT 5 engine every Message field as PUBLISH properties', async () => {
    let broker: RecordingMqtt5Broker | undefined;
    await start((options, ingress) => (broker = new RecordingMqtt5Broker(options, ingress)));
    await subscribeAll();
    const response = await fetch(`${gw!.http}/v1/messages/sensors/t1`, {
      method: 'POST', body: '{"c":21}',
      headers: { 'content-type': 'application/json', 'x-priority': '7', 'x-expires-in': '60', 'x-site': 'north' },
    });
    expect(response.status).toBe(202);
    await eventually(() => expect(broker!.forwarded.filter((p) => p.topic === 'sensors/t1')).toHaveLength(1));
    const [packet] = broker!.forwarded.filter((p) => p.topic === 'sensors/t1');
    expect(packet!.properties).toMatchObject({
      contentType: 'application/json',
      messageExpiryInterval: 60,
      userProperties: { 'x-site': 'north', priority: '7', traceparent: expect.stringMatching(/^00-/) as unknown },
    });
  });

  it('hands aedes 1.2 (MQTT 3.1.1) no properties at all', async () => {
    let broker: RecordingMqtt5Broker | undefined;
    await start((options, ingress) => {
      broker = new RecordingMqtt5Broker(options, ingress);
      Object.defineProperty(broker, 'mqtt5', { value: false });
      return broker;
    });
    await subscribeAll();
    expect((await fetch(`${gw!.http}/v1/messages/plain`, { method: 'POST', body: 'x', headers: { 'x-site': 'north' } })).status).toBe(202);
    await eventually(() => expect(broker!.forwarded.filter((p) => p.topic === 'plain')).toHaveLength(1));
    expect(broker!.forwarded.find((p) => p.topic === 'plain')!.properties).toBeUndefined();
  });

  it('hands the engine a bus message only when an MQTT client could want it: a live subscription, a persistent session, or retained', async () => {
    let broker: RecordingMqtt5Broker | undefined;
    await start((options, ingress) => {
      broker = new RecordingMqtt5Broker(options, ingress);
      Object.defineProperty(broker, 'mqtt5', { value: false });
      return broker;
    });
    const forwarded = () => broker!.forwarded.map((p) => p.topic);
    // Nobody at all: neither QoS reaches aedes. Each later publish follows these through the same
    // bus, so one that had been handed over would come before it in the record.
    await post('nobody/1', 'x');
    await post('nobody/0', 'x', { 'x-qos': '0' });

    const live = await connectMqtt(gw!.mqtt);
    await live.client.subscribeAsync('live/#', { qos: 1 });
    await post('live/a', 'to a live subscription', { 'x-qos': '0' });
    await eventually(() => expect(live.texts()).toEqual(['to a live subscription']));
    expect(forwarded()).toEqual(['live/a']);
    await live.client.endAsync();
    await eventually(() => expect(broker!.listening).toBe(false));
    await post('nobody/2', 'x');

    // A persistent session away: QoS 1 is queued for it, QoS 0 is not [MQTT-3.1.2-5].
    const away = await connectMqtt(gw!.mqtt, { clientId: 'away-1', clean: false });
    await away.client.subscribeAsync('kept/#', { qos: 1 });
    await away.client.endAsync();
    await eventually(() => expect(broker!.listening).toBe(false));
    await post('kept/0', 'not queued', { 'x-qos': '0' });
    await post('kept/1', 'queued');
    const back = await connectMqtt(gw!.mqtt, { clientId: 'away-1', clean: false });
    expect(back.sessionPresent).toBe(true);
    await eventually(() => expect(back.texts()).toEqual(['queued']));
    await back.client.endAsync();
    await eventually(() => expect(broker!.listening).toBe(false));

    // Retained with no subscriber anywhere: stored for the next one.
    const publisher = await connectMqtt(gw!.mqtt);
    await publisher.client.publishAsync('kept-for-later', 'retained', { qos: 0, retain: true });
    await eventually(() => expect(forwarded()).toContain('kept-for-later'));
    const late = await connectMqtt(gw!.mqtt);
    await late.client.subscribeAsync('kept-for-later', { qos: 0 });
    await eventually(() => expect(late.messages.map((m) => [m.payload.toString(), m.retain])).toEqual([['retained', true]]));
    expect(forwarded()).toEqual(['live/a', 'kept/1', 'kept-for-later']);
  });
});
