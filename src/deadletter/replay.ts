import { appendFile, readFile } from 'node:fs/promises';
import type { Message } from '../message.js';
import type { DeadLetterReason, DeadLetterRecord } from './store.js';

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

/**
 * Reads the dead-letter file (and its rotated predecessor) and keeps a side file of replayed
 * record ids, which is what makes replay idempotent per record.
 */
export class DeadLetterArchive {
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
    for (const file of [`${this.path}.1`, this.path]) {
      for (const line of await lines(file)) {
        let record: DeadLetterRecord;
        try {
          record = JSON.parse(line) as DeadLetterRecord;
        } catch {
          // A torn last line (crash mid-write) is skipped rather than failing the listing.
          continue;
        }
        const at = Date.parse(record.at);
        if (filter.target !== undefined && record.target !== filter.target) continue;
        if (filter.reason !== undefined && record.reason !== filter.reason) continue;
        if (filter.since !== undefined && at < filter.since) continue;
        if (filter.until !== undefined && at >= filter.until) continue;
        if (wanted && !wanted.has(record.recordId)) continue;
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
