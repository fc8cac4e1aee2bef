import { createServer, type AddressInfo } from 'node:net';
import { once } from 'node:events';
import { describe, expect, it } from 'vitest';
import { openRedisStores, type RedisStores, type RedisStoresOptions } from '../../src/cluster/stores.js';
import { GatewayError } from '../../src/errors.js';
import { eventually } from '../helpers/eventually.js';
import { redisForFile } from '../helpers/redis.js';
import { testMessage } from '../queue/messages.js';
import { appendAcked, takeMany, takeNext } from '../queue/store-suite.js';

// Durability across a Redis crash needs the append-only file, fsynced per write (docs/scale-out-stores.md).
const server = redisForFile({ appendOnly: true });

function options(keyPrefix: string, overrides: Partial<RedisStoresOptions> = {}): RedisStoresOptions {
  return {
    redis: server().url, keyPrefix, nodeId: 'node-a',
    deadletter: { maxBytes: 1024 * 1024, whenFull: 'refuse' },
    onError: () => undefined,
    ...overrides,
  };
}

describe('openRedisStores', () => {
  it('opens the three stores of a node on one connection of their own and closes it', async () => {
    const stores = await openRedisStores(options('factory1:'));
    const queue = stores.queues.queue('ingest');
    const message = testMessage();
    await appendAcked(queue, message);
    const record = await takeNext(queue);
    await stores.deadletter.append({ message, target: 'ingest', reason: 'failed', attempts: 1 });
    queue.settle(record, 'deadLettered');
    expect(await stores.buckets.bucket('target', 'ingest', { rate: 1, perMs: 60_000, burst: 1 }).take(0)).toBe(0);
    expect((await stores.deadletter.list()).map((listed) => listed.message.id)).toEqual([message.id]);
    await stores.close();
    const again = await openRedisStores(options('factory1:'));
    expect(again.queues.recovery.records).toBe(0);
    expect(await again.deadletter.list()).toHaveLength(1);
    await again.close();
  });

  it('says which Redis it cannot reach, without the credentials in its URL', async () => {
    const probe = createServer();
    probe.listen(0, '127.0.0.1');
    await once(probe, 'listening');
    const { port } = probe.address() as AddressInfo;
    await new Promise((resolve) => probe.close(resolve));
    const refused = openRedisStores(options('factory2:', { redis: `redis://user:s3cret@127.0.0.1:${port}` }));
    await expect(refused).rejects.toThrow(`cannot reach Redis at 127.0.0.1:${port}`);
    await expect(refused).rejects.not.toThrow('s3cret');
  });

  it('keeps every acknowledged record across a Redis crash, refuses appends while Redis is down and resumes by itself', async () => {
    let stores: RedisStores | undefined;
    try {
      stores = await openRedisStores(options('factory3:', { claimIdleMs: 60_000 }));
      const queue = stores.queues.queue('ingest');
      let memoryOnly = 0;
      /** One append: refused at once, kept in memory only after Redis failed to store it (the seam's rule), or stored. */
      const attempt = async (): Promise<'refused' | 'memory' | 'stored'> => {
        let durable: Promise<void> | undefined;
        try {
          durable = queue.append(testMessage()).durable;
        } catch (err) {
          expect((err as GatewayError).code).toBe('overloaded');
          return 'refused';
        }
        try {
          await durable;
          return 'stored';
        } catch {
          memoryOnly++;
          return 'memory';
        }
      };
      const acked = Array.from({ length: 50 }, () => testMessage());
      for (const message of acked) await appendAcked(queue, message);
      await server().kill();
      await eventually(async () => expect(await attempt()).toBe('refused'), 5000, 20);
      await server().start();
      await eventually(async () => expect(await attempt()).toBe('stored'), 10_000, 100);
      const held = await takeMany(queue, 51 + memoryOnly);
      expect(held.slice(0, 50).map((record) => record.message.id)).toEqual(acked.map((message) => message.id));
      for (const record of held) queue.settle(record, 'delivered');
      await stores.close();
      stores = undefined;

      // A node restarting under the same id reads back what it held: here, nothing unsettled is left.
      stores = await openRedisStores(options('factory3:'));
      expect(stores.queues.recovery.records).toBe(0);
    } finally {
      await stores?.close();
    }
  });

  it('gives a restarted node the records its earlier run held, after a Redis crash in between', async () => {
    const first = await openRedisStores(options('factory4:'));
    const acked = Array.from({ length: 20 }, () => testMessage());
    for (const message of acked) await appendAcked(first.queues.queue('ingest'), message);
    await takeMany(first.queues.queue('ingest'), 5);
    await server().kill();
    await server().start();
    await first.close();
    const second = await openRedisStores(options('factory4:'));
    try {
      expect(second.queues.recovery.records).toBe(20);
      const back = await takeMany(second.queues.queue('ingest'), 20);
      expect(back.map((record) => record.message.id)).toEqual(acked.map((message) => message.id));
    } finally {
      await second.close();
    }
  });
});
