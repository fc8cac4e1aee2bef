import type { Redis } from 'ioredis';
import { defineScript, type RedisScript } from '../cluster/redis-script.js';
import type { RateBucket } from './rate-bucket.js';
import { TokenBucket, type BucketSpec } from './token-bucket.js';

/** The scopes shared by every node; a client's bucket stays in the process its connection is on. */
export type SharedScope = 'route' | 'target';

/**
 * One take, atomic: refill from the Redis server's clock (one clock for every node, whatever
 * their own say), take a token or answer the wait. The key expires once the bucket would be full
 * again, and forgetting a full bucket is the same as keeping it.
 */
const TAKE_LUA = `
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + tonumber(time[2]) / 1000
local rate, per, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / per)
  at = now
end
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.max(1, math.ceil((1 - tokens) * per / rate))
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * per / rate) + 1)
return wait
`;

export interface RedisBucketOptions {
  /** a connected client; closing it is the caller's */
  redis: Redis;
  keyPrefix: string;
  /**
   * Redis could not answer a take: the bucket answered from this process's own bucket of the same
   * spec instead, so each node limits on its own until Redis is back.
   */
  onUnavailable?: (error: Error) => void;
}

/** A bucket every node takes from: one Lua script per take, no read-then-write between nodes. */
export class RedisTokenBucket implements RateBucket {
  readonly key: string;
  readonly spec: BucketSpec;
  readonly #redis: Redis;
  readonly #script: RedisScript;
  readonly #local: TokenBucket;
  readonly #onUnavailable: ((error: Error) => void) | undefined;

  constructor(redis: Redis, script: RedisScript, key: string, spec: BucketSpec, onUnavailable: ((error: Error) => void) | undefined) {
    this.#redis = redis;
    this.#script = script;
    this.key = key;
    this.spec = spec;
    this.#local = new TokenBucket(spec, Date.now());
    this.#onUnavailable = onUnavailable;
  }

  /** The Redis server's clock refills the bucket, so the caller's `now` is left to the fallback. */
  async take(now = Date.now()): Promise<number> {
    if (this.#redis.status !== 'ready') return this.#fallback(new Error('Redis is unavailable'), now);
    try {
      return await this.#script.run([this.key], [this.spec.rate, this.spec.perMs, this.spec.burst]) as number;
    } catch (err) {
      return this.#fallback(err as Error, now);
    }
  }

  #fallback(error: Error, now: number): number {
    this.#onUnavailable?.(error);
    return this.#local.take(now);
  }
}

/**
 * Makes the shared buckets of one cluster. A bucket's key holds its scope, its name and its spec,
 * so a reload that keeps a limit keeps its state, and nodes on two configs during a roll-out do
 * not share a bucket of two specs.
 */
export class RedisBucketFactory {
  readonly #options: RedisBucketOptions;
  readonly #script: RedisScript;

  constructor(options: RedisBucketOptions) {
    this.#options = options;
    this.#script = defineScript(options.redis, 'junctionBucketTake', 1, TAKE_LUA);
  }

  bucket(scope: SharedScope, name: string, spec: BucketSpec): RedisTokenBucket {
    const key = `${this.#options.keyPrefix}rl:${scope}:{${encodeURIComponent(name)}}:${spec.rate}/${spec.perMs}/${spec.burst}`;
    return new RedisTokenBucket(this.#options.redis, this.#script, key, spec, this.#options.onUnavailable);
  }
}
