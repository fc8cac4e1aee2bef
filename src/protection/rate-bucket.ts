/**
 * A token bucket as the limiter and the target lanes use it: `take` answers 0 when a token was
 * taken, else the ms until one will be there (nothing is taken). TokenBucket answers at once from
 * this process's memory; RedisTokenBucket answers after one script on the Redis every node shares.
 */
export interface RateBucket {
  take(now: number): number | Promise<number>;
}
