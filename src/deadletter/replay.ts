import { createReadStream } from 'node:fs';
import { appendFile, readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import type { Message } from '../message.js';
import { deadLetterFiles, type DeadLetterReason, type DeadLetterRecord } from './store.js';

export interface DeadLetterFilter {
  target?: string;
  reason?: DeadLetterReason;
  /** ms since epoch, inclusive */
  since?: number;
  /** ms since epoch, exclusive */
  until?: number;
  /** only these records */
  recordIds?: readonly string[];
  /** leave out records already replayed */
  pendingOnly?: boolean;
}

export interface ListedRecord extends DeadLetterRecord {
  replayed: boolean;
}

async function lines(path: string): Promise<string[]> {
  const text = await readFile(path, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return '';
    throw err;
  });
  return text.split('\n').filter((line) => line.length > 0);
}

/** The lines of a file one at a time, so a listing never holds a whole file in memory; none when it is gone. */
async function* linesOf(path: string): AsyncGenerator<string> {
  const input = createReadStream(path);
  const missing = new Promise<boolean>((resolve, reject) => {
    input.once('open', () => resolve(false));
    input.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ENOENT' ? resolve(true) : reject(err)));
  });
  // A rotated file dropped at the bound between listing the names and opening it has nothing to give.
  if (await missing) return;
  const reader = createInterface({ input, crlfDelay: Infinity });
  try {
    for await (const line of reader) if (line.length > 0) yield line;
  } finally {
    reader.close();
    input.destroy();
  }
}

/** Whether the filter selects the record, its replayed state aside; `wanted` is the filter's recordIds as a set. */
export function selected(record: DeadLetterRecord, filter: DeadLetterFilter, wanted: ReadonlySet<string> | undefined): boolean {
  const at = Date.parse(record.at);
  if (filter.target !== undefined && record.target !== filter.target) return false;
  if (filter.reason !== undefined && record.reason !== filter.reason) return false;
  if (filter.since !== undefined && at < filter.since) return false;
  if (filter.until !== undefined && at >= filter.until) return false;
  return !wanted || wanted.has(record.recordId);
}

/** Lists dead letters and remembers which were replayed: from the files, or from Redis in a cluster. */
export interface DeadLetterReader {
  /** records in the order written, oldest first, up to `limit` */
  list(filter?: DeadLetterFilter, limit?: number): Promise<ListedRecord[]>;
  markReplayed(recordIds: readonly string[]): Promise<void>;
}

/**
 * Reads the dead-letter file and its rotated predecessors, oldest first, and keeps a side file of
 * replayed record ids, which is what makes replay idempotent per record.
 */
export class DeadLetterArchive implements DeadLetterReader {
  constructor(readonly path: string) {}

  get replayedPath(): string {
    return `${this.path}.replayed`;
  }

  async replayedIds(): Promise<Set<string>> {
    return new Set(await lines(this.replayedPath));
  }

  async list(filter: DeadLetterFilter = {}, limit = 1000): Promise<ListedRecord[]> {
    const replayed = await this.replayedIds();
    const wanted = filter.recordIds ? new Set(filter.recordIds) : undefined;
    const out: ListedRecord[] = [];
    for (const file of await deadLetterFiles(this.path)) {
      for await (const line of linesOf(file)) {
        let record: DeadLetterRecord;
        try {
          record = JSON.parse(line) as DeadLetterRecord;
        } catch {
          // A torn last line (crash mid-write) is skipped rather than failing the listing.
          continue;
        }
        if (!selected(record, filter, wanted)) continue;
        const isReplayed = replayed.has(record.recordId);
        if (filter.pendingOnly && isReplayed) continue;
        out.push({ ...record, replayed: isReplayed });
        if (out.length >= limit) return out;
      }
    }
    return out;
  }

  async markReplayed(recordIds: readonly string[]): Promise<void> {
    if (recordIds.length > 0) await appendFile(this.replayedPath, `${recordIds.join('\n')}\n`);
  }
}

export function messageOf(record: DeadLetterRecord): Message {
  const { payload, encoding: _encoding, ...rest } = record.message;
  return { ...rest, payload: Buffer.from(payload, 'base64') };
}
