import { createWriteStream, type WriteStream } from 'node:fs';
import { mkdir, rename, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Message } from '../message.js';

export type DeadLetterReason =
  | 'failed'
  | 'retries_exhausted'
  | 'breaker_open'
  | 'overloaded'
  | 'shed'
  | 'expired'
  | 'timeout'
  | 'shutdown'
  | 'routed';

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

/**
 * Append-only JSONL dead-letter file, rotated by size (`file.1`, oldest overwritten).
 * A write resolves once the line is handed to the OS, which is when the message counts as
 * dead-lettered.
 */
export class DeadLetterStore {
  readonly path: string;
  readonly #maxFileSize: number;
  #stream: WriteStream | undefined;
  #size = 0;
  #opening: Promise<void> | undefined;
  #chain: Promise<unknown> = Promise.resolve();
  #written = 0;

  constructor(path: string, maxFileSize: number) {
    this.path = path;
    this.#maxFileSize = maxFileSize;
  }

  get written(): number {
    return this.#written;
  }

  append(entry: DeadLetterEntry): Promise<DeadLetterRecord> {
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
    const line = `${JSON.stringify(record)}\n`;
    // Serialised so rotation never splits concurrent writes between two files.
    const write = this.#chain.then(() => this.#write(line));
    this.#chain = write.catch(() => undefined);
    return write.then(() => {
      this.#written++;
      return record;
    });
  }

  async #write(line: string): Promise<void> {
    await this.#open();
    const bytes = Buffer.byteLength(line);
    if (this.#size > 0 && this.#size + bytes > this.#maxFileSize) await this.#rotate();
    const stream = this.#stream!;
    await new Promise<void>((resolve, reject) => stream.write(line, (err) => (err ? reject(err) : resolve())));
    this.#size += bytes;
  }

  #open(): Promise<void> {
    if (this.#stream) return Promise.resolve();
    this.#opening ??= (async () => {
      await mkdir(dirname(this.path), { recursive: true });
      this.#size = await stat(this.path).then((s) => s.size, () => 0);
      this.#stream = createWriteStream(this.path, { flags: 'a' });
    })().finally(() => {
      this.#opening = undefined;
    });
    return this.#opening;
  }

  async #rotate(): Promise<void> {
    await this.#closeStream();
    await rename(this.path, `${this.path}.1`);
    await this.#open();
  }

  #closeStream(): Promise<void> {
    const stream = this.#stream;
    this.#stream = undefined;
    if (!stream) return Promise.resolve();
    return new Promise((resolve) => stream.end(() => resolve()));
  }

  async close(): Promise<void> {
    await this.#chain;
    await this.#closeStream();
  }
}
