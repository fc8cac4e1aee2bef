import { closeSync, fdatasync, fdatasyncSync, fsyncSync, ftruncateSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { GatewayError } from '../errors.js';
import { FrameBuffer, writeSegmentFrame } from './codec.js';
import type { LocalRecord } from './local-queue.js';

/** The sync policies that write to disk. */
export type DiskSync = 'os' | 'fsync';

/** Errors by which the storage says it cannot take the data, as opposed to a fault of ours. */
const REFUSALS = new Set(['ENOSPC', 'EFBIG', 'EDQUOT', 'EIO', 'EROFS']);

/** What a sender is told when its message could not be stored. */
export function storageRefusal(err: unknown, store = 'the queue store'): GatewayError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code !== undefined && REFUSALS.has(code)) {
    return new GatewayError('overloaded', `${store} cannot write (${code})`, { retryAfterMs: 1000, storage: true });
  }
  return new GatewayError('internal', `${store} failed to write: ${err instanceof Error ? err.message : String(err)}`, { storage: true });
}

const NAME = /^queue-(\d{12})\.log$/;

/** A segment holding its header only: starting another such one cannot make room. */
const EMPTY_SEGMENT_BYTES = (() => {
  const header = new FrameBuffer();
  writeSegmentFrame(header);
  return header.length;
})();

export class Segment {
  readonly number: number;
  readonly path: string;
  size: number;
  /** open while the segment is written to, and until a running fsync on it ends */
  fd: number | undefined;
  /** unsettled records whose latest copy is in this segment */
  readonly live = new Set<LocalRecord>();

  constructor(dir: string, number: number, size: number) {
    this.number = number;
    this.path = join(dir, `queue-${String(number).padStart(12, '0')}.log`);
    this.size = size;
  }
}

/** The acknowledgements waiting for one fsync. */
class Batch {
  readonly promise: Promise<void>;
  resolve!: () => void;
  reject!: (err: GatewayError) => void;

  constructor() {
    this.promise = new Promise((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    // Callers that do not wait for durability must not turn a failed fsync into an unhandled rejection.
    this.promise.catch(() => undefined);
  }
}

/**
 * The segment files of one directory: one log shared by every target, so a group commit is one
 * fsync however many targets the batch touched. Writes go to the end of the newest segment; a
 * segment past `segmentBytes` is closed and a new one started; segments leave only from the
 * oldest end, so a later segment never outlives the records its settlements refer to.
 */
export class SegmentLog {
  readonly dir: string;
  readonly sync: DiskSync;
  readonly segmentBytes: number;
  /** oldest first; the last one is written to once started */
  readonly segments: Segment[];
  #totalBytes: number;
  #batch: Batch | undefined;
  #syncing: Promise<void> | undefined;
  /** the newest segment reached the largest file the system allows (EFBIG): the next write starts another */
  #atFileLimit = false;
  /** descriptors of closed segments that a running fsync still uses */
  #retired: number[] = [];

  private constructor(dir: string, sync: DiskSync, segmentBytes: number, segments: Segment[]) {
    this.dir = dir;
    this.sync = sync;
    this.segmentBytes = segmentBytes;
    this.segments = segments;
    this.#totalBytes = segments.reduce((sum, segment) => sum + segment.size, 0);
  }

  /** The log over the segments found in `dir` (created if missing); call `start` before writing. */
  static async open(dir: string, sync: DiskSync, segmentBytes: number): Promise<SegmentLog> {
    await mkdir(dir, { recursive: true });
    const numbers = (await readdir(dir)).flatMap((name) => {
      const match = NAME.exec(name);
      return match ? [Number(match[1])] : [];
    }).sort((a, b) => a - b);
    const segments = await Promise.all(numbers.map(async (number) => {
      const segment = new Segment(dir, number, 0);
      segment.size = (await stat(segment.path)).size;
      return segment;
    }));
    return new SegmentLog(dir, sync, segmentBytes, segments);
  }

  read(segment: Segment): Promise<Buffer> {
    return readFile(segment.path);
  }

  /** Opens a new segment to write to: segments found on open are never written again. */
  start(): void {
    this.#add(this.#create((this.segments.at(-1)?.number ?? 0) + 1));
  }

  get head(): Segment {
    return this.segments[0]!;
  }

  get active(): Segment {
    return this.segments.at(-1)!;
  }

  get totalBytes(): number {
    return this.#totalBytes;
  }

  /**
   * Writes `out` at the end of the log, all of it or nothing: after a failed write the segment is
   * cut back to where it was, so a refused record leaves no half frame behind. Throws the
   * file system's error. A segment that reached the file-size limit (EFBIG: a ulimit, the file
   * system's largest file) is closed, and the next write starts a new one.
   */
  write(out: FrameBuffer): Segment {
    if (this.active.size >= this.segmentBytes || this.#atFileLimit) this.#roll();
    const segment = this.active;
    try {
      writeAll(segment.fd!, out.bytes, out.length, segment.size);
    } catch (err) {
      cutBack(segment.fd!, segment.size);
      this.#atFileLimit = (err as NodeJS.ErrnoException).code === 'EFBIG' && segment.size > EMPTY_SEGMENT_BYTES;
      throw err;
    }
    segment.size += out.length;
    this.#totalBytes += out.length;
    return segment;
  }

  /**
   * Group commit: resolves after the next fsync of the log, which runs once the appends of this
   * turn of the event loop are written; appends made during an fsync wait for the next one.
   */
  durable(): Promise<void> {
    let batch = this.#batch;
    if (!batch) {
      batch = this.#batch = new Batch();
      if (!this.#syncing) setImmediate(this.#flush);
    }
    return batch.promise;
  }

  readonly #flush = (): void => {
    const batch = this.#batch!;
    this.#batch = undefined;
    let synced!: () => void;
    this.#syncing = new Promise((resolve) => { synced = resolve; });
    fdatasync(this.active.fd!, (err) => {
      this.#syncing = undefined;
      for (const retired of this.#retired.splice(0)) closeSync(retired);
      if (err) batch.reject(storageRefusal(err));
      else batch.resolve();
      if (this.#batch) this.#flush();
      synced();
    });
  };

  /** Flushes the newest segment to the device now: before deleting what was copied into it. */
  syncActive(): void {
    fdatasyncSync(this.active.fd!);
  }

  /** Deletes the oldest segment, which must not be the one written to. */
  dropHead(): void {
    const head = this.head;
    if (head === this.active) throw new Error('the segment being written cannot be deleted');
    unlinkSync(head.path);
    this.segments.shift();
    this.#totalBytes -= head.size;
  }

  /** Waits for pending fsyncs and closes the files; the segments stay for the next open. */
  async close(): Promise<void> {
    await (this.#batch?.promise ?? this.#syncing)?.catch(() => undefined);
    const active = this.segments.at(-1);
    if (active?.fd !== undefined) {
      closeSync(active.fd);
      active.fd = undefined;
    }
  }

  #roll(): void {
    const previous = this.active;
    // Appends still waiting for the group commit may sit in the segment being closed.
    if (this.sync === 'fsync') fdatasyncSync(previous.fd!);
    const next = this.#create(previous.number + 1);
    if (this.#syncing) this.#retired.push(previous.fd!);
    else closeSync(previous.fd!);
    previous.fd = undefined;
    this.#add(next);
    this.#atFileLimit = false;
  }

  #add(segment: Segment): void {
    this.segments.push(segment);
    this.#totalBytes += segment.size;
  }

  /** A new segment holding its header, or the file system's error with nothing left behind. */
  #create(number: number): Segment {
    const segment = new Segment(this.dir, number, 0);
    const header = new FrameBuffer();
    writeSegmentFrame(header);
    const fd = openSync(segment.path, 'wx');
    try {
      writeAll(fd, header.bytes, header.length, 0);
      // The new file's name must reach the device too, or a power loss could take the file with it.
      if (this.sync === 'fsync') syncDirectory(this.dir);
    } catch (err) {
      closeSync(fd);
      unlinkSync(segment.path);
      throw err;
    }
    segment.fd = fd;
    segment.size = header.length;
    return segment;
  }
}

/** A disk that is filling up may take part of a write before it refuses the rest. */
function writeAll(fd: number, bytes: Buffer, length: number, position: number): void {
  // Each round writes at least one byte or throws, so this ends within `length` rounds.
  for (let done = 0; done < length;) {
    const written = writeSync(fd, bytes, done, length - done, position + done);
    if (written === 0) throw Object.assign(new Error('the file system took no bytes'), { code: 'EIO' });
    done += written;
  }
}

function cutBack(fd: number, size: number): void {
  try {
    ftruncateSync(fd, size);
  } catch {
    // The next write starts at `size` anyway and overwrites what is left.
  }
}

function syncDirectory(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}
