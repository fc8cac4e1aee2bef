import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import { createMessage, type Message } from '../../src/message.js';
import { eventually } from '../helpers/eventually.js';
import { RedisBus } from '../../src/bus/redis-bus.js';
import { busSuite } from '../bus/bus-suite.js';
import { redisForFile } from '../helpers/redis.js';

const redis = redisForFile();
let runs = 0;

/** One node of a cluster: its own two connections and its own id, on the test's Redis. */
async function node(nodeId: string, prefix: string): Promise<{ bus: RedisBus; quit(): Promise<void> }> {
  const command = new Redis(redis().url, { enableOfflineQueue: false, lazyConnect: true });
  const subscriber = new Redis(redis().url, { lazyConnect: true });
  await Promise.all([command.connect(), subscriber.connect()]);
  const bus = new RedisBus({ command, subscriber, nodeId, prefix, live: () => true, onError: () => undefined });
  await bus.open();
  return {
    bus,
    async quit() {
      await bus.close();
      command.disconnect();
      subscriber.disconnect();
    },
  };
}

busSuite('across nodes (RedisBus)', async () => {
  const prefix = `suite${++runs}:`;
  const a = await node('a', prefix);
  const b = await node('b', prefix);
  return { bus: a.bus, peer: b.bus, dispose: async () => { await a.quit(); await b.quit(); } };
});

describe('RedisBus after a lost subscriber connection', () => {
  it('hands over the QoS 1 messages published meanwhile, once each and in order, and not the QoS 0 ones', async () => {
    const prefix = `reconnect${++runs}:`;
    const command = new Redis(redis().url, { enableOfflineQueue: false, lazyConnect: true });
    const subscriber = new Redis(redis().url, { lazyConnect: true });
    await Promise.all([command.connect(), subscriber.connect()]);
    const receiver = new RedisBus({ command, subscriber, nodeId: 'r', prefix, live: () => true, onError: () => undefined });
    await receiver.open();
    const sender = await node('s', prefix);
    try {
      const texts: string[] = [];
      await receiver.subscribe('t/#', (m) => texts.push(m.payload.toString()));
      await sender.bus.publish(message('t/1', 'before', 1));
      await eventually(() => expect(texts).toEqual(['before']));
      // Closed by hand, it stays down until connect(): the publishes below happen while it is.
      subscriber.disconnect();
      await eventually(() => expect(subscriber.status).toBe('end'));
      for (let i = 0; i < 5; i++) await sender.bus.publish(message('t/1', `q1-${i}`, 1));
      await sender.bus.publish(message('t/1', 'q0', 0));
      await subscriber.connect();
      await sender.bus.publish(message('t/1', 'after', 1));
      await eventually(() => expect(texts).toContain('after'));
      expect(texts).toEqual(['before', 'q1-0', 'q1-1', 'q1-2', 'q1-3', 'q1-4', 'after']);
    } finally {
      await receiver.close();
      command.disconnect();
      subscriber.disconnect();
      await sender.quit();
    }
  });
});

function message(key: string, text: string, qos: number): Message {
  return createMessage({ key, payload: Buffer.from(text), qos, source: { protocol: 'internal' } });
}
