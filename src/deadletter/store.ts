import { open, mkdir, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { basename, dirname } from 'node:path';
import { GatewayError } from '../errors.js';
import type { Message } from '../message.js';
import { storageRefusal } from '../queue/segment-log.js';

export type DeadLetterReason =
  | 'failed'
  | 'retries_exhausted'
  | 'breaker_open'
  | 'overloaded'
  | 'shed'
  | 'expired'
  | 'timeout'
  | 'shutdown'
  | 'routed'
  | 'no_target';

export const DEAD_LETTER_REASONS: readonly DeadLetterReason[] = [
  'failed', 'retries_exhausted', 'breaker_open', 'overloaded', 'shed', 'expired', 'timeout', 'shutdown', 'routed', 'no_target',
];

/** One line of the JSONL file. The payload is base64 so any bytes survive the round trip. */
export interface DeadLetterRecord {
  /** unique per record, so a replay can be made idempotent */
  recordId: string;
  at: string;
  target: string;
  reason: DeadLetterReason;
  error?: string;
  attempts: number;
  message: Omit<Message, 'payload'> & { payload: string; encoding: 'base64' };
}

export interface DeadLetterEntry {
  message: Message;
  target: string;
  reason: DeadLetterReason;
  error?: string;
  attempts: number;
}

/** What happens at `maxBytes`: refuse new records, or delete the oldest file and count what it held. */
export type WhenFull = 'refuse' | 'dropOldest';

/** The line a gateway logs (at error level) when its dead-letter store reaches deadletter.maxBytes. */
export const DEAD_LETTER_FULL_ALERT: Readonly<Record<WhenFull, string>> = {
  refuse: 'dead-letter store full: new dead letters are refused until space is freed',
  dropOldest: 'dead-letter store full: the oldest records are deleted, each counted',
};

export interface DeadLetterOptions {
  path: string;
  /** the file is rotated past this size */
  maxFileSize: number;
  /** bound on the file and its rotated predecessors together */
  maxBytes: number;
  whenFull: WhenFull;
  /** flush each batch to the device before its records count as written (storage.sync: fsync) */
  fsync: boolean;
  /** a change of fill level: past 80 % of maxBytes, at the bound, back below 80 % */
  onFill?: (level: FillLevel, usage: DeadLetterUsage) => void;
}

export type FillLevel = 'normal' | 'high' | 'full';

export interface DeadLetterUsage {
  bytes: number;
  maxBytes: number;
  files: number;
  written: number;
  /** records refused at the bound (policy refuse) */
  refused: number;
  /** records deleted with the oldest file at the bound (policy dropOldest) */
  dropped: number;
}

/** The share of maxBytes past which the store says it is filling up (4/5, exact in floating point for any byte count). */
const HIGH_WATER = 4 / 5;

/** The level after a write: high past 80 %, normal below; full stays until below 80 % again. */
export function levelAfterWrite(level: FillLevel, bytes: number, maxBytes: number): FillLevel {
  const high = bytes >= HIGH_WATER * maxBytes;
  if (level === 'full' && high) return 'full';
  return high ? 'high' : 'normal';
}

/** What any dead-letter store keeps for an entry, under a record id unique to it. */
export function deadLetterRecord(entry: DeadLetterEntry): DeadLetterRecord {
  const { payload, ...rest } = entry.message;
  const record: DeadLetterRecord = {
    recordId: `${entry.message.id}:${entry.target}:${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`,
    at: new Date().toISOString(),
    target: entry.target,
    reason: entry.reason,
    attempts: entry.attempts,
    message: { ...rest, payload: payload.toString('base64'), encoding: 'base64' },
  };
  if (entry.error !== undefined) record.error = entry.error;
  return record;
}

/**
 * Where dead letters are written: the JSONL files of one gateway (DeadLetterStore), or a Redis
 * stream shared by every node of a cluster (RedisDeadLetterStore).
 */
export interface DeadLetterSink {
  /** where the records are: the file's path, or the stream's key */
  readonly path: string;
  readonly usage: DeadLetterUsage;
  readonly level: FillLevel;
  /** records written by this process */
  readonly written: number;
  /** resolves once the record is stored; rejects with `overloaded` when full or when the storage refuses it */
  append(entry: DeadLetterEntry): Promise<DeadLetterRecord>;
  close(): Promise<void>;
}

/** Refusals re-measure the files (an operator may have archived some) at most this often. */
const REMEASURE_MS = 1000;

/**
 * The dead-letter file and its rotated predecessors, oldest first: `<path>.1`, `<path>.2`, …
 * (numbers grow with each rotation), then `<path>`.
 */
export async function deadLetterFiles(path: string): Promise<string[]> {
  const name = basename(path);
  const names = await readdir(dirname(path)).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [] as string[];
    throw err;
  });
  const rotated = names.flatMap((entry) => {
    const suffix = entry.startsWith(`${name}.`) ? entry.slice(name.length + 1) : '';
    return /^\d+$/.test(suffix) ? [Number(suffix)] : [];
  }).sort((a, b) => a - b);
  return [...rotated.map((n) => `${path}.${n}`), ...(names.includes(name) ? [path] : [])];
}

/** An append waiting for its write; `done` once told either way. */
class Pending {
  done = false;

  constructor(
    readonly line: Buffer,
    readonly record: DeadLetterRecord,
    readonly resolveWith: (record: DeadLetterRecord) => void,
    readonly rejectWith: (err: Error) => void,
  ) {}

  resolve(): void {
    this.done = true;
    this.resolveWith(this.record);
  }

  reject(err: Error): void {
    this.done = true;
    this.rejectWith(err);
  }
}

interface RotatedFile {
  path: string;
  size: number;
}

/**
 * Append-only JSONL dead-letter files, rotated by size and bounded by bytes: nothing is lost
 * silently. At the bound the operator's policy applies: `refuse` (the write fails with
 * `overloaded`, so a sender still waiting is refused and an accepted message stays in the queue
 * store), or `dropOldest` (the oldest file is deleted and each record in it counted). Appends made
 * while a write runs go out together in the next one; a record counts as dead-lettered once its
 * line is written to the OS (and flushed to the device under `fsync`).
 */
export class DeadLetterStore implements DeadLetterSink {
  readonly path: string;
  readonly #options: DeadLetterOptions;
  #file: FileHandle | undefined;
  #size = 0;
  #rotated: RotatedFile[] = [];
  #nextRotation = 1;
  #opened: Promise<void> | undefined;
  #pending: Pending[] = [];
  #writing: Promise<void> | undefined;
  #level: FillLevel = 'normal';
  /** the file reached the largest the system allows (EFBIG): the next write rotates first */
  #atFileLimit = false;
  #measuredAt = 0;
  #written = 0;
  #refused = 0;
  #dropped = 0;

  constructor(options: DeadLetterOptions) {
    this.path = options.path;
    this.#options = options;
  }

  get written(): number {
    return this.#written;
  }

  get usage(): DeadLetterUsage {
    return {
      bytes: this.#bytes(),
      maxBytes: this.#options.maxBytes,
      files: this.#rotated.length + (this.#size > 0 ? 1 : 0),
      written: this.#written,
      refused: this.#refused,
      dropped: this.#dropped,
    };
  }

  get level(): FillLevel {
    return this.#level;
  }

  /** Reads the sizes of the files already there; appends do it themselves when not called first. */
  open(): Promise<void> {
    this.#opened ??= this.#open().catch((err: unknown) => {
      // The next append tries again: the directory may be fixed meanwhile.
      this.#opened = undefined;
      throw err;
    });
    return this.#opened;
  }

  append(entry: DeadLetterEntry): Promise<DeadLetterRecord> {
    const record = deadLetterRecord(entry);
    const line = Buffer.from(`${JSON.stringify(record)}\n`);
    return new Promise((resolve, reject) => {
      this.#pending.push(new Pending(line, record, resolve, reject));
      this.#writing ??= this.#drain();
    });
  }

  /** Writes batches until no append waits; one runs at a time, so rotation never splits a batch between files. */
  async #drain(): Promise<void> {
    // Each round takes every waiting append, so this ends once appends stop coming.
    while (this.#pending.length > 0) {
      const batch = this.#pending.splice(0);
      try {
        await this.open();
        await this.#writeBatch(batch);
      } catch (err) {
        for (const item of batch) if (!item.done) item.reject(err as Error);
      }
    }
    this.#writing = undefined;
  }

  async #open(): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    await this.#measure();
  }

  /** The sizes of the files as they are now, and the next rotation number. */
  async #measure(): Promise<void> {
    const files = await deadLetterFiles(this.path);
    const sizes = await Promise.all(files.map(async (path) => ({ path, size: (await stat(path)).size })));
    this.#rotated = sizes.filter((file) => file.path !== this.path);
    this.#size = sizes.find((file) => file.path === this.path)?.size ?? 0;
    const last = this.#rotated.at(-1);
    this.#nextRotation = last ? Number(last.path.slice(this.path.length + 1)) + 1 : 1;
    this.#measuredAt = Date.now();
  }

  #bytes(): number {
    return this.#size + this.#rotated.reduce((sum, file) => sum + file.size, 0);
  }

  async #writeBatch(batch: Pending[]): Promise<void> {
    let chunk: Pending[] = [];
    let chunkBytes = 0;
    const flush = async () => {
      if (chunk.length > 0) await this.#write(chunk, chunkBytes);
      chunk = [];
      chunkBytes = 0;
    };
    for (const item of batch) {
      const bytes = item.line.length;
      if (this.#size + chunkBytes > 0 && (this.#atFileLimit || this.#size + chunkBytes + bytes > this.#options.maxFileSize)) {
        await flush();
        await this.#rotate();
      }
      if (this.#bytes() + chunkBytes + bytes > this.#options.maxBytes) {
        await flush();
        if (!(await this.#makeRoom(bytes))) {
          this.#refused++;
          this.#setLevel('full');
          item.reject(new GatewayError('overloaded', `the dead-letter store is full (deadletter.maxBytes, ${this.#options.maxBytes} bytes)`, { retryAfterMs: 1000, deadLetterFull: true }));
          continue;
        }
      }
      chunk.push(item);
      chunkBytes += bytes;
    }
    await flush();
  }

  #updateLevel(): void {
    this.#setLevel(levelAfterWrite(this.#level, this.#bytes(), this.#options.maxBytes));
  }

  /** At the bound: whether `bytes` more fit after applying the policy. */
  async #makeRoom(bytes: number): Promise<boolean> {
    const fits = () => this.#bytes() + bytes <= this.#options.maxBytes;
    if (this.#options.whenFull === 'refuse') {
      if (Date.now() - this.#measuredAt >= REMEASURE_MS) await this.#measure();
      return fits();
    }
    // Each round deletes a file, so this ends within the number of files.
    while (!fits() && (this.#rotated.length > 0 || this.#size > 0)) {
      if (this.#rotated.length === 0) await this.#rotate();
      await this.#dropOldest();
    }
    return fits();
  }

  async #dropOldest(): Promise<void> {
    const oldest = this.#rotated.shift()!;
    const records = await countLines(oldest.path);
    await unlink(oldest.path);
    this.#dropped += records;
    this.#setLevel('full');
  }

  /** Appends the chunk's lines in one write; on failure the file is cut back, so no half line stays. */
  async #write(chunk: Pending[], bytes: number): Promise<void> {
    const file = this.#file ??= await open(this.path, 'a');
    const data = chunk.length === 1 ? chunk[0]!.line : Buffer.concat(chunk.map((item) => item.line), bytes);
    try {
      // Each round writes at least one byte or throws, so this ends within `bytes` rounds.
      for (let done = 0; done < bytes;) {
        const { bytesWritten } = await file.write(data, done, bytes - done);
        if (bytesWritten === 0) throw Object.assign(new Error('the file system took no bytes'), { code: 'EIO' });
        done += bytesWritten;
      }
      if (this.#options.fsync) await file.datasync();
    } catch (err) {
      await file.truncate(this.#size).catch(() => undefined);
      this.#atFileLimit = (err as NodeJS.ErrnoException).code === 'EFBIG';
      // A sender still waiting for this (a route to deadletter) is told as for the queue store.
      const refusal = storageRefusal(err, 'the dead-letter store');
      for (const item of chunk) item.reject(refusal);
      return;
    }
    this.#size += bytes;
    this.#written += chunk.length;
    this.#updateLevel();
    for (const item of chunk) item.resolve();
  }

  async #rotate(): Promise<void> {
    await this.#closeFile();
    const path = `${this.path}.${this.#nextRotation++}`;
    await rename(this.path, path);
    this.#rotated.push({ path, size: this.#size });
    this.#size = 0;
    this.#atFileLimit = false;
  }

  #setLevel(level: FillLevel): void {
    if (level === this.#level) return;
    this.#level = level;
    this.#options.onFill?.(level, this.usage);
  }

  async #closeFile(): Promise<void> {
    const file = this.#file;
    this.#file = undefined;
    await file?.close();
  }

  async close(): Promise<void> {
    // Each round waits for a drain that may have started another, so this ends once appends stop.
    while (this.#writing) await this.#writing;
    await this.#closeFile();
  }
}

async function countLines(path: string): Promise<number> {
  let lines = 0;
  for await (const chunk of createReadStream(path)) {
    const bytes = chunk as Buffer;
    for (let at = bytes.indexOf(10); at >= 0; at = bytes.indexOf(10, at + 1)) lines++;
  }
  return lines;
}
