import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { RedisQueueStore, type RedisQueueStoreOptions } from '../../src/queue/redis-store.js';
import { eventually } from '../helpers/eventually.js';
import { connectRedis, redisForFile } from '../helpers/redis.js';
import { testMessage } from '../queue/messages.js';
import { appendAcked, describeQueueStore, takeMany, takeNext } from '../queue/store-suite.js';

/** Spawned from the build (`npm test` builds first). */
const CHILD = fileURLToPath(new URL('../queue/redis-store-child.mjs', import.meta.url));

const server = redisForFile();
let prefixes = 0;

function connect(): Promise<Redis> {
  return connectRedis(server());
}

function options(redis: Redis, keyPrefix: string, nodeId: string, overrides: Partial<RedisQueueStoreOptions> = {}): RedisQueueStoreOptions {
  return {
    redis, keyPrefix, nodeId, claimIdleMs: 30_000, maxRecords: 100_000, maxStoredBytes: 64 * 1024 * 1024,
    onError: (err) => { throw err; },
    ...overrides,
  };
}

describeQueueStore({
  name: 'redis streams',
  persistent: true,
  fixture: async () => {
    const redis = await connect();
    const keyPrefix = `suite${++prefixes}:`;
    return {
      open: () => RedisQueueStore.open(options(redis, keyPrefix, 'node-a')),
      cleanup: async () => { await redis.quit(); },
    };
  },
});

describe('redis queue store across nodes', () => {
  let keyPrefix: string;
  let clients: Redis[];
  let stores: RedisQueueStore[];

  beforeEach(() => {
    keyPrefix = `nodes${++prefixes}:`;
    clients = [];
    stores = [];
  });

  afterEach(async () => {
    for (const store of stores) await store.close();
    for (const client of clients) if (client.status === 'ready') await client.quit();
  });

  async function node(nodeId: string, overrides: Partial<RedisQueueStoreOptions> = {}): Promise<{ store: RedisQueueStore; redis: Redis }> {
    const redis = await connect();
    clients.push(redis);
    const store = await RedisQueueStore.open(options(redis, keyPrefix, nodeId, overrides));
    stores.push(store);
    return { store, redis };
  }

  it('hands a dead node\'s records, held and ready, to a live one with their attempts, once its liveness key expires', async () => {
    const lost: Error[] = [];
    const a = await node('node-a', { claimIdleMs: 300, onError: (err) => lost.push(err) });
    const b = await node('node-b', { claimIdleMs: 300 });
    const messages = Array.from({ length: 20 }, (_, i) => testMessage({ priority: i % 2 === 0 ? 5 : 1 }));
    const queueA = a.store.queue('ingest');
    for (const message of messages) await appendAcked(queueA, message);
    const held = await takeMany(queueA, 3);
    queueA.recordAttempt(held[0]!);
    queueA.recordAttempt(held[0]!);
    queueA.settle(held[2]!, 'delivered');
    await a.redis.ping();
    a.redis.disconnect();

    const queueB = b.store.queue('ingest');
    const taken = await eventually(async () => {
      expect(queueB.size).toBe(19);
      return takeMany(queueB, 19);
    }, 10_000, 50);
    const expected = messages.filter((message) => message.id !== held[2]!.message.id);
    expect(taken.map((record) => record.message.id).sort()).toEqual(expected.map((message) => message.id).sort());
    expect(taken.map((record) => record.message.priority)).toEqual([...Array(9).fill(5), ...Array(10).fill(1)]);
    expect(taken.find((record) => record.message.id === held[0]!.message.id)!.attempts).toBe(2);
    expect(taken.find((record) => record.message.id === held[1]!.message.id)!.attempts).toBe(0);
    expect(taken.find((record) => record.message.id === held[0]!.message.id)!.message).toEqual(held[0]!.message);
    for (const record of taken) queueB.settle(record, 'delivered');
    await b.redis.ping();
    expect(await b.redis.xlen(`${keyPrefix}q:{ingest}`)).toBe(0);
    expect(await b.redis.get(`${keyPrefix}q:{ingest}:bytes`)).toBe('0');
  });

  it('hands every record a node acknowledged and did not settle to the others after a kill -9 mid-stream', async () => {
    const survivor = await node('survivor', { claimIdleMs: 500 });
    const child = spawn(process.execPath, [CHILD, server().url, keyPrefix, 'doomed', '500'], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let partial = '';
    child.stdout.on('data', (chunk: Buffer) => {
      const complete = (partial + chunk.toString()).split('\n');
      partial = complete.pop()!;
      lines.push(...complete);
    });
    const ended = once(child, 'close');
    const ids = (kind: string) => lines.filter((line) => line.startsWith(`${kind} `)).map((line) => line.slice(kind.length + 1));
    try {
      await eventually(() => expect(ids('ack').length).toBeGreaterThanOrEqual(1000), 15_000, 20);
    } finally {
      child.kill('SIGKILL');
      await ended;
    }
    expect(lines.filter((line) => line.startsWith('error'))).toEqual([]);
    const settled = new Set(ids('settled'));
    const unsettled = ids('ack').filter((id) => !settled.has(id));
    expect(settled.size).toBeGreaterThan(0);

    const taken = new Set<string>();
    await eventually(async () => {
      for (const target of ['a', 'b']) {
        const queue = survivor.store.queue(target);
        for (let record = queue.take(); record; record = queue.take()) {
          taken.add(record.message.id);
          queue.settle(record, 'delivered');
        }
      }
      expect(unsettled.filter((id) => !taken.has(id))).toEqual([]);
    }, 15_000, 50);
    // Settlements sent after the last acknowledged batch may not have run: at most one turn's (4).
    expect([...taken].filter((id) => settled.has(id)).length).toBeLessThanOrEqual(4);
    // A batch stored but not yet acknowledged when the kill came is delivered too: at most one (20).
    const acked = new Set(ids('ack'));
    expect([...taken].filter((id) => !acked.has(id)).length).toBeLessThanOrEqual(20);
  });

  it('leaves a live node\'s records with it however long they wait', async () => {
    const a = await node('node-a', { claimIdleMs: 1000 });
    const b = await node('node-b', { claimIdleMs: 1000 });
    const queueA = a.store.queue('ingest');
    await appendAcked(queueA, testMessage());
    const record = await takeNext(queueA);
    const pendingOfA = () => b.redis.xpending(`${keyPrefix}q:{ingest}`, 'junction', 'IDLE', 1000, '-', '+', 10, 'node-a');
    await eventually(async () => expect(await pendingOfA()).toHaveLength(1), 5000, 100);
    // Two of b's sweeps (one every third of claimIdleMs) after the record passed the idle time.
    await new Promise((resolve) => setTimeout(resolve, 800));
    expect(b.store.queue('ingest').size).toBe(0);
    expect(await pendingOfA()).toHaveLength(1);
    queueA.settle(record, 'delivered');
  });

  it('bounds the records of a target across nodes: the append past the bound is refused and stays with its node only', async () => {
    const a = await node('node-a', { maxRecords: 2 });
    const b = await node('node-b', { maxRecords: 2 });
    await appendAcked(a.store.queue('ingest'), testMessage());
    await appendAcked(b.store.queue('ingest'), testMessage());
    const refused = b.store.queue('ingest').append(testMessage());
    await expect(refused.durable).rejects.toMatchObject({ code: 'overloaded' });
    expect(await a.redis.xlen(`${keyPrefix}q:{ingest}`)).toBe(2);
    expect(b.store.queue('ingest').size).toBe(2);
  });

  it('opens with nothing to read back for a target whose stream was deleted by hand', async () => {
    const a = await node('node-a');
    await appendAcked(a.store.queue('ingest'), testMessage());
    await a.store.close();
    await a.redis.del(`${keyPrefix}q:{ingest}`);
    const again = await node('node-a');
    expect(again.store.recovery).toMatchObject({ targets: [], records: 0 });
    const { record } = await appendAcked(again.store.queue('ingest'), testMessage());
    expect(await again.redis.get(`${keyPrefix}q:{ingest}:bytes`)).toBe(String(again.store.queue('ingest').bytes));
    expect((await takeNext(again.store.queue('ingest'))).message.id).toBe(record.message.id);
  });

  it('refuses an append with overloaded at once while Redis is unreachable', async () => {
    const a = await node('node-a', { onError: () => undefined });
    const ended = once(a.redis, 'end');
    a.redis.disconnect();
    await ended;
    let thrown: unknown;
    try {
      a.store.queue('ingest').append(testMessage());
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(GatewayError);
    expect((thrown as GatewayError).code).toBe('overloaded');
    expect(a.store.queue('ingest').size).toBe(0);
  });
});
