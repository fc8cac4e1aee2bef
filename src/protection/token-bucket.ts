/**
 * Token buckets with lazy refill: a bucket is two numbers, refilled from the clock when it is
 * touched, so there is no timer per bucket. `take` answers "allowed" (0) or "retry in N ms"
 * instead of sleeping.
 */
export interface BucketSpec {
  /** tokens added per `perMs` */
  rate: number;
  perMs: number;
  /** capacity; a new bucket starts full */
  burst: number;
}

export class TokenBucket {
  tokens: number;
  updatedAt: number;

  constructor(readonly spec: BucketSpec, now: number) {
    this.tokens = spec.burst;
    this.updatedAt = now;
  }

  #refill(now: number): void {
    if (now > this.updatedAt) {
      this.tokens = Math.min(this.spec.burst, this.tokens + ((now - this.updatedAt) * this.spec.rate) / this.spec.perMs);
      this.updatedAt = now;
    }
  }

  /** 0 when a token was taken, else the ms until one will be there (nothing is taken) */
  take(now: number): number {
    this.#refill(now);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - this.tokens) * this.spec.perMs) / this.spec.rate));
  }

  /** when this bucket will be full again, left alone: until then its state matters */
  fullAt(): number {
    return this.updatedAt + ((this.spec.burst - this.tokens) * this.spec.perMs) / this.spec.rate;
  }
}

/**
 * Buckets by key (client, route, target), bounded in memory. Only buckets that have refilled
 * completely are evicted: forgetting a full bucket is the same as keeping it, so eviction can
 * never hand a client that drained its bucket a fresh one. When every slot holds a bucket that
 * still matters, new keys share one overflow bucket until slots free up.
 */
export class BucketMap {
  readonly #buckets = new Map<string, TokenBucket>();
  readonly #spec: BucketSpec;
  readonly #maxKeys: number;
  readonly #overflow: TokenBucket;
  #overflowed = 0;

  constructor(spec: BucketSpec, maxKeys = 100_000, now = Date.now()) {
    this.#spec = spec;
    this.#maxKeys = maxKeys;
    this.#overflow = new TokenBucket(spec, now);
  }

  get size(): number {
    return this.#buckets.size;
  }

  /** times a new key had to share the overflow bucket */
  get overflowed(): number {
    return this.#overflowed;
  }

  take(key: string, now = Date.now()): number {
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      if (this.#buckets.size >= this.#maxKeys) this.#evictFull(now);
      if (this.#buckets.size >= this.#maxKeys) {
        this.#overflowed++;
        return this.#overflow.take(now);
      }
      bucket = new TokenBucket(this.#spec, now);
      this.#buckets.set(key, bucket);
    }
    return bucket.take(now);
  }

  /**
   * Looks at a bounded number of the oldest buckets: full ones are dropped, the others move to
   * the back, so successive sweeps walk the whole map without one call paying for all of it.
   */
  #evictFull(now: number): void {
    let examined = 0;
    let freed = 0;
    for (const [key, bucket] of this.#buckets) {
      if (examined++ >= 32 || freed >= 8) break;
      this.#buckets.delete(key);
      if (bucket.fullAt() > now) this.#buckets.set(key, bucket);
      else freed++;
    }
  }
}
