import { once } from 'node:events';
import { Redis } from 'ioredis';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RateBucket } from '../../src/protection/rate-bucket.js';
import { RedisBucketFactory } from '../../src/protection/redis-bucket.js';
import type { BucketSpec } from '../../src/protection/token-bucket.js';
import { eventually } from '../helpers/eventually.js';
import { connectRedis, redisForFile } from '../helpers/redis.js';

const server = redisForFile();
let prefixes = 0;

/** Refills one token a minute: within a test's run the budget is the burst, whatever the machine's speed. */
const SLOW: BucketSpec = { rate: 1, perMs: 60_000, burst: 5 };

describe('token buckets on Redis', () => {
  let keyPrefix: string;
  let clients: Redis[];

  beforeEach(() => {
    keyPrefix = `rl${++prefixes}:`;
    clients = [];
  });

  afterEach(async () => {
    for (const client of clients) if (client.status === 'ready') await client.quit();
  });

  /** A node's factory: its own connection to the shared Redis. */
  async function node(onUnavailable?: (error: Error) => void): Promise<{ buckets: RedisBucketFactory; redis: Redis }> {
    const redis = await connectRedis(server());
    clients.push(redis);
    return { buckets: new RedisBucketFactory({ redis, keyPrefix, ...(onUnavailable ? { onUnavailable } : {}) }), redis };
  }

  it('gives two nodes one budget: the burst in total across concurrent takes, then the wait until the next token', async () => {
    const a = await node();
    const b = await node();
    // Typed as the limiter holds buckets, so either kind fits where a local one does.
    const onA: RateBucket = a.buckets.bucket('route', 'telemetry', SLOW);
    const onB: RateBucket = b.buckets.bucket('route', 'telemetry', SLOW);
    const waits = await Promise.all(Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? onA : onB).take(Date.now())));
    expect(waits.filter((wait) => wait === 0)).toHaveLength(5);
    for (const wait of waits.filter((w) => w > 0)) {
      expect(wait).toBeGreaterThan(59_000);
      expect(wait).toBeLessThanOrEqual(60_000);
    }
  });

  it('keeps scopes, names and specs apart', async () => {
    const a = await node();
    const one = { rate: 1, perMs: 60_000, burst: 1 };
    expect(await a.buckets.bucket('route', 'x', one).take(0)).toBe(0);
    expect(await a.buckets.bucket('route', 'x', one).take(0)).toBeGreaterThan(0);
    expect(await a.buckets.bucket('target', 'x', one).take(0)).toBe(0);
    expect(await a.buckets.bucket('route', 'y', one).take(0)).toBe(0);
    expect(await a.buckets.bucket('route', 'x', { ...one, burst: 2 }).take(0)).toBe(0);
  });

  it('refills from the clock, and forgets a bucket once it would be full again', async () => {
    const a = await node();
    const fast = a.buckets.bucket('target', 'ingest', { rate: 1, perMs: 50, burst: 1 });
    expect(await fast.take(0)).toBe(0);
    const wait = await fast.take(0);
    expect(wait).toBeGreaterThan(0);
    expect(wait).toBeLessThanOrEqual(50);
    const ttl = await a.redis.pttl(fast.key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(51);
    await eventually(async () => expect(await fast.take(0)).toBe(0), 2000, 10);
  });

  it('limits each node on its own while Redis cannot answer, and says so', async () => {
    const unavailable: Error[] = [];
    const a = await node((err) => unavailable.push(err));
    const bucket = a.buckets.bucket('route', 'telemetry', { rate: 1, perMs: 60_000, burst: 2 });
    const ended = once(a.redis, 'end');
    a.redis.disconnect();
    await ended;
    const now = Date.now();
    expect([await bucket.take(now), await bucket.take(now)]).toEqual([0, 0]);
    expect(await bucket.take(now)).toBeGreaterThan(0);
    expect(unavailable).toHaveLength(3);
  });
});
