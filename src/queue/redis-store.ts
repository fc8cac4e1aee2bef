import type { Redis } from 'ioredis';
import { defineScript, type RedisScript } from '../cluster/redis-script.js';
import { GatewayError } from '../errors.js';
import { FrameBuffer, scanFrames, writeAppendFrame, type Frame } from './codec.js';
import { LocalQueueStore, LocalRecord, type Journal, type LocalTargetQueue } from './local-queue.js';
import type { QueueOutcome, RecoveryReport } from './store.js';

export interface RedisQueueStoreOptions {
  /** a connected client; the store defines its scripts on it and leaves closing it to the caller */
  redis: Redis;
  /** put before every key, so several gateways can share one Redis */
  keyPrefix: string;
  /** this process's name in the consumer groups: unique among the processes sharing the prefix */
  nodeId: string;
  /**
   * A node silent this long (its liveness key expired) is taken for dead: the others claim the
   * records it holds. Its liveness key is refreshed three times within this time.
   */
  claimIdleMs: number;
  /** bound on the stored records of one target, every node's together */
  maxRecords: number;
  /** bound on the stored bytes of one target, every node's together */
  maxStoredBytes: number;
  /** a write with no sender left to tell failed: an attempt count, a settlement, a takeover sweep */
  onError: (error: Error) => void;
}

/** The consumer group every node reads through. */
const GROUP = 'junction';
/** Records claimed from dead nodes per target per round of a sweep, and rounds per sweep. */
const CLAIM_BATCH = 1000;
const CLAIM_ROUNDS = 10;
/** Records a node reads back of its own per call at open. */
const RECOVER_BATCH = 1000;

/**
 * XADD and, in the same script, XREADGROUP for the appending node: every entry enters a node's
 * pending list the moment it exists, so no entry is ever waiting for "any consumer" (which another
 * node's read could take and deliver twice), and the appending node delivers without a round trip.
 * Refused (FULL) when the target's stored records or bytes, every node's together, are at the
 * bound, unless the stream is empty: as in every store, any one message fits an empty queue. A new
 * stream (the first append, or after the stream was deleted by hand) starts its byte count at 0.
 */
const APPEND_LUA = `
local stream = KEYS[1]
if redis.call('EXISTS', stream) == 0 then
  redis.call('XGROUP', 'CREATE', stream, ARGV[1], '$', 'MKSTREAM')
  redis.call('SET', KEYS[2], 0)
end
redis.call('SADD', KEYS[3], ARGV[7])
local bytes = tonumber(ARGV[4])
local count = redis.call('XLEN', stream)
local stored = tonumber(redis.call('GET', KEYS[2]) or '0')
if count > 0 and (count >= tonumber(ARGV[5]) or stored + bytes > tonumber(ARGV[6])) then
  return redis.error_reply('FULL')
end
local id = redis.call('XADD', stream, '*', 'r', ARGV[3])
redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', stream, '>')
redis.call('INCRBY', KEYS[2], bytes)
return id
`;

/** XACK, XDEL and the attempt count go together; the byte count drops once, whoever settles first. */
const SETTLE_LUA = `
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if redis.call('XDEL', KEYS[1], ARGV[2]) == 1 then
  redis.call('DECRBY', KEYS[2], ARGV[3])
end
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
`;

/**
 * Claims for ARGV[2] the pending entries of consumers whose liveness key is gone, idle at least
 * ARGV[4] ms, up to ARGV[5] of them; forgets dead consumers that hold nothing. Answers
 * { id, record, attempts } per claimed entry.
 *
 * The liveness key, not XAUTOCLAIM's idle time alone, says who is dead: an entry's idle time runs
 * from its delivery to the node, so a live node waiting on a slow target would lose its records.
 */
const TAKEOVER_LUA = `
local stream, group, me = KEYS[1], ARGV[1], ARGV[2]
local left = tonumber(ARGV[5])
local taken = {}
if redis.call('EXISTS', stream) == 0 then return taken end
for _, info in ipairs(redis.call('XINFO', 'CONSUMERS', stream, group)) do
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  local name = fields['name']
  if name ~= me and redis.call('EXISTS', ARGV[3] .. name) == 0 then
    if fields['pending'] == 0 then
      redis.call('XGROUP', 'DELCONSUMER', stream, group, name)
    elseif left > 0 then
      local ids = {}
      for _, pending in ipairs(redis.call('XPENDING', stream, group, 'IDLE', ARGV[4], '-', '+', left, name)) do
        ids[#ids + 1] = pending[1]
      end
      if #ids > 0 then
        for _, entry in ipairs(redis.call('XCLAIM', stream, group, me, ARGV[4], unpack(ids))) do
          taken[#taken + 1] = { entry[1], entry[2][2], redis.call('HGET', KEYS[2], entry[1]) or '0' }
          left = left - 1
        end
      end
    end
  end
end
return taken
`;

/** The keys of one target's queue; the hash tag keeps them in one slot should the keys ever be spread. */
function targetKeys(prefix: string, target: string): { stream: string; stored: string; attempts: string } {
  const tag = `${prefix}q:{${encodeURIComponent(target)}}`;
  return { stream: tag, stored: `${tag}:bytes`, attempts: `${tag}:attempts` };
}

/** Stream ids are `<ms>-<seq>`: append order within one stream. */
function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split('-').map(Number) as [number, number];
  const [bMs, bSeq] = b.split('-').map(Number) as [number, number];
  return aMs - bMs || aSeq - bSeq;
}

function decode(data: Buffer): Extract<Frame, { type: 'append' }> | undefined {
  let found: Extract<Frame, { type: 'append' }> | undefined;
  scanFrames(data, (frame) => {
    if (frame.type === 'append') found = frame;
  });
  return found;
}

/** A stored record as Redis gave it back: its entry id, its bytes, its attempt count. */
interface Entry {
  id: string;
  data: Buffer;
  attempts: number;
}

/** Where a record's entry is: known, or being written (the append script's answer: undefined when it failed). */
type Placement = { id: string } | { pending: Promise<string | undefined> };

/**
 * The cluster's queue store: a Redis stream per target, read through one consumer group shared by
 * every node, whose pending lists say which node holds which record (docs/scale-out-stores.md).
 * Records are ordered in the memory of the node holding them, as in the local stores; Redis keeps
 * each one from its append to its settlement, with its attempt count.
 */
export class RedisQueueStore extends LocalQueueStore {
  readonly #journal: RedisJournal;
  #recovery: RecoveryReport = { targets: [], records: 0, corrupt: 0, torn: 0, segments: 0, durationMs: 0 };

  private constructor(journal: RedisJournal) {
    super(journal);
    this.#journal = journal;
  }

  get recovery(): RecoveryReport {
    return this.#recovery;
  }

  /**
   * Marks this node alive, reads back the records its consumer still holds (those of an earlier
   * run under the same node id), then sweeps for dead nodes' records every third of claimIdleMs.
   */
  static async open(options: RedisQueueStoreOptions): Promise<RedisQueueStore> {
    const started = performance.now();
    const journal = new RedisJournal(options);
    const store = new RedisQueueStore(journal);
    await journal.heartbeat();
    let records = 0;
    const targets: string[] = [];
    for (const target of (await journal.targets()).sort()) {
      const entries = await journal.recoverOwn(target);
      const restored = store.#adopt(target, entries);
      store.#recovery.corrupt += entries.length - restored.length;
      for (const record of restored) store.queue(target).restore(record);
      if (restored.length > 0) targets.push(target);
      records += restored.length;
    }
    store.#recovery = { ...store.#recovery, targets, records, durationMs: performance.now() - started };
    journal.startSweeps((target, entries) => store.queue(target).arrive(store.#adopt(target, entries)));
    return store;
  }

  /** Records for entries in append order; an entry that does not decode is settled as lost. */
  #adopt(target: string, entries: Entry[]): LocalRecord[] {
    entries.sort((a, b) => compareIds(a.id, b.id));
    const queue: LocalTargetQueue = this.queue(target);
    const records: LocalRecord[] = [];
    for (const entry of entries) {
      const frame = decode(entry.data);
      if (!frame || frame.target !== target) {
        this.#journal.discard(target, entry.id, entry.data.length);
        continue;
      }
      const record = new LocalRecord(queue, frame.message, frame.bytes, entry.attempts, false);
      this.#journal.place(record, entry.id);
      records.push(record);
    }
    return records;
  }

  async close(): Promise<void> {
    this.closeQueues();
    await this.#journal.close();
  }
}

/** The Redis side of a record's life; the order of records lives in the queues. */
class RedisJournal implements Journal {
  readonly #redis: Redis;
  readonly #options: RedisQueueStoreOptions;
  readonly #append: RedisScript;
  readonly #settle: RedisScript;
  readonly #takeover: RedisScript;
  readonly #placements = new WeakMap<LocalRecord, Placement>();
  readonly #out = new FrameBuffer();
  /** writes not answered yet, which close waits for */
  readonly #inFlight = new Set<Promise<unknown>>();
  #sweepTimer: NodeJS.Timeout | undefined;
  /**
   * Since when every renewal of the liveness key succeeded. A node claims nothing until then plus
   * claimIdleMs: after a Redis outage (or at start) the other live nodes have had that long to
   * renew keys that expired meanwhile, so none of them is taken for dead.
   */
  #beatingSince: number | undefined;
  #sweeping: Promise<void> | undefined;
  #closed = false;

  constructor(options: RedisQueueStoreOptions) {
    this.#redis = options.redis;
    this.#options = options;
    this.#append = defineScript(this.#redis, 'junctionQueueAppend', 3, APPEND_LUA);
    this.#settle = defineScript(this.#redis, 'junctionQueueSettle', 3, SETTLE_LUA);
    this.#takeover = defineScript(this.#redis, 'junctionQueueTakeover', 2, TAKEOVER_LUA);
  }

  get #liveKeyPrefix(): string {
    return `${this.#options.keyPrefix}q:node:`;
  }

  get #targetsKey(): string {
    return `${this.#options.keyPrefix}q:targets`;
  }

  /** Renews this node's liveness key; a failure restarts the wait before this node may claim. */
  async heartbeat(): Promise<void> {
    try {
      await this.#redis.set(`${this.#liveKeyPrefix}${this.#options.nodeId}`, String(process.pid), 'PX', this.#options.claimIdleMs);
    } catch (err) {
      this.#beatingSince = undefined;
      throw err;
    }
    this.#beatingSince ??= Date.now();
  }

  targets(): Promise<string[]> {
    return this.#redis.smembers(this.#targetsKey);
  }

  append(record: LocalRecord): Promise<void> | undefined {
    if (record.transient) return undefined;
    if (this.#redis.status !== 'ready') {
      throw new GatewayError('overloaded', `Redis is unavailable: the queue of ${record.target} cannot store a message`, { retryAfterMs: 1000 });
    }
    const keys = targetKeys(this.#options.keyPrefix, record.target);
    this.#out.truncate(0);
    writeAppendFrame(this.#out, 0, 0, record.target, record.message, record.bytes);
    const data = Buffer.from(this.#out.bytes.subarray(0, this.#out.length));
    const written = this.#append.run(
      [keys.stream, keys.stored, this.#targetsKey],
      [GROUP, this.#options.nodeId, data, record.bytes, this.#options.maxRecords, this.#options.maxStoredBytes, record.target],
    ) as Promise<string>;
    const pending = this.#track(written.then((id) => {
      this.#placements.set(record, { id });
      return id;
    }, () => undefined));
    this.#placements.set(record, { pending });
    // The record stays queued here when the write fails: its sender is refused and retries.
    return written.then(() => undefined, (err: Error) => {
      throw new GatewayError('overloaded', err.message === 'FULL'
        ? `the queue of ${record.target} is full across the cluster (${this.#options.maxRecords} records or ${this.#options.maxStoredBytes} bytes)`
        : `Redis did not store a message for ${record.target}: ${err.message}`, { retryAfterMs: 1000 });
    });
  }

  /** Sent at once, before the call it counts, so a takeover after a crash during the call counts it. */
  attempt(record: LocalRecord): void {
    this.#withId(record, (id) => {
      const { attempts } = targetKeys(this.#options.keyPrefix, record.target);
      return this.#redis.hset(attempts, id, record.attempts);
    }, `attempt ${record.attempts} of message ${record.message.id} was not recorded`);
  }

  settle(record: LocalRecord, _outcome: QueueOutcome): void {
    this.#withId(record, (id) => this.#settleEntry(record.target, id, record.bytes), `the settlement of message ${record.message.id} was not recorded`);
    this.#placements.delete(record);
  }

  /** Records of this node's consumer from before: pending entries read back from the start of its history. */
  async recoverOwn(target: string): Promise<Entry[]> {
    const keys = targetKeys(this.#options.keyPrefix, target);
    const entries: Entry[] = [];
    // A stream deleted by hand has nothing to give back (and no group to read it through).
    if (await this.#redis.exists(keys.stream) === 0) return entries;
    let after = '0';
    // Each round reads entries after the last one read, so this ends with the pending list.
    for (;;) {
      const reply = await this.#redis.xreadgroupBuffer('GROUP', GROUP, this.#options.nodeId, 'COUNT', RECOVER_BATCH, 'STREAMS', keys.stream, after) as [Buffer, [Buffer, Buffer[] | null][]][] | null;
      const batch = reply?.[0]?.[1] ?? [];
      if (batch.length === 0) break;
      const ids = batch.map(([id]) => id.toString());
      const attempts = await this.#redis.hmget(keys.attempts, ...ids);
      batch.forEach(([, fields], i) => {
        // A pending entry deleted meanwhile (settled by a node that took it over) has no fields.
        if (fields) entries.push({ id: ids[i]!, data: fields[1]!, attempts: Number(attempts[i] ?? 0) });
        else this.discard(target, ids[i]!, 0);
      });
      after = ids.at(-1)!;
    }
    return entries;
  }

  /** Settles an entry that cannot be read (damaged, or deleted by another node), so it does not come back forever. */
  discard(target: string, id: string, bytes: number): void {
    this.#track(this.#settleEntry(target, id, bytes).catch((err: Error) => {
      this.#options.onError(new Error(`queue entry ${id} of ${target} was not removed`, { cause: err }));
    }));
  }

  place(record: LocalRecord, id: string): void {
    this.#placements.set(record, { id });
  }

  /** Refreshes the liveness key and claims dead nodes' records, every third of claimIdleMs. */
  startSweeps(arrived: (target: string, entries: Entry[]) => void): void {
    const schedule = () => {
      this.#sweepTimer = setTimeout(() => {
        this.#sweeping = this.#sweep(arrived).catch((err: Error) => {
          this.#options.onError(new Error('the queue takeover sweep failed', { cause: err }));
        }).finally(() => {
          this.#sweeping = undefined;
          if (!this.#closed) schedule();
        });
      }, this.#options.claimIdleMs / 3);
      this.#sweepTimer.unref();
    };
    schedule();
  }

  async #sweep(arrived: (target: string, entries: Entry[]) => void): Promise<void> {
    await this.heartbeat();
    if (Date.now() - this.#beatingSince! < this.#options.claimIdleMs) return;
    for (const target of await this.targets()) {
      const keys = targetKeys(this.#options.keyPrefix, target);
      // Bounded by CLAIM_ROUNDS: a dead node's large backlog is taken over across sweeps.
      for (let round = 0; round < CLAIM_ROUNDS && !this.#closed; round++) {
        const reply = await this.#takeover.runBuffer([keys.stream, keys.attempts], [GROUP, this.#options.nodeId, this.#liveKeyPrefix, this.#options.claimIdleMs, CLAIM_BATCH]) as [Buffer, Buffer, Buffer][];
        if (this.#closed) return;
        arrived(target, reply.map(([id, data, attempts]) => ({ id: id.toString(), data, attempts: Number(attempts.toString()) })));
        if (reply.length < CLAIM_BATCH) break;
      }
    }
  }

  #settleEntry(target: string, id: string, bytes: number): Promise<unknown> {
    const keys = targetKeys(this.#options.keyPrefix, target);
    return this.#settle.run([keys.stream, keys.stored, keys.attempts], [GROUP, id, bytes]);
  }

  /** Runs `write` once the record's entry id is known; a record never stored has nothing to write. */
  #withId(record: LocalRecord, write: (id: string) => Promise<unknown>, failure: string): void {
    const placement = this.#placements.get(record);
    if (!placement) return;
    const written = 'id' in placement ? write(placement.id) : placement.pending.then((id) => (id === undefined ? undefined : write(id)));
    this.#track(written.catch((err: Error) => this.#options.onError(new Error(failure, { cause: err }))));
  }

  #track<T>(work: Promise<T>): Promise<T> {
    this.#inFlight.add(work);
    void work.finally(() => this.#inFlight.delete(work)).catch(() => undefined);
    return work;
  }

  /**
   * Stops sweeping, waits for the writes under way and gives up the liveness key, so the records
   * this node still holds go to the others after claimIdleMs unless it comes back first.
   */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#sweepTimer);
    await this.#sweeping;
    // Each round waits for the writes seen so far; settling after close may start more, bounded by the records held.
    while (this.#inFlight.size > 0) await Promise.allSettled([...this.#inFlight]);
    await this.#redis.del(`${this.#liveKeyPrefix}${this.#options.nodeId}`).catch((err: Error) => {
      this.#options.onError(new Error('the liveness key was not removed', { cause: err }));
    });
  }
}
