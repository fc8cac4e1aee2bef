import { afterEach, describe, expect, it } from 'vitest';
import { builtins } from '../../src/builtins.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt, connectPacket, mqttStats, rawConnection, subscribePacket, type RawConnection } from '../helpers/mqtt.js';

let gw: TestGateway | undefined;

afterEach(async () => {
  await closeClients();
  await gw?.stop();
  gw = undefined;
});

const TOPIC = 'paced';
/** CONNACK (4 bytes) and SUBACK (5 bytes) */
const HANDSHAKE_BYTES = 9;

/** A subscriber on a raw socket, its flowing data stopped once subscribed: it reads only when the test says. */
async function pausedSubscriber(port: number, clientId: string): Promise<RawConnection> {
  const connection = await rawConnection(port);
  connection.socket.write(Buffer.concat([connectPacket(clientId), subscribePacket(TOPIC, 0)]));
  await eventually(() => expect(Buffer.concat(connection.received).length).toBe(HANDSHAKE_BYTES));
  connection.socket.removeAllListeners('data');
  connection.socket.pause();
  return connection;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe('MQTT publisher pacing', () => {
  it('slows a QoS 0 publisher to a subscriber that reads slowly, and drops nothing while it keeps up', async () => {
    // Small enough that a publisher read on unpaced overflows it as soon as the loopback socket buffers are full.
    gw = await startGateway('mqtt: { maxOutboundBuffer: 256kb }\ndefaultRoute: publish', builtins, { listeners: ['mqtt'] });
    const slow = await pausedSubscriber(gw.mqttPort, 'slow');
    const publisher = await connectMqtt(gw.mqtt);
    const payloadBytes = 4096;
    const count = 4000;
    // 16 MiB, well past what loopback socket buffers hold, written by the publisher as fast as it can.
    const payload = Buffer.alloc(payloadBytes, 7);
    for (let i = 0; i < count; i++) publisher.client.publish(TOPIC, payload, { qos: 0 });
    // type, 2 bytes of Remaining Length, topic length, topic, payload
    const expected = count * (1 + 2 + 2 + TOPIC.length + payloadBytes);
    // 64 KiB at a time, a few ms apart: far slower than the publisher writes, yet draining far
    // within the pacing patience.
    let bytes = 0;
    for (let turn = 0; turn < 100_000 && bytes < expected && mqttStats(gw.gateway).shed === 0; turn++) {
      const chunk = (slow.socket.read(64 * 1024) ?? slow.socket.read()) as Buffer | null;
      if (chunk) bytes += chunk.length;
      await pause(2);
    }
    const stats = mqttStats(gw.gateway);
    expect(stats.shed).toBe(0);
    expect(bytes).toBe(expected);
    expect(stats.paced).toBeGreaterThan(0);
    expect(stats.pacingBehind).toBe(0);
  }, 60_000);

  it('stops pacing to a subscriber that stopped reading once the patience is up: its publishers go on at the pace of the others', async () => {
    // Nothing dropped and no drain timeout within the test: only the pacing patience can let the publisher go.
    gw = await startGateway('mqtt: { maxOutboundBuffer: 200mb, drainTimeout: 10m }\ndefaultRoute: publish', builtins, { listeners: ['mqtt'] });
    const stuck = await pausedSubscriber(gw.mqttPort, 'stuck');
    const reader = await connectMqtt(gw.mqtt);
    await reader.client.subscribeAsync(TOPIC, { qos: 0 });
    const chunk = Buffer.alloc(64 * 1024);
    // An HTTP publish is answered once taken (QoS 0: aedes hands QoS 1 to its subscribers after
    // a persistence lookup, which pacing does not follow). One at a time until the stuck one's socket stayed
    // full past the patience (the loopback buffers hold a few MiB), then some more: every answer
    // comes, and the reader has every message, although the stuck one never drains.
    let sent = 0;
    const publish = async () => {
      const arrived = new Promise((resolve) => reader.client.once('message', resolve));
      expect((await fetch(`${gw!.http}/v1/messages/${TOPIC}`, { method: 'POST', body: chunk, headers: { 'x-qos': '0' } })).status).toBe(202);
      await arrived;
      sent++;
    };
    while (sent < 1000 && mqttStats(gw.gateway).pacingBehind === 0) await publish();
    expect(mqttStats(gw.gateway).pacingBehind).toBe(1);
    for (let i = 0; i < 20; i++) await publish();
    expect(reader.messages).toHaveLength(sent);
    const stats = mqttStats(gw.gateway);
    expect(stats.pacingBehind).toBe(1);
    expect(stats.shed).toBe(0);
    expect(stuck.socket.destroyed).toBe(false);
  }, 60_000);
});
