import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { builtins } from '../../src/builtins.js';
import { hashPassword } from '../../src/auth/password.js';
import { loadConfigText } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';
import { silentLogger } from '../../src/log.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import {
  closeClients, connackCode, connectMqtt, connectPacket, mqttStats, rawConnection, runMosquitto, subscribeCodes, subscribePacket,
} from '../helpers/mqtt.js';

let gw: TestGateway | undefined;

afterEach(async () => {
  await closeClients();
  await gw?.stop();
  gw = undefined;
});

async function start(yaml: string): Promise<TestGateway> {
  gw = await startGateway(yaml, builtins, { listeners: ['mqtt'] });
  return gw;
}

describe('MQTT authentication and ACL', () => {
  let hash: string;

  beforeAll(async () => {
    hash = await hashPassword('pw');
  });

  const config = () => `
auth:
  anonymous: false
  users:
    - { username: dev-1, password: "${hash}" }
    - { username: ops, password: "${hash}", principal: operator }
  acl:
    - { principal: "*", publish: ["devices/{principal}/#"], subscribe: ["commands/{principal}/#"] }
    - { principal: operator, publish: ["commands/#"], subscribe: ["#"] }
defaultRoute: publish
`;

  it('refuses CONNECT without credentials (5) or with wrong ones (4), and lets users in', async () => {
    const { mqtt } = await start(config());
    expect(await connackCode(mqtt)).toBe(5);
    expect(await connackCode(mqtt, { username: 'dev-1', password: 'wrong' })).toBe(4);
    expect(await connackCode(mqtt, { username: 'nobody', password: 'pw' })).toBe(4);
    expect(await connackCode(mqtt, { username: 'dev-1', password: 'pw' })).toBe(0);
    expect(mqttStats(gw!.gateway).connectsRefused).toBe(3);
    const pub = await runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(gw!.mqttPort), '-u', 'ops', '-P', 'pw', '-t', 'commands/dev-1/reboot', '-m', 'now', '-q', '1']);
    expect(pub.code).toBe(0);
  });

  it('answers a denied subscription with 0x80 and acknowledges then drops a denied publish', async () => {
    const { mqtt } = await start(config());
    const operator = await connectMqtt(mqtt, { username: 'ops', password: 'pw' });
    expect((await operator.client.subscribeAsync('#', { qos: 1 }))[0]!.qos).toBe(1);
    const device = await connectMqtt(mqtt, { username: 'dev-1', password: 'pw', clientId: 'dev-1-main' });
    expect(gw!.gateway.listConnections(10)).toContainEqual(expect.objectContaining({ protocol: 'mqtt', id: 'dev-1-main', principal: 'dev-1', remoteAddress: '127.0.0.1' }));
    // [MQTT-3.9.3-2]: a failure return code per refused filter; the allowed one is granted.
    expect(await subscribeCodes(device.client, { 'commands/dev-1/+': { qos: 1 }, 'commands/#': { qos: 1 }, '#': { qos: 0 } })).toEqual([1, 128, 128]);

    // [MQTT-3.3.5-2]: acknowledged as usual (publishAsync resolves on PUBACK), not delivered.
    await device.client.publishAsync('devices/dev-2/temp', 'spoofed', { qos: 1 });
    await device.client.publishAsync('devices/dev-1/temp', 'mine', { qos: 1 });
    await eventually(() => expect(operator.texts()).toEqual(['mine']));
    const stats = () => mqttStats(gw!.gateway);
    expect(stats().subscriptionsRefused).toBe(2);
    // Every refusal is one of the protocol's rejections: the two subscriptions and the publish.
    expect(stats().refused.forbidden).toBe(3);

    await operator.client.publishAsync('commands/dev-1/reboot', 'now', { qos: 1 });
    await eventually(() => expect(device.texts()).toEqual(['now']));
  });
});

describe('MQTT limits', () => {
  it('closes only the connection that announces a packet over mqtt.maxPacketSize or a payload over limits.maxPayloadSize', async () => {
    const { mqtt } = await start('limits: { maxPayloadSize: 1kb }\nmqtt: { maxPacketSize: 2kb }\ndefaultRoute: publish');
    const bystander = await connectMqtt(mqtt);
    await bystander.client.subscribeAsync('size/#', { qos: 1 });
    const stats = () => mqttStats(gw!.gateway);

    const oversize = await connectMqtt(mqtt);
    const oversizeClosed = new Promise<void>((resolve) => oversize.client.stream.once('close', () => resolve()));
    oversize.client.publish('size/big', Buffer.alloc(4096), { qos: 1 });
    await oversizeClosed;
    expect(stats().oversizePackets).toBe(1);

    const tooLarge = await connectMqtt(mqtt);
    const tooLargeClosed = new Promise<void>((resolve) => tooLarge.client.stream.once('close', () => resolve()));
    tooLarge.client.publish('size/payload', Buffer.alloc(1500), { qos: 1 });
    await tooLargeClosed;
    // The oversize packet and the oversize payload.
    expect(stats().refused.too_large).toBe(2);

    const fine = await connectMqtt(mqtt);
    await fine.client.publishAsync('size/ok', Buffer.alloc(1024), { qos: 1 });
    await eventually(() => expect(bystander.messages.map((m) => m.topic)).toEqual(['size/ok']));
    expect(bystander.client.connected).toBe(true);
  });

  it('closes connections that send garbage while the others keep getting every message', async () => {
    const { mqtt, mqttPort } = await start('defaultRoute: publish');
    const subscriber = await connectMqtt(mqtt);
    await subscriber.client.subscribeAsync('steady', { qos: 1 });
    const publisher = await connectMqtt(mqtt);
    const stats = () => mqttStats(gw!.gateway);
    const sent: string[] = [];
    let stop = false;
    const publishing = (async () => {
      for (let i = 0; !stop || i < 20; i++) {
        sent.push(String(i));
        await publisher.client.publishAsync('steady', String(i), { qos: 1 });
      }
    })();

    const publishTo = (topic: string, header = 0x30) => {
      const name = Buffer.from(topic, 'utf8');
      const body = Buffer.concat([Buffer.from([0, name.length]), name, Buffer.from('x')]);
      return Buffer.concat([Buffer.from([header, body.length]), body]);
    };
    /** A CONNECT with one byte changed (byte 4: protocol name, byte 9: connect flags). */
    const withConnectByte = (index: number, value: number) => {
      const packet = connectPacket('bad');
      packet[index] = value;
      return packet;
    };
    const garbage = [
      Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n'),
      // [MQTT-3.1.0-1] a first packet that is not CONNECT; [MQTT-3.1.0-2] a second CONNECT
      Buffer.from([0xc0, 0x00]),
      Buffer.concat([connectPacket('g1'), connectPacket('g1')]),
      // [MQTT-2.2.2-2] a reserved packet type, and SUBSCRIBE without its fixed header flags 0010
      Buffer.concat([connectPacket('g2'), Buffer.from([0xf0, 0x00])]),
      Buffer.concat([connectPacket('g3'), Buffer.from([0x80, 0x06, 0x00, 0x01, 0x00, 0x01, 0x61, 0x00])]),
      // [MQTT-3.3.1-4] QoS 3; [MQTT-3.3.2-2] a wildcard in a topic name; [MQTT-4.7.3-2] NUL in a topic name
      Buffer.concat([connectPacket('g4'), publishTo('a', 0x36)]),
      Buffer.concat([connectPacket('g5'), publishTo('a/#')]),
      Buffer.concat([connectPacket('g6'), publishTo('a\u0000b')]),
      // [MQTT-3.1.2-1] protocol name; [MQTT-3.1.2-3] reserved flag; [MQTT-3.1.2-13] will QoS without will; [MQTT-3.1.2-22] password without user name
      withConnectByte(4, 0x58),
      withConnectByte(9, 0x03),
      withConnectByte(9, 0x0a),
      withConnectByte(9, 0x42),
      // [MQTT-3.6.1-1] PUBREL flags must be 0010; [MQTT-3.14.1-1] DISCONNECT reserved bits
      Buffer.concat([connectPacket('g8'), Buffer.from([0x60, 0x02, 0x00, 0x01])]),
      Buffer.concat([connectPacket('g9'), Buffer.from([0xe1, 0x00])]),
      // a Remaining Length of five bytes [MQTT-2.2.3]
      Buffer.concat([connectPacket('g7'), Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x7f])]),
    ];
    for (const bytes of garbage) {
      const raw = await rawConnection(mqttPort);
      raw.socket.write(bytes);
      await raw.closed;
    }
    stop = true;
    await publishing;
    await eventually(() => expect(subscriber.texts()).toEqual(sent));
    expect(stats().malformedPackets).toBe(1);
    expect(subscriber.client.connected).toBe(true);
  });

  it('closes a connection whose CONNECT does not come within mqtt.connectTimeout, or whose keepalive lapses', async () => {
    // The second connection must get its CONNECT read within connectTimeout: long enough for a busy machine.
    const { mqttPort } = await start('mqtt: { connectTimeout: 1s }\ndefaultRoute: publish');
    const silent = await rawConnection(mqttPort);
    await silent.closed;
    expect(silent.received).toEqual([]);

    // [MQTT-3.12.4-1] PINGREQ gets PINGRESP; [MQTT-3.1.2-24] then nothing for one and a half
    // times the keepalive (1 s) closes the connection.
    const idle = await rawConnection(mqttPort);
    idle.socket.write(Buffer.concat([connectPacket('idle', { keepalive: 1 }), Buffer.from([0xc0, 0x00])]));
    await idle.closed;
    expect(Buffer.concat(idle.received)).toEqual(Buffer.from([0x20, 0x02, 0x00, 0x00, 0xd0, 0x00]));
  });

  it('drops QoS 0 deliveries to a subscriber that stopped reading, and only to it', async () => {
    const { mqtt, mqttPort } = await start('mqtt: { maxOutboundBuffer: 64kb }\ndefaultRoute: publish');
    const stalled = await rawConnection(mqttPort);
    stalled.socket.write(Buffer.concat([connectPacket('stalled'), subscribePacket('flood', 0)]));
    // CONNACK (4 bytes) and SUBACK (5 bytes), then it reads no more.
    await eventually(() => expect(Buffer.concat(stalled.received).length).toBe(9));
    stalled.socket.pause();
    const reader = await connectMqtt(mqtt);
    await reader.client.subscribeAsync('flood', { qos: 0 });
    const publisher = await connectMqtt(mqtt);
    const chunk = Buffer.alloc(64 * 1024);
    // Well over what the loopback socket buffers of the stalled client absorb. One at a time, each
    // sent once the reader has the one before: a reading subscriber is then never behind, however
    // busy the machine, so every drop is the stalled one's.
    const count = 500;
    for (let i = 0; i < count; i++) {
      const arrived = new Promise((resolve) => reader.client.once('message', resolve));
      publisher.client.publish('flood', chunk, { qos: 0 });
      await arrived;
    }
    expect(reader.messages).toHaveLength(count);
    expect(mqttStats(gw!.gateway).shed).toBeGreaterThan(0);
  });

  it('refuses an empty client id with a persistent session: CONNACK 0x02 [MQTT-3.1.3-8]', async () => {
    const { mqttPort } = await start('defaultRoute: publish');
    const raw = await rawConnection(mqttPort);
    raw.socket.write(connectPacket('', { clean: false }));
    await raw.closed;
    expect(Buffer.concat(raw.received)).toEqual(Buffer.from([0x20, 0x02, 0x00, 0x02]));
    // An empty id with a clean session is fine [MQTT-3.1.3-6].
    expect(await connackCode(gw!.mqtt, { clientId: '', clean: true })).toBe(0);
  });

  it('refuses subscriptions past mqtt.maxSubscriptions', async () => {
    const { mqtt } = await start('mqtt: { maxSubscriptions: 2 }\ndefaultRoute: publish');
    const first = await connectMqtt(mqtt);
    expect(await subscribeCodes(first.client, { a: { qos: 1 }, b: { qos: 1 }, c: { qos: 1 } })).toEqual([1, 1, 128]);
  });
});

describe('MQTT listener', () => {
  it('names the config key to change when its port is taken', async () => {
    const taken = createNetServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const port = (taken.address() as AddressInfo).port;
    try {
      const { config } = loadConfigText(`listeners: { mqtt: { host: 127.0.0.1, port: ${port} } }\nauth: { anonymous: true }\n`, join(tmpdir(), 'junction-mqtt-port.yaml'), {});
      await expect(Gateway.start(config, { logger: silentLogger(), registry: builtins }))
        .rejects.toThrow(`listeners.mqtt: 127.0.0.1:${port} is already in use; change listeners.mqtt.host/port in the config file`);
    } finally {
      await new Promise<void>((resolve) => taken.close(() => resolve()));
    }
  });
});

describe('MQTT and router refusals', () => {
  it('acknowledges and drops a publish that no rule takes under defaultRoute: drop, and counts it', async () => {
    const { mqtt } = await start('routes:\n  - { name: known, match: { key: "known/#" }, to: [publish] }\ndefaultRoute: drop');
    const subscriber = await connectMqtt(mqtt);
    await subscriber.client.subscribeAsync('#', { qos: 1 });
    const publisher = await connectMqtt(mqtt);
    await publisher.client.publishAsync('unknown/x', 'lost', { qos: 1 });
    await publisher.client.publishAsync('unknown/y', 'lost', { qos: 0 });
    await publisher.client.publishAsync('known/x', 'kept', { qos: 2 });
    await eventually(() => expect(subscriber.texts()).toEqual(['kept']));
    expect(mqttStats(gw!.gateway).refused.no_route).toBe(2);
    expect(publisher.client.connected).toBe(true);
  });

  /** A downstream that holds every request until released. */
  async function stalledDownstream() {
    const waiting: ServerResponse[] = [];
    const received: string[] = [];
    const server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push(Buffer.concat(chunks).toString());
        waiting.push(res);
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
      received,
      release() {
        for (const res of waiting.splice(0)) res.writeHead(204).end();
      },
      close: () => new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
    };
  }

  it('holds the acknowledgement of an overloaded QoS 1 publish until the target has room, keeping order', async () => {
    const downstream = await stalledDownstream();
    try {
      const { mqtt } = await start(`
targets:
  slow: { type: http, url: "${downstream.url}/in", timeout: 10s, concurrency: 1, queue: { maxSize: 1 } }
routes:
  - { name: slow, match: { key: "slow/#" }, to: [slow] }
`);
      const publisher = await connectMqtt(mqtt);
      const stats = () => mqttStats(gw!.gateway);
      // One in flight, one queued: the target is full.
      await publisher.client.publishAsync('slow/1', '1', { qos: 1 });
      await publisher.client.publishAsync('slow/2', '2', { qos: 1 });
      let thirdAcked = false;
      const third = publisher.client.publishAsync('slow/3', '3', { qos: 1 }).then(() => { thirdAcked = true; });
      const fourth = publisher.client.publishAsync('slow/4', '4', { qos: 1 });
      // QoS 0 cannot be held: dropped and counted (it queues behind the held one, so it is refused last).
      publisher.client.publish('slow/5', '5', { qos: 0 });
      await eventually(() => expect(stats().held).toBeGreaterThanOrEqual(1));
      expect(thirdAcked).toBe(false);
      expect(downstream.received).toEqual(['1']);

      // Each release frees room for the next held message, in the order they were sent.
      await eventually(() => {
        downstream.release();
        expect(downstream.received).toEqual(['1', '2', '3', '4']);
      }, 10_000);
      await third;
      await fourth;
      expect(stats().refused.overloaded ?? 0).toBe(1);
      expect(stats().holdTimeouts).toBe(0);
      expect(publisher.client.connected).toBe(true);
    } finally {
      downstream.release();
      await downstream.close();
    }
  });

  it('closes the connection of a publish still refused after mqtt.maxHold', async () => {
    const downstream = await stalledDownstream();
    try {
      const { mqtt } = await start(`
mqtt: { maxHold: 300ms }
targets:
  slow: { type: http, url: "${downstream.url}/in", timeout: 10s, concurrency: 1, queue: { maxSize: 1 } }
routes:
  - { name: slow, match: { key: "slow/#" }, to: [slow] }
`);
      const publisher = await connectMqtt(mqtt);
      await publisher.client.publishAsync('slow/1', '1', { qos: 1 });
      await publisher.client.publishAsync('slow/2', '2', { qos: 1 });
      const closed = new Promise<void>((resolve) => publisher.client.once('close', () => resolve()));
      publisher.client.publish('slow/3', '3', { qos: 1 });
      await closed;
      const stats = () => mqttStats(gw!.gateway);
      expect(stats().holdTimeouts).toBe(1);
      expect(stats().refused.overloaded).toBe(1);
    } finally {
      downstream.release();
      await downstream.close();
    }
  });
});
