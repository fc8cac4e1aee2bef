import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RedisDeadLetterStore, type RedisDeadLetterOptions } from '../../src/deadletter/redis-store.js';
import { messageOf } from '../../src/deadletter/replay.js';
import type { DeadLetterUsage, FillLevel } from '../../src/deadletter/store.js';
import { createMessage, type Message } from '../../src/message.js';
import { connectRedis, redisForFile } from '../helpers/redis.js';

const server = redisForFile();
let prefixes = 0;

function message(n: number): Message {
  // Same-sized records, so bounds count in records.
  return createMessage({ key: `jobs/${String(n).padStart(4, '0')}`, payload: Buffer.alloc(200, n % 256), qos: 1, source: { protocol: 'internal' } });
}

describe('dead-letter store on a Redis stream', () => {
  let keyPrefix: string;
  let clients: Redis[];
  let levels: [FillLevel, DeadLetterUsage][];

  beforeEach(() => {
    keyPrefix = `dl${++prefixes}:`;
    clients = [];
    levels = [];
  });

  afterEach(async () => {
    for (const client of clients) await client.quit();
  });

  /** A node's store: its own connection to the shared Redis. */
  async function node(options: Partial<RedisDeadLetterOptions> = {}): Promise<RedisDeadLetterStore> {
    const redis = await connectRedis(server());
    clients.push(redis);
    return RedisDeadLetterStore.open({ redis, keyPrefix, maxBytes: 1e9, whenFull: 'refuse', onFill: (level, usage) => levels.push([level, usage]), ...options });
  }

  async function append(store: RedisDeadLetterStore, from: number, count: number): Promise<void> {
    for (let n = from; n < from + count; n++) await store.append({ message: message(n), target: 't', reason: 'failed', attempts: 1 });
  }

  /** The bytes one record counts for, measured in a stream of its own. */
  async function recordBytes(): Promise<number> {
    const probe = await node();
    await append(probe, 0, 1);
    const bytes = probe.usage.bytes;
    keyPrefix = `dl${++prefixes}:`;
    return bytes;
  }

  it('lists every node\'s records from any node, oldest first, field for field, and shares the replayed marks', async () => {
    const a = await node();
    const b = await node();
    const sent = [message(1), message(2), message(3)];
    await a.append({ message: sent[0]!, target: 'billing', reason: 'retries_exhausted', attempts: 3, error: 'HTTP 503' });
    await b.append({ message: sent[1]!, target: 'ingest', reason: 'expired', attempts: 0 });
    await a.append({ message: sent[2]!, target: 'billing', reason: 'breaker_open', attempts: 1 });

    const listed = await b.list();
    expect(listed.map((record) => messageOf(record))).toEqual(sent);
    expect(listed[0]).toMatchObject({ target: 'billing', reason: 'retries_exhausted', attempts: 3, error: 'HTTP 503', replayed: false });
    expect((await a.list({ target: 'billing' })).map((record) => record.message.id)).toEqual([sent[0]!.id, sent[2]!.id]);
    expect((await a.list({ reason: 'expired' })).map((record) => record.message.id)).toEqual([sent[1]!.id]);
    expect(await a.list({}, 2)).toHaveLength(2);

    await a.markReplayed([listed[0]!.recordId]);
    expect((await b.list({ pendingOnly: true })).map((record) => record.message.id)).toEqual([sent[1]!.id, sent[2]!.id]);
    expect((await b.list({ recordIds: [listed[0]!.recordId] }))[0]!.replayed).toBe(true);
  });

  it('lists past one read batch', async () => {
    const a = await node();
    await append(a, 0, 1200);
    const listed = await a.list({}, 5000);
    expect(listed).toHaveLength(1200);
    expect(listed.at(-1)!.message.key).toBe('jobs/1199');
  });

  it('refuses records at maxBytes, every node\'s counted together (policy refuse), and says so at 80 % and at the bound', async () => {
    const bytes = await recordBytes();
    const a = await node({ maxBytes: 3 * bytes });
    const b = await node({ maxBytes: 3 * bytes });
    await append(a, 0, 2);
    await append(b, 2, 1);
    await expect(a.append({ message: message(3), target: 't', reason: 'failed', attempts: 1 })).rejects.toMatchObject({ code: 'overloaded', details: { deadLetterFull: true } });
    expect(a.usage).toMatchObject({ bytes: 3 * bytes, maxBytes: 3 * bytes, written: 2, refused: 1, dropped: 0 });
    // b's append crossed 80 %, a's refusal hit the bound: each node says what its own appends saw.
    expect(levels.map(([level]) => level)).toEqual(['high', 'full']);
    expect((await b.list()).map((record) => record.message.key)).toEqual(['jobs/0000', 'jobs/0001', 'jobs/0002']);
  });

  it('deletes the oldest records to make room (policy dropOldest), counting them, their replayed marks with them', async () => {
    const bytes = await recordBytes();
    const a = await node({ maxBytes: 3 * bytes, whenFull: 'dropOldest' });
    await append(a, 0, 3);
    const [oldest] = await a.list();
    await a.markReplayed([oldest!.recordId]);
    await append(a, 3, 2);
    expect((await a.list()).map((record) => record.message.key)).toEqual(['jobs/0002', 'jobs/0003', 'jobs/0004']);
    expect(a.usage).toMatchObject({ bytes: 3 * bytes, dropped: 2, refused: 0, written: 5 });
    expect(a.level).toBe('full');
    expect(await clients[0]!.sismember(`${keyPrefix}dl:replayed`, oldest!.recordId)).toBe(0);
  });
});
