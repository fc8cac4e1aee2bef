import { Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';
import type { BusOrigin } from '../../src/bus/index.js';
import { createMessage, type Message } from '../../src/message.js';
import { eventually } from '../helpers/eventually.js';
import { RedisBus } from '../../src/bus/redis-bus.js';
import { busSuite } from '../bus/bus-suite.js';
import { redisForFile } from '../helpers/redis.js';

const redis = redisForFile();
let runs = 0;

/** One node of a cluster: its own two connections and its own id, on the test's Redis. */
async function node(nodeId: string, prefix: string): Promise<{ bus: RedisBus; command: Redis; quit(): Promise<void> }> {
  const command = new Redis(redis().url, { enableOfflineQueue: false, lazyConnect: true });
  const subscriber = new Redis(redis().url, { lazyConnect: true });
  await Promise.all([command.connect(), subscriber.connect()]);
  const bus = new RedisBus({ command, subscriber, nodeId, prefix, live: () => true, onError: () => undefined });
  await bus.open();
  return {
    bus,
    command,
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

describe('RedisBus origins and notes', () => {
  it('gives each QoS ≥ 1 message one origin on every node, counting up in publish order; QoS 0 has none', async () => {
    const prefix = `origin${++runs}:`;
    const a = await node('a', prefix);
    const b = await node('b', prefix);
    try {
      const seen = { a: [] as [string, BusOrigin | undefined][], b: [] as [string, BusOrigin | undefined][] };
      await a.bus.subscribeAll((m, origin) => seen.a.push([m.payload.toString(), origin]));
      await b.bus.subscribeAll((m, origin) => seen.b.push([m.payload.toString(), origin]));
      await a.bus.publish(message('t/1', 'one', 1));
      await a.bus.publish(message('t/2', 'zero', 0));
      await a.bus.publish(message('t/1', 'two', 2));
      await eventually(() => expect(seen.b).toHaveLength(3));
      expect(seen.b).toEqual(seen.a);
      const [[, first], [, none], [, second]] = seen.a as [[string, BusOrigin], [string, undefined], [string, BusOrigin]];
      expect(none).toBeUndefined();
      expect(first.publisher).toMatch(/^a\./);
      expect(second).toEqual({ publisher: first.publisher, sequence: first.sequence + 1 });
      // A new start of node a counts anew, under another publisher: counts seen before do not hide its messages.
      await a.quit();
      const again = await node('a', prefix);
      try {
        await again.bus.publish(message('t/1', 'three', 1));
        await eventually(() => expect(seen.b).toHaveLength(4));
        expect(seen.b[3]![1]!.publisher).not.toBe(first.publisher);
      } finally {
        await again.quit();
      }
    } finally {
      await b.quit();
    }
  });

  it('carries a note to every other node, not back to its sender', async () => {
    const prefix = `note${++runs}:`;
    const notes: string[] = [];
    const command = new Redis(redis().url, { enableOfflineQueue: false, lazyConnect: true });
    const subscriber = new Redis(redis().url, { lazyConnect: true });
    await Promise.all([command.connect(), subscriber.connect()]);
    const listener = new RedisBus({ command, subscriber, nodeId: 'l', prefix, live: () => true, onError: () => undefined, onBroadcast: (body, from) => notes.push(`${from}:${body.toString()}`) });
    await listener.open();
    const sender = await node('s', prefix);
    try {
      await listener.broadcast(Buffer.from('own'));
      await sender.bus.broadcast(Buffer.from('hello'));
      await eventually(() => expect(notes).toContain('s:hello'));
      expect(notes).toEqual(['s:hello']);
    } finally {
      await listener.close();
      command.disconnect();
      subscriber.disconnect();
      await sender.quit();
    }
  });
});

describe('RedisBus writes', () => {
  it('sends the publishes of one turn of the event loop to Redis in one write, in order', async () => {
    const prefix = `batch${++runs}:`;
    const a = await node('a', prefix);
    const b = await node('b', prefix);
    try {
      const texts: string[] = [];
      await b.bus.subscribe('t/#', (m) => texts.push(m.payload.toString()));
      // Each write to the socket, by the number of commands (one chunk each) it carries.
      const writes: number[] = [];
      const socket = a.command.stream;
      const write = socket._write.bind(socket);
      const writev = socket._writev!.bind(socket);
      socket._write = (chunk, encoding, done) => {
        writes.push(1);
        write(chunk, encoding, done);
      };
      socket._writev = (chunks, done) => {
        writes.push(chunks.length);
        writev(chunks, done);
      };
      const sent = Array.from({ length: 20 }, (_, i) => String(i));
      await Promise.all(sent.map((text, i) => a.bus.publish(message('t/1', text, i % 2))));
      expect(writes[0]).toBe(20);
      await eventually(() => expect(texts).toHaveLength(20));
      expect(texts).toEqual(sent);
    } finally {
      await a.quit();
      await b.quit();
    }
  });
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
      const sequences: number[] = [];
      await receiver.subscribe('t/#', (m, origin) => {
        texts.push(m.payload.toString());
        sequences.push(origin!.sequence);
      });
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
      // Read back from the stream, they keep their origin: the sender's count of its QoS ≥ 1 messages.
      expect(sequences).toEqual([1, 2, 3, 4, 5, 6, 7]);
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
