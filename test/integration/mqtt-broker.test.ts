import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { builtins } from '../../src/builtins.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt, mqttStats, runMosquitto, startMosquittoSub } from '../helpers/mqtt.js';

/**
 * Plain broker behaviour through the router (`defaultRoute: publish`): what an MQTT 3.1.1 client
 * expects of any broker. One gateway for the file; every test uses topics of its own.
 */
describe('MQTT broker semantics through the router', () => {
  let gw: TestGateway;

  beforeAll(async () => {
    gw = await startGateway('defaultRoute: publish', builtins, { listeners: ['mqtt'] });
  });
  afterEach(closeClients);
  afterAll(async () => {
    await gw.stop();
  });

  it('delivers QoS 0, 1 and 2 once each, at the lower of the publish and subscription QoS', async () => {
    const stats = () => mqttStats(gw.gateway);
    const routedBefore = stats().routed;
    const at2 = await connectMqtt(gw.mqtt);
    await at2.client.subscribeAsync('qos/#', { qos: 2 });
    // A wildcard subscription: aedes alone would deliver QoS 2 to it [MQTT-3.8.4-6].
    const at1 = await connectMqtt(gw.mqtt);
    await at1.client.subscribeAsync('qos/+', { qos: 1 });
    const at0 = await connectMqtt(gw.mqtt);
    await at0.client.subscribeAsync('qos/x', { qos: 0 });
    const publisher = await connectMqtt(gw.mqtt);
    await publisher.client.publishAsync('qos/x', 'm0', { qos: 0 });
    await publisher.client.publishAsync('qos/x', 'm1', { qos: 1 });
    await publisher.client.publishAsync('qos/x', 'm2', { qos: 2 });
    // Sent last, at QoS 2, on the same topic: once it is in, anything sent twice would be too.
    await publisher.client.publishAsync('qos/x', 'end', { qos: 2 });

    for (const subscriber of [at2, at1, at0]) await eventually(() => expect(subscriber.texts()).toContain('end'));
    expect(at2.texts()).toEqual(['m0', 'm1', 'm2', 'end']);
    expect(at2.messages.map((m) => m.qos)).toEqual([0, 1, 2, 2]);
    expect(at1.texts()).toEqual(['m0', 'm1', 'm2', 'end']);
    expect(at1.messages.map((m) => m.qos)).toEqual([0, 1, 1, 1]);
    expect(at0.texts()).toEqual(['m0', 'm1', 'm2', 'end']);
    expect(at0.messages.map((m) => m.qos)).toEqual([0, 0, 0, 0]);
    expect(at2.messages.every((m) => !m.retain)).toBe(true);
    expect(stats().routed - routedBefore).toBe(4);
  });

  it('keeps the last retained message per topic for late subscribers until an empty one clears it', async () => {
    const live = await connectMqtt(gw.mqtt);
    await live.client.subscribeAsync('ret/+', { qos: 1 });
    const publisher = await connectMqtt(gw.mqtt);
    await publisher.client.publishAsync('ret/a', 'r1', { qos: 1, retain: true });
    await publisher.client.publishAsync('ret/a', 'r2', { qos: 1, retain: true });
    // A subscriber that was there gets them as ordinary messages [MQTT-3.3.1-9].
    await eventually(() => expect(live.messages.map((m) => [m.payload.toString(), m.retain])).toEqual([['r1', false], ['r2', false]]));

    // A late one gets only the last, flagged retained [MQTT-3.3.1-5], [MQTT-3.3.1-6], [MQTT-3.3.1-8],
    // though its publisher is gone: retained messages are not session state [MQTT-3.1.2-7].
    await publisher.client.endAsync();
    const late = await connectMqtt(gw.mqtt);
    await late.client.subscribeAsync('ret/#', { qos: 1 });
    await eventually(() => expect(late.messages).toHaveLength(1));
    expect(late.messages[0]).toMatchObject({ topic: 'ret/a', retain: true, qos: 1 });
    expect(late.texts()).toEqual(['r2']);

    // A retained message with an empty payload removes it and is not stored [MQTT-3.3.1-10], [MQTT-3.3.1-11].
    const clearer = await connectMqtt(gw.mqtt);
    await clearer.client.publishAsync('ret/a', '', { qos: 1, retain: true });
    const later = await connectMqtt(gw.mqtt);
    await later.client.subscribeAsync('ret/#', { qos: 1 });
    await clearer.client.publishAsync('ret/b', 'after', { qos: 1 });
    await eventually(() => expect(later.texts()).toEqual(['after']));
  });

  it('publishes a will when the connection drops, not after a DISCONNECT', async () => {
    const watcher = await connectMqtt(gw.mqtt);
    await watcher.client.subscribeAsync('will/+', { qos: 1 });
    const polite = await connectMqtt(gw.mqtt, { will: { topic: 'will/polite', payload: Buffer.from('gone'), qos: 1, retain: false } });
    await polite.client.endAsync();
    const abrupt = await connectMqtt(gw.mqtt, { will: { topic: 'will/abrupt', payload: Buffer.from('lost'), qos: 1, retain: false } });
    abrupt.client.stream.destroy();

    // [MQTT-3.1.2-8] on the dropped connection; [MQTT-3.1.2-10] no will after DISCONNECT (it would have come first).
    await eventually(() => expect(watcher.messages.map((m) => m.topic)).toEqual(['will/abrupt']));
    expect(watcher.texts()).toEqual(['lost']);
  });

  it('queues QoS 1 and 2 messages for a persistent session and delivers them, in order, on reconnect', async () => {
    const first = await connectMqtt(gw.mqtt, { clientId: 'persistent-1', clean: false });
    expect(first.sessionPresent).toBe(false);
    await first.client.subscribeAsync({ 'ps/one': { qos: 1 }, 'ps/two': { qos: 2 } });
    await first.client.endAsync();

    const publisher = await connectMqtt(gw.mqtt);
    await publisher.client.publishAsync('ps/one', 'a', { qos: 1 });
    await publisher.client.publishAsync('ps/two', 'b', { qos: 2 });
    await publisher.client.publishAsync('ps/one', 'c', { qos: 1 });

    // [MQTT-3.1.2-4], [MQTT-3.2.2-2]: the session is resumed, with its subscriptions and queue.
    const back = await connectMqtt(gw.mqtt, { clientId: 'persistent-1', clean: false });
    expect(back.sessionPresent).toBe(true);
    await eventually(() => expect(back.texts().sort()).toEqual(['a', 'b', 'c']));
    expect(back.wire()).toEqual(['a', 'b', 'c']);
    expect(back.messages.map((m) => [m.payload.toString(), m.qos])).toEqual(expect.arrayContaining([['a', 1], ['b', 2], ['c', 1]]));
    await publisher.client.publishAsync('ps/one', 'd', { qos: 1 });
    await eventually(() => expect(back.wire()).toEqual(['a', 'b', 'c', 'd']));
    await back.client.endAsync();

    // A clean session starts empty and discards the old one [MQTT-3.1.2-6], [MQTT-3.2.2-1].
    const clean = await connectMqtt(gw.mqtt, { clientId: 'persistent-1', clean: true });
    expect(clean.sessionPresent).toBe(false);
    await clean.client.endAsync();
    const again = await connectMqtt(gw.mqtt, { clientId: 'persistent-1', clean: false });
    expect(again.sessionPresent).toBe(false);
  });

  it('matches wildcards as MQTT does, keeps $ topics out of leading wildcards and refuses $SYS/ publishes as forbidden', async () => {
    const subscribe = async (filter: string) => {
      const client = await connectMqtt(gw.mqtt);
      await client.client.subscribeAsync(filter, { qos: 1 });
      return client;
    };
    const all = await subscribe('#');
    const plusX = await subscribe('+/x');
    const app = await subscribe('$app/#');
    const middle = await subscribe('w/+/b');
    const tree = await subscribe('w/#');
    const publisher = await connectMqtt(gw.mqtt);
    for (const topic of ['$app/x', 'w/a/b', 'w//b', 'w', 'w/a/b/c', 'w/end/b', 'end/x', '$app/end']) {
      await publisher.client.publishAsync(topic, topic, { qos: 1 });
    }
    // Each subscriber's last expected message was published last among those it matches.
    await eventually(() => {
      expect(all.texts().at(-1)).toBe('end/x');
      expect(plusX.texts().at(-1)).toBe('end/x');
      expect(app.texts().at(-1)).toBe('$app/end');
      expect(middle.texts().at(-1)).toBe('w/end/b');
      expect(tree.texts().at(-1)).toBe('w/end/b');
    });
    // [MQTT-4.7.2-1] no $ topic for # or +/...; [MQTT-4.7.1-2] # matches the parent level; + matches an empty level.
    expect(all.texts()).toEqual(['w/a/b', 'w//b', 'w', 'w/a/b/c', 'w/end/b', 'end/x']);
    expect(plusX.texts()).toEqual(['end/x']);
    expect(app.texts()).toEqual(['$app/x', '$app/end']);
    expect(middle.texts()).toEqual(['w/a/b', 'w//b', 'w/end/b']);
    expect(tree.texts()).toEqual(['w/a/b', 'w//b', 'w', 'w/a/b/c', 'w/end/b']);

    // $SYS/ is the broker's on every protocol: refused as forbidden, which 3.1.1 acknowledges and drops.
    const sys = await subscribe('$SYS/#');
    const intruder = await connectMqtt(gw.mqtt);
    await intruder.client.publishAsync('$SYS/fake', 'x', { qos: 1 });
    await intruder.client.publishAsync('w/after', 'after', { qos: 1 });
    await eventually(() => expect(tree.texts().at(-1)).toBe('after'));
    expect(sys.texts()).not.toContain('x');
    expect(intruder.client.connected).toBe(true);
  });

  it('hands a client id to the newest connection and closes the older one', async () => {
    const older = await connectMqtt(gw.mqtt, { clientId: 'same-id' });
    const olderClosed = new Promise<void>((resolve) => older.client.once('close', () => resolve()));
    const newer = await connectMqtt(gw.mqtt, { clientId: 'same-id' });
    // [MQTT-3.1.4-2]
    await olderClosed;
    await newer.client.subscribeAsync('takeover/t', { qos: 1 });
    const publisher = await connectMqtt(gw.mqtt);
    await publisher.client.publishAsync('takeover/t', 'still here', { qos: 1 });
    await eventually(() => expect(newer.texts()).toEqual(['still here']));
    expect(newer.client.connected).toBe(true);
  });

  it('works with Mosquitto\'s own mosquitto_pub and mosquitto_sub', async () => {
    const host = ['-h', '127.0.0.1', '-p', String(gw.mqttPort), '-V', 'mqttv311'];
    const sub = await startMosquittoSub([...host, '-t', 'mosq/#', '-q', '2', '-C', '3', '-v']);
    for (const [qos, text] of [['0', 'zero'], ['1', 'one'], ['2', 'two']] as const) {
      const pub = await runMosquitto('mosquitto_pub', [...host, '-t', `mosq/q${qos}`, '-m', text, '-q', qos, ...(qos === '2' ? ['-r'] : [])]);
      expect(pub.code).toBe(0);
    }
    const result = await sub.exited;
    expect(result.code).toBe(0);
    expect(sub.lines).toEqual(['mosq/q0 zero', 'mosq/q1 one', 'mosq/q2 two']);
    expect(sub.publishes.map((p) => [p.qos, p.retain])).toEqual([[0, false], [1, false], [2, false]]);

    // The retained one reaches a subscriber that comes later, flagged retained.
    const late = await runMosquitto('mosquitto_sub', [...host, '-t', 'mosq/+', '-q', '1', '-C', '1', '-v', '-d']);
    expect(late.code).toBe(0);
    expect(late.stdout).toContain('mosq/q2 two');
    expect(late.stdout).toMatch(/received PUBLISH \(d0, q1, r1, m\d+, 'mosq\/q2'/);
  });
});
