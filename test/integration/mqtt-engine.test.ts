import type { PublishPacket } from 'aedes';
import { afterEach, describe, expect, it } from 'vitest';
import { GatewayBroker, type MqttEngineFactory } from '../../adapters/mqtt/broker.js';
import { mqttProtocolOn } from '../../adapters/mqtt/index.js';
import { httpProtocol } from '../../adapters/http/index.js';
import { Registry } from '../../src/registry.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';

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
    await gw?.stop();
    gw = undefined;
  });

  async function start(engine: MqttEngineFactory): Promise<void> {
    gw = await startGateway('defaultRoute: publish', new Registry({ protocols: [httpProtocol, mqttProtocolOn(engine)] }), { listeners: ['mqtt'] });
  }

  it('hands an MQTT 5 engine every Message field as PUBLISH properties', async () => {
    let broker: RecordingMqtt5Broker | undefined;
    await start((options, ingress) => (broker = new RecordingMqtt5Broker(options, ingress)));
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
    expect((await fetch(`${gw!.http}/v1/messages/plain`, { method: 'POST', body: 'x', headers: { 'x-site': 'north' } })).status).toBe(202);
    await eventually(() => expect(broker!.forwarded.filter((p) => p.topic === 'plain')).toHaveLength(1));
    expect(broker!.forwarded.find((p) => p.topic === 'plain')!.properties).toBeUndefined();
  });
});
