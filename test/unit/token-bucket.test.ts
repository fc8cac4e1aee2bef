import { describe, expect, it } from 'vitest';
import { BucketMap, TokenBucket } from '../../src/protection/token-bucket.js';

describe('TokenBucket', () => {
  it('starts full, refills lazily from the clock, and says how long to wait', () => {
    const bucket = new TokenBucket({ rate: 10, perMs: 1000, burst: 3 }, 0);
    expect([bucket.take(0), bucket.take(0), bucket.take(0)]).toEqual([0, 0, 0]);
    expect(bucket.take(0)).toBe(100);
    expect(bucket.take(50)).toBe(50);
    expect(bucket.take(100)).toBe(0);
    // Refill never exceeds the burst, however long the bucket sat idle.
    expect(bucket.take(1_000_000)).toBe(0);
    expect(bucket.take(1_000_000)).toBe(0);
    expect(bucket.take(1_000_000)).toBe(0);
    expect(bucket.take(1_000_000)).toBeGreaterThan(0);
  });
});

describe('BucketMap', () => {
  const spec = { rate: 1, perMs: 1000, burst: 2 };

  it('keeps one bucket per key', () => {
    const map = new BucketMap(spec, 10, 0);
    expect([map.take('a', 0), map.take('a', 0), map.take('a', 0) > 0]).toEqual([0, 0, true]);
    expect(map.take('b', 0)).toBe(0);
  });

  it('stays bounded with a million distinct clients', () => {
    const map = new BucketMap(spec, 1000, 0);
    for (let i = 0; i < 1_000_000; i++) map.take(`client-${i}`, i);
    expect(map.size).toBeLessThanOrEqual(1000);
  });

  it('never hands a client that drained its bucket a fresh one, however many others arrive', () => {
    const map = new BucketMap(spec, 100, 0);
    map.take('abuser', 0);
    map.take('abuser', 0);
    expect(map.take('abuser', 0)).toBeGreaterThan(0);
    // A flood of new keys at the same instant: the drained bucket must survive eviction.
    for (let i = 0; i < 10_000; i++) map.take(`new-${i}`, 0);
    expect(map.take('abuser', 0)).toBeGreaterThan(0);
    expect(map.overflowed).toBeGreaterThan(0);
    // Once refilled, forgetting it is harmless.
    expect(map.take('abuser', 2000)).toBe(0);
  });
});
