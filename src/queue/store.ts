import type { Message } from '../message.js';

/**
 * Where an accepted message waits for its target: the seam under every target lane.
 *
 * The lifecycle of a record, for any store:
 *
 * ```
 * append ─▶ ready ─ take / evict ─▶ held ─ settle ─▶ gone
 *             ▲                      │
 *             └────── release ───────┘
 * ```
 *
 * What must hold for every implementation (test/queue/store-suite.ts checks it):
 * - `append` decides at once: it returns the record or throws a GatewayError `overloaded`, and a
 *   refused message is nowhere (not queued, not stored). The sender may be acknowledged once
 *   `append` returned and its `durable` promise, if any, resolved.
 * - `take` hands out ready records in priority order, 9 first, FIFO (append order) within a
 *   priority. It never waits: a store whose records arrive from elsewhere (another process, a
 *   server) may return nothing now and call the `onAvailable` listener later.
 * - A record stays the store's responsibility until it is settled. In a persistent store, every
 *   record not settled when the process stopped, however it stopped, is ready again on the next
 *   open, with the attempts recorded for it; taken-but-unsettled records included. A settled
 *   record may come back after a crash (delivery is at-least-once), an acknowledged one is never
 *   lost.
 * - QoS 0 records, and those appended as `transient`, are queued like the others but never
 *   stored: `append` gives them no `durable` promise and they do not survive a restart.
 * - Records of one target never come out of another target's queue.
 */
export interface QueueStore {
  /** what opening found: empty for a store that keeps nothing across restarts */
  readonly recovery: RecoveryReport;
  /**
   * The queue of one target, created empty on first use. Limits, when given, replace those given
   * before (a reload may change them); records already queued stay even past a new bound.
   */
  queue(target: string, limits?: QueueLimits): TargetQueue;
  /**
   * Stops the store: appends are refused with `overloaded` and take returns nothing. A persistent
   * store keeps its unsettled records for the next open; records settled after close may come back.
   */
  close(): Promise<void>;
}

export interface TargetQueue {
  readonly target: string;
  /** ready records */
  readonly size: number;
  /** bytes of the ready records (their stored size: what the byte bound counts) */
  readonly bytes: number;
  /** records taken or evicted and not yet settled */
  readonly held: number;

  /**
   * Queues the message before the sender is acknowledged. When the byte bound would be passed,
   * ready records of lower priority are evicted (newest of the lowest priority first) to make
   * room; when that cannot make room, or the storage refuses the write, it throws a GatewayError
   * `overloaded` and nothing was stored or evicted. A queue with no ready record takes any one
   * message, so a bound smaller than a message slows the target down instead of blocking it.
   */
  append(message: Message, options?: AppendOptions): Appended;
  /** whether `append` would take this message now, by the byte bound (storage faults aside) */
  canAccept(message: Message): boolean;
  /** whether a ready record of lower priority than `priority` exists: one `evict(priority)` would return */
  hasBelow(priority: number): boolean;
  /** the oldest ready record of the highest priority, now held; undefined when none is ready */
  take(): QueueRecord | undefined;
  /**
   * The newest ready record of the lowest priority below `priority`, now held (the caller gives
   * it up and settles it): the lane's shedding rule. Undefined when there is none.
   */
  evict(priority: number): QueueRecord | undefined;
  /** Puts a held record back at the end of its priority (a retry after backoff). */
  release(record: QueueRecord): void;
  /** Counts a call to the target for a held record, before the call; returns the new count. */
  recordAttempt(record: QueueRecord): number;
  /** Ends a held record's stay. Settling a record twice does nothing. */
  settle(record: QueueRecord, outcome: QueueOutcome): void;
  /**
   * The function to call when records became ready that `take` did not offer before, without an
   * append or release on this queue (records of another process, a takeover after a crash).
   * Local stores never call it: their records are ready the moment `append` or `release` returns.
   */
  onAvailable(listener: () => void): void;
}

export interface QueueRecord {
  readonly target: string;
  readonly message: Message;
  /** calls made to the target so far: restored by recovery */
  readonly attempts: number;
}

export interface AppendOptions {
  /**
   * Kept in memory only, as a QoS 0 message is: for a message whose sender waits for the
   * target's answer (a request), which a restart could not deliver to anyone.
   */
  transient?: boolean;
}

export interface Appended {
  record: QueueRecord;
  /**
   * Present when the sync policy makes the acknowledgement wait: resolves once the record is
   * durable by that policy, rejects with `overloaded` when it cannot be made so (the record then
   * stays queued: the sender retries and the target may get it twice).
   */
  durable?: Promise<void>;
  /** records evicted to make room, now held: the caller gives each up and settles it */
  shed: readonly QueueRecord[];
}

export interface QueueLimits {
  /** bound on the bytes of ready records; unbounded when absent */
  maxBytes?: number;
}

/** How a record's stay ended. */
export type QueueOutcome = 'delivered' | 'expired' | 'deadLettered' | 'rerouted' | 'returned';

/**
 * `none`: memory only, as before stores existed; `os`: each record is handed to the operating
 * system before the acknowledgement, so it survives a crash of the process; `fsync`: records are
 * flushed to the device in group commits before the acknowledgement, so they survive power loss.
 */
export type SyncPolicy = 'none' | 'os' | 'fsync';

export interface RecoveryReport {
  /** targets with unsettled records, in name order */
  targets: string[];
  /** unsettled records put back in their queues */
  records: number;
  /** damaged records skipped inside a segment, each counted once (a message among them is lost) */
  corrupt: number;
  /** incomplete records at the end of a segment (a crash mid-write: never acknowledged) */
  torn: number;
  /** segment files read */
  segments: number;
  durationMs: number;
}
