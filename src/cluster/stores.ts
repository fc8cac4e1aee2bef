import { Redis } from 'ioredis';
import { RedisDeadLetterStore } from '../deadletter/redis-store.js';
import type { DeadLetterUsage, FillLevel, WhenFull } from '../deadletter/store.js';
import { RedisBucketFactory } from '../protection/redis-bucket.js';
import { RedisQueueStore } from '../queue/redis-store.js';

/** A node silent this long loses the records it holds to the others (RedisQueueStoreOptions.claimIdleMs). */
export const DEFAULT_CLAIM_IDLE_MS = 10_000;
/** Bounds on one target's stored records, every node's together: Redis keeps them all in memory. */
export const DEFAULT_MAX_RECORDS_PER_TARGET = 1_000_000;
export const DEFAULT_MAX_STORED_BYTES_PER_TARGET = 256 * 1024 * 1024;
/** How long a store's own connection may take to reach Redis, and any command to be answered. */
const CONNECT_TIMEOUT_MS = 5000;
const COMMAND_TIMEOUT_MS = 5000;

export interface RedisStoresOptions {
  /**
   * A Redis URL (the stores open a connection of their own and close it) or a connection of the
   * caller's, which they leave open. A given connection should not queue commands while Redis is
   * away (enableOfflineQueue: false), so appends are refused at once instead of waiting, and must
   * not have ioredis's own keyPrefix option: the scripts name some keys themselves.
   */
  redis: string | Redis;
  keyPrefix: string;
  /** unique among the live processes sharing the prefix: a worker's own, not its machine's */
  nodeId: string;
  claimIdleMs?: number;
  maxRecordsPerTarget?: number;
  maxStoredBytesPerTarget?: number;
  deadletter: {
    maxBytes: number;
    whenFull: WhenFull;
    onFill?: (level: FillLevel, usage: DeadLetterUsage) => void;
  };
  /** a write with no sender left to tell failed (an attempt count, a settlement, a takeover sweep) */
  onError: (error: Error) => void;
  /** a shared bucket could not reach Redis and limited this node on its own */
  onBucketUnavailable?: (error: Error) => void;
}

/** What a cluster node keeps in Redis besides its bus (docs/scale-out-stores.md). */
export interface RedisStores {
  /** the queue store of every target lane, in place of the disk or memory store */
  queues: RedisQueueStore;
  /** both the dead-letter sink (appends) and the reader (list, replay marks) */
  deadletter: RedisDeadLetterStore;
  /** route- and target-scope buckets; client buckets stay local */
  buckets: RedisBucketFactory;
  /** stops the queue store (its records stay for the next open or for takeover), then closes a connection the stores opened */
  close(): Promise<void>;
}

/** Where a URL points, without the credentials it may carry: for messages. */
function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return 'the configured URL';
  }
}

async function connect(url: string): Promise<Redis> {
  const redis = new Redis(url, {
    lazyConnect: true,
    connectTimeout: CONNECT_TIMEOUT_MS,
    commandTimeout: COMMAND_TIMEOUT_MS,
    // Fail at once while Redis is away and drop commands cut off by a disconnection: an append is
    // refused or its sender told, never left waiting for a Redis that may not come back.
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
  });
  // Connection errors show in `status` and in each refused command; ioredis reconnects by itself.
  redis.on('error', () => undefined);
  try {
    await redis.connect();
  } catch (err) {
    redis.disconnect();
    throw new Error(`cannot reach Redis at ${hostOf(url)}: ${(err as Error).message}`, { cause: err });
  }
  return redis;
}

/** The stores on a connection; a store opened before a later one failed is closed again. */
async function openOn(redis: Redis, options: RedisStoresOptions): Promise<Omit<RedisStores, 'close'>> {
  const { keyPrefix } = options;
  const queues = await RedisQueueStore.open({
    redis,
    keyPrefix,
    nodeId: options.nodeId,
    claimIdleMs: options.claimIdleMs ?? DEFAULT_CLAIM_IDLE_MS,
    maxRecords: options.maxRecordsPerTarget ?? DEFAULT_MAX_RECORDS_PER_TARGET,
    maxStoredBytes: options.maxStoredBytesPerTarget ?? DEFAULT_MAX_STORED_BYTES_PER_TARGET,
    onError: options.onError,
  });
  try {
    const deadletter = await RedisDeadLetterStore.open({ redis, keyPrefix, ...options.deadletter });
    const buckets = new RedisBucketFactory({ redis, keyPrefix, ...(options.onBucketUnavailable ? { onUnavailable: options.onBucketUnavailable } : {}) });
    return { queues, deadletter, buckets };
  } catch (err) {
    await queues.close();
    throw err;
  }
}

/**
 * Opens the queue store, the dead-letter store and the bucket factory of one node on one Redis.
 * The queue store reads back the records this node id held before (its `recovery` says how many)
 * and starts taking over those of dead nodes.
 */
export async function openRedisStores(options: RedisStoresOptions): Promise<RedisStores> {
  const owned = typeof options.redis === 'string';
  const redis = typeof options.redis === 'string' ? await connect(options.redis) : options.redis;
  let stores: Omit<RedisStores, 'close'>;
  try {
    stores = await openOn(redis, options);
  } catch (err) {
    if (owned) redis.disconnect();
    throw err;
  }
  return {
    ...stores,
    async close() {
      await stores.queues.close();
      await stores.deadletter.close();
      if (owned) await redis.quit().catch(() => redis.disconnect());
    },
  };
}
