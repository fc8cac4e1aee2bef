import { FORMAT_VERSION, scanFrames, type Frame } from './codec.js';
import { lockDirectory, type DirectoryLock } from './dir-lock.js';
import { DiskJournal } from './disk-journal.js';
import { LocalQueueStore, LocalRecord } from './local-queue.js';
import { SegmentLog, type DiskSync, type Segment } from './segment-log.js';
import type { RecoveryReport } from './store.js';

export const DEFAULT_SEGMENT_BYTES = 8 * 1024 * 1024;

export interface DiskStoreOptions {
  dir: string;
  sync: DiskSync;
  /** a segment past this size is closed and the next one started */
  segmentBytes?: number;
  /**
   * A write that failed with no sender left to tell: an attempt or settlement record (a crash
   * would then repeat the attempt count or the delivery), a compaction step (retried later).
   */
  onError: (error: Error) => void;
}

/** An unsettled record as recovery found it. */
interface Found {
  frame: Extract<Frame, { type: 'append' }>;
  attempts: number;
  segment: Segment;
}

/**
 * The `os` and `fsync` sync policies: queues in memory, journaled to append-only segment files
 * shared by every target (docs/durability.md has the file format and what each policy survives).
 */
export class DiskQueueStore extends LocalQueueStore {
  readonly #journal: DiskJournal;
  readonly #lock: DirectoryLock;
  #recovery: RecoveryReport = { targets: [], records: 0, corrupt: 0, torn: 0, segments: 0, durationMs: 0 };

  private constructor(journal: DiskJournal, lock: DirectoryLock) {
    super(journal);
    this.#journal = journal;
    this.#lock = lock;
  }

  get recovery(): RecoveryReport {
    return this.#recovery;
  }

  /** bytes of the segment files, and of the unsettled records in them */
  get diskBytes(): { total: number; live: number } {
    return { total: this.#journal.totalBytes, live: this.#journal.liveBytes };
  }

  /**
   * Claims `dir` (a DirectoryInUseError when another running process has it), reads every
   * segment, puts each unsettled record back in its target's queue (priority order, FIFO within a
   * priority, with its attempts), then starts a new segment to write to.
   */
  static async open(options: DiskStoreOptions): Promise<DiskQueueStore> {
    const started = performance.now();
    const lock = await lockDirectory(options.dir);
    try {
      return await DiskQueueStore.#recover(options, lock, started);
    } catch (err) {
      lock.release();
      throw err;
    }
  }

  static async #recover(options: DiskStoreOptions, lock: DirectoryLock, started: number): Promise<DiskQueueStore> {
    const log = await SegmentLog.open(options.dir, options.sync, options.segmentBytes ?? DEFAULT_SEGMENT_BYTES);
    const found = new Map<number, Found>();
    let lastSeq = 0;
    let corrupt = 0;
    let torn = 0;
    for (const segment of log.segments) {
      const damage = scanFrames(await log.read(segment), (frame) => {
        if (frame.type === 'segment') {
          if (frame.version !== FORMAT_VERSION) {
            throw new Error(`${segment.path} is in queue format ${frame.version}; this Junction reads format ${FORMAT_VERSION}`);
          }
          return;
        }
        lastSeq = Math.max(lastSeq, frame.seq);
        const known = found.get(frame.seq);
        switch (frame.type) {
          case 'append':
            // A later copy is compaction's: it carries the attempts counted up to then.
            if (known) {
              known.segment = segment;
              known.attempts = Math.max(known.attempts, frame.attempts);
            } else found.set(frame.seq, { frame, attempts: frame.attempts, segment });
            break;
          case 'attempt':
            if (known) known.attempts = Math.max(known.attempts, frame.attempts);
            break;
          case 'settle':
            found.delete(frame.seq);
            break;
        }
      });
      corrupt += damage.corrupt;
      torn += damage.torn;
    }
    const segments = log.segments.length;
    log.start();
    const store = new DiskQueueStore(new DiskJournal(log, lastSeq + 1, options.onError), lock);
    const targets = store.#restore([...found.values()]);
    store.#recovery = { targets, records: found.size, corrupt, torn, segments, durationMs: performance.now() - started };
    return store;
  }

  /** Queues the records in append order, so each priority keeps its FIFO order; returns their targets. */
  #restore(found: Found[]): string[] {
    found.sort((a, b) => a.frame.seq - b.frame.seq);
    const targets = new Set<string>();
    for (const { frame, attempts, segment } of found) {
      const queue = this.queue(frame.target);
      const record = new LocalRecord(queue, frame.message, frame.bytes, attempts, false);
      record.seq = frame.seq;
      this.#journal.adopt(record, segment);
      queue.restore(record);
      targets.add(frame.target);
    }
    this.#journal.tidy();
    return [...targets].sort();
  }

  async close(): Promise<void> {
    this.closeQueues();
    try {
      await this.#journal.close();
    } finally {
      this.#lock.release();
    }
  }
}
