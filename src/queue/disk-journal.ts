import { FrameBuffer, writeAppendFrame, writeAttemptFrame, writeSettleFrame } from './codec.js';
import type { Journal, LocalRecord } from './local-queue.js';
import { storageRefusal, type Segment, type SegmentLog } from './segment-log.js';
import type { QueueOutcome } from './store.js';

/** One compaction step copies about this much, so a step never holds the event loop for long. */
const COMPACTION_STEP_BYTES = 1024 * 1024;

/**
 * Writes each record's life into the segment log: its append before the acknowledgement, each
 * attempt before the call, its settlement after. Keeps track of which segment holds each record's
 * latest copy, deletes segments nobody needs any more and compacts the log when it grows past twice
 * what is unsettled. Transient records (QoS 0, requests) are not written: they live in memory only.
 */
export class DiskJournal implements Journal {
  readonly #log: SegmentLog;
  readonly #onError: (error: Error) => void;
  /**
   * Frames waiting for the next write. Settlements wait here: losing one in a crash repeats a
   * delivery, which at-least-once allows, and writing them with the next append or attempt saves a
   * system call per message.
   */
  readonly #out = new FrameBuffer();
  #nextSeq: number;
  /** bytes of the unsettled records on disk: what compaction keeps the log proportional to */
  #liveBytes = 0;
  /** compaction copied records that are not flushed to the device yet (fsync policy) */
  #copiesUnsynced = false;
  #flushScheduled = false;
  #maintenanceScheduled = false;
  #closed = false;

  constructor(log: SegmentLog, nextSeq: number, onError: (error: Error) => void) {
    this.#log = log;
    this.#nextSeq = nextSeq;
    this.#onError = onError;
  }

  get liveBytes(): number {
    return this.#liveBytes;
  }

  get totalBytes(): number {
    return this.#log.totalBytes;
  }

  append(record: LocalRecord): Promise<void> | undefined {
    if (record.transient) return undefined;
    const seq = this.#nextSeq;
    const mark = this.#out.length;
    writeAppendFrame(this.#out, seq, 0, record.target, record.message, record.bytes);
    let segment: Segment;
    try {
      segment = this.#write(mark);
    } catch (err) {
      throw storageRefusal(err);
    }
    this.#nextSeq++;
    record.seq = seq;
    this.#place(record, segment);
    this.#tidy();
    return this.#log.sync === 'fsync' ? this.#log.durable() : undefined;
  }

  /** Written at once, before the call it counts: the count must survive a crash during the call. */
  attempt(record: LocalRecord): void {
    if (record.segment === undefined || this.#closed) return;
    const mark = this.#out.length;
    writeAttemptFrame(this.#out, record.seq, record.attempts);
    try {
      this.#write(mark);
    } catch (err) {
      this.#onError(new Error(`attempt ${record.attempts} of message ${record.message.id} was not recorded`, { cause: err }));
    }
    this.#tidy();
  }

  settle(record: LocalRecord, outcome: QueueOutcome): void {
    const segment = record.segment;
    if (segment === undefined) return;
    segment.live.delete(record);
    record.segment = undefined;
    this.#liveBytes -= record.bytes;
    if (this.#closed) return;
    writeSettleFrame(this.#out, record.seq, outcome);
    if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      setImmediate(this.#flush);
    }
    this.#tidy();
  }

  /** Takes over a record found by recovery, whose latest copy is in `segment`. */
  adopt(record: LocalRecord, segment: Segment): void {
    this.#place(record, segment);
  }

  /** Schedules deleting and compacting segments when there is something to gain. */
  tidy(): void {
    this.#tidy();
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#out.length > 0) this.#writeReporting('settlements were not recorded');
    await this.#log.close();
  }

  /**
   * Writes the buffered frames; on failure drops those from `mark` on (the frame being written)
   * and keeps the older ones for the next write.
   */
  #write(mark: number): Segment {
    try {
      const segment = this.#log.write(this.#out);
      this.#out.truncate(0);
      return segment;
    } catch (err) {
      this.#out.truncate(mark);
      throw err;
    }
  }

  #writeReporting(what: string): void {
    try {
      this.#write(this.#out.length);
    } catch (err) {
      this.#onError(new Error(`${what} on disk`, { cause: err }));
    }
  }

  readonly #flush = (): void => {
    this.#flushScheduled = false;
    if (this.#closed || this.#out.length === 0) return;
    this.#writeReporting('settlements were not recorded yet');
    this.#tidy();
  };

  #place(record: LocalRecord, segment: Segment): void {
    record.segment = segment;
    segment.live.add(record);
    this.#liveBytes += record.bytes;
  }

  #needsCompaction(): boolean {
    const log = this.#log;
    return log.segments.length > 1 && log.totalBytes > 2 * this.#liveBytes + 2 * log.segmentBytes;
  }

  #tidy(): void {
    if (this.#maintenanceScheduled || this.#closed) return;
    const head = this.#log.head;
    if ((head !== this.#log.active && head.live.size === 0) || this.#needsCompaction()) {
      this.#maintenanceScheduled = true;
      setImmediate(this.#maintain);
    }
  }

  /** One turn of upkeep: delete the oldest segments nothing needs, then one compaction step. */
  readonly #maintain = (): void => {
    this.#maintenanceScheduled = false;
    if (this.#closed) return;
    try {
      this.#dropSettledHeads();
      if (this.#needsCompaction()) this.#compactHead();
    } catch (err) {
      this.#onError(new Error('queue segment upkeep failed', { cause: err }));
      return;
    }
    this.#tidy();
  };

  #dropSettledHeads(): void {
    const log = this.#log;
    // Each round deletes a segment, so this ends within the number of segments.
    while (log.head !== log.active && log.head.live.size === 0) {
      // The copies that emptied it must be on the device before the originals go.
      if (this.#copiesUnsynced) {
        log.syncActive();
        this.#copiesUnsynced = false;
      }
      log.dropHead();
    }
  }

  /**
   * Copies the oldest segment's unsettled records to the end of the log (with their attempts so
   * far), a step at a time; the segment is deleted once nothing in it is live.
   */
  #compactHead(): void {
    const head = this.#log.head;
    const mark = this.#out.length;
    const moved: LocalRecord[] = [];
    let bytes = 0;
    for (const record of head.live) {
      if (bytes >= COMPACTION_STEP_BYTES) break;
      writeAppendFrame(this.#out, record.seq, record.attempts, record.target, record.message, record.bytes);
      moved.push(record);
      bytes += record.bytes;
    }
    const segment = this.#write(mark);
    for (const record of moved) {
      head.live.delete(record);
      segment.live.add(record);
      record.segment = segment;
    }
    if (this.#log.sync === 'fsync') this.#copiesUnsynced = true;
    this.#dropSettledHeads();
  }
}
