import type { GatewayConfig } from '../config/types.js';
import type { DeadLetterUsage, FillLevel } from '../deadletter/store.js';
import { SetupError } from '../errors.js';
import type { Logger } from '../log.js';
import { ThrottledLog } from '../throttled-log.js';
import { Cluster } from './cluster.js';
import { openRedisStores, type RedisStores } from './stores.js';

/** What cluster mode puts in place of the embedded parts: the bus and node (Cluster), and the stores on Redis. */
export interface ClusterNode {
  cluster: Cluster;
  stores: RedisStores;
  close(): Promise<void>;
}

/**
 * Joins the cluster of `config.cluster` and opens this node's stores on the same Redis: the queue
 * store (a stream per target), the dead-letter stream and the shared token buckets
 * (docs/scale-out.md). Either fails with a SetupError naming cluster.redis; nothing stays open.
 */
export async function openClusterNode(
  config: GatewayConfig & { cluster: NonNullable<GatewayConfig['cluster']> },
  logger: Logger,
  worker: number | undefined,
  onDeadLetterFill: (level: FillLevel, usage: DeadLetterUsage) => void,
): Promise<ClusterNode> {
  const cluster = await Cluster.open(config.cluster, logger, worker);
  const storeErrors = new ThrottledLog(logger, 'Redis store write failed');
  const bucketErrors = new ThrottledLog(logger, 'shared token bucket unreachable: this node limits on its own until Redis answers');
  let stores: RedisStores;
  try {
    stores = await openRedisStores({
      redis: config.cluster.redis,
      keyPrefix: config.cluster.keyPrefix,
      nodeId: cluster.nodeId,
      deadletter: { maxBytes: config.deadletter.maxBytes, whenFull: config.deadletter.whenFull, onFill: onDeadLetterFill },
      onError: (err) => storeErrors.report(err),
      onBucketUnavailable: (err) => bucketErrors.report(err),
    });
  } catch (err) {
    await cluster.close();
    throw new SetupError('cluster.redis', `the stores on Redis cannot be opened: ${(err as Error).message}`);
  }
  return {
    cluster,
    stores,
    async close() {
      await stores.close();
      await cluster.close();
    },
  };
}
