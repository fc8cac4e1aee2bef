import type { Redis } from 'ioredis';
import { defineScript, type RedisScript } from '../cluster/redis-script.js';
import { GatewayError } from '../errors.js';
import { selected, type DeadLetterFilter, type DeadLetterReader, type ListedRecord } from './replay.js';
import {
  deadLetterRecord, levelAfterWrite, type DeadLetterEntry, type DeadLetterRecord, type DeadLetterSink, type DeadLetterUsage, type FillLevel, type WhenFull,
} from './store.js';

export interface RedisDeadLetterOptions {
  /** a connected client; closing it is the caller's */
  redis: Redis;
  keyPrefix: string;
  /** bound on the stored records' bytes, every node's together */
  maxBytes: number;
  whenFull: WhenFull;
  /** a change of fill level, as seen by this node's appends */
  onFill?: (level: FillLevel, usage: DeadLetterUsage) => void;
}

/** Entries a listing reads per call. */
const LIST_BATCH = 500;

/**
 * Stores one record if it fits under ARGV[3] bytes, after deleting the oldest records first under
 * `dropOldest` (their replayed marks go with them). Answers { stored 1|0, bytes stored, records
 * dropped }. An empty stream counts as empty whatever the counter says, so deleting the stream
 * (an operator freeing space) resets the count.
 */
const APPEND_LUA = `
local size, max = tonumber(ARGV[2]), tonumber(ARGV[3])
local stored = 0
if redis.call('XLEN', KEYS[1]) > 0 then stored = tonumber(redis.call('GET', KEYS[2]) or '0') end
local dropped = 0
if stored + size > max and ARGV[4] == 'dropOldest' then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  while stored + size > max and #oldest > 0 do
    local id, fields = oldest[1][1], oldest[1][2]
    redis.call('XDEL', KEYS[1], id)
    redis.call('SREM', KEYS[3], fields[2])
    stored = stored - string.len(fields[4])
    dropped = dropped + 1
    oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
  end
end
if stored + size > max then
  redis.call('SET', KEYS[2], stored)
  return { 0, stored, dropped }
end
redis.call('XADD', KEYS[1], '*', 'id', ARGV[5], 'r', ARGV[1])
redis.call('SET', KEYS[2], stored + size)
return { 1, stored + size, dropped }
`;

/**
 * The dead-letter store of a cluster: one Redis stream every node appends to and lists from,
 * bounded by the bytes of its records with the same `whenFull` policies as the files, and a set of
 * replayed record ids, so a replay from any node skips records another node replayed before.
 */
export class RedisDeadLetterStore implements DeadLetterSink, DeadLetterReader {
  readonly path: string;
  readonly #redis: Redis;
  readonly #options: RedisDeadLetterOptions;
  readonly #append: RedisScript;
  readonly #bytesKey: string;
  readonly #replayedKey: string;
  #bytes = 0;
  #level: FillLevel = 'normal';
  #written = 0;
  #refused = 0;
  #dropped = 0;

  private constructor(options: RedisDeadLetterOptions) {
    this.#redis = options.redis;
    this.#options = options;
    this.path = `${options.keyPrefix}dl`;
    this.#bytesKey = `${this.path}:bytes`;
    this.#replayedKey = `${this.path}:replayed`;
    this.#append = defineScript(this.#redis, 'junctionDeadLetterAppend', 3, APPEND_LUA);
  }

  /** Reads how full the stream is, so usage is right before the first append. */
  static async open(options: RedisDeadLetterOptions): Promise<RedisDeadLetterStore> {
    const store = new RedisDeadLetterStore(options);
    store.#bytes = Number(await store.#redis.get(store.#bytesKey) ?? 0);
    return store;
  }

  get written(): number {
    return this.#written;
  }

  get level(): FillLevel {
    return this.#level;
  }

  /** bytes as of this node's last append (every node's records); `files` is 0: there are none */
  get usage(): DeadLetterUsage {
    return { bytes: this.#bytes, maxBytes: this.#options.maxBytes, files: 0, written: this.#written, refused: this.#refused, dropped: this.#dropped };
  }

  async append(entry: DeadLetterEntry): Promise<DeadLetterRecord> {
    if (this.#redis.status !== 'ready') throw new GatewayError('overloaded', 'Redis is unavailable: the dead-letter store cannot store a record', { retryAfterMs: 1000 });
    const record = deadLetterRecord(entry);
    const json = JSON.stringify(record);
    let reply: [number, number, number];
    try {
      reply = await this.#append.run([this.path, this.#bytesKey, this.#replayedKey], [json, Buffer.byteLength(json), this.#options.maxBytes, this.#options.whenFull, record.recordId]) as [number, number, number];
    } catch (err) {
      throw new GatewayError('overloaded', `Redis did not store a dead letter: ${(err as Error).message}`, { retryAfterMs: 1000 });
    }
    const [stored, bytes, dropped] = reply;
    this.#bytes = bytes;
    this.#dropped += dropped;
    if (dropped > 0) this.#setLevel('full');
    if (stored === 0) {
      this.#refused++;
      this.#setLevel('full');
      throw new GatewayError('overloaded', `the dead-letter store is full (deadletter.maxBytes, ${this.#options.maxBytes} bytes)`, { retryAfterMs: 1000, deadLetterFull: true });
    }
    this.#written++;
    this.#setLevel(levelAfterWrite(this.#level, bytes, this.#options.maxBytes));
    return record;
  }

  async list(filter: DeadLetterFilter = {}, limit = 1000): Promise<ListedRecord[]> {
    const wanted = filter.recordIds ? new Set(filter.recordIds) : undefined;
    const out: ListedRecord[] = [];
    let from = '-';
    // Each round reads past the last entry read, so this ends with the stream, which maxBytes bounds.
    for (;;) {
      const batch = await this.#redis.xrange(this.path, from, '+', 'COUNT', LIST_BATCH);
      if (batch.length === 0) return out;
      const records = batch.map(([, fields]) => JSON.parse(fields[3]!) as DeadLetterRecord).filter((record) => selected(record, filter, wanted));
      const replayed = records.length > 0 ? await this.#redis.smismember(this.#replayedKey, ...records.map((record) => record.recordId)) : [];
      for (const [i, record] of records.entries()) {
        const isReplayed = replayed[i] === 1;
        if (filter.pendingOnly && isReplayed) continue;
        out.push({ ...record, replayed: isReplayed });
        if (out.length >= limit) return out;
      }
      from = `(${batch.at(-1)![0]}`;
    }
  }

  async markReplayed(recordIds: readonly string[]): Promise<void> {
    if (recordIds.length > 0) await this.#redis.sadd(this.#replayedKey, ...recordIds);
  }

  #setLevel(level: FillLevel): void {
    if (level === this.#level) return;
    this.#level = level;
    this.#options.onFill?.(level, this.usage);
  }

  /** Every append was answered or refused already: there is nothing of its own to close. */
  async close(): Promise<void> {}
}
