import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { DiskQueueStore, type DiskStoreOptions } from '../../src/queue/index.js';
import { testMessage } from '../queue/messages.js';
import { appendAcked, takeMany, takeNext } from '../queue/store-suite.js';

/** What the file system below the store does: counted fsyncs, held fsyncs, refused writes. */
const disk = vi.hoisted(() => ({
  fdatasyncCalls: 0,
  /** while set, each fdatasync waits here until the test calls it */
  heldSyncs: undefined as (() => void)[] | undefined,
  syncFailure: undefined as string | undefined,
  /** while set, writes store `bytesBefore` more bytes, then fail with `code` */
  writeFailure: undefined as { code: string; bytesBefore: number } | undefined,
}));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const failure = (code: string) => Object.assign(new Error(`${code} (simulated)`), { code });
  return {
    ...fs,
    writeSync: (fd: number, buffer: Buffer, offset: number, length: number, position: number) => {
      const fault = disk.writeFailure;
      if (!fault) return fs.writeSync(fd, buffer, offset, length, position);
      if (fault.bytesBefore === 0) throw failure(fault.code);
      const written = fs.writeSync(fd, buffer, offset, Math.min(length, fault.bytesBefore), position);
      fault.bytesBefore -= written;
      return written;
    },
    fdatasync: (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => {
      disk.fdatasyncCalls++;
      const finish = () => (disk.syncFailure ? process.nextTick(callback, failure(disk.syncFailure)) : fs.fdatasync(fd, callback));
      if (disk.heldSyncs) disk.heldSyncs.push(finish);
      else finish();
    },
  };
});

function turns(count: number): Promise<void> {
  return count === 0 ? Promise.resolve() : new Promise((resolve) => setImmediate(resolve)).then(() => turns(count - 1));
}

/** Records when a promise settles, so a test can see that it has not yet. */
function watch(promise: Promise<void> | undefined): { done: boolean } {
  const state = { done: false };
  const done = () => { state.done = true; };
  promise!.then(done, done);
  return state;
}

describe('disk queue store against its file system', () => {
  let dir: string;
  let stores: DiskQueueStore[];
  let errors: Error[];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-queue-'));
    stores = [];
    errors = [];
    Object.assign(disk, { fdatasyncCalls: 0, heldSyncs: undefined, syncFailure: undefined, writeFailure: undefined });
  });

  afterEach(async () => {
    Object.assign(disk, { heldSyncs: undefined, syncFailure: undefined, writeFailure: undefined });
    for (const store of stores) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function open(options: Partial<DiskStoreOptions> = {}): Promise<DiskQueueStore> {
    const store = await DiskQueueStore.open({ dir, sync: 'os', onError: (err) => errors.push(err), ...options });
    stores.push(store);
    return store;
  }

  async function activeSegmentBytes(): Promise<number> {
    const names = (await readdir(dir)).filter((name) => name.endsWith('.log')).sort();
    return (await stat(join(dir, names.at(-1)!))).size;
  }

  it('fsync policy: one fdatasync per batch of appends, and acknowledgements only after it', async () => {
    const store = await open({ sync: 'fsync' });
    const queue = store.queue('ingest');
    disk.heldSyncs = [];
    const first = Array.from({ length: 20 }, () => queue.append(testMessage()).durable);
    const firstAcks = first.map(watch);
    await turns(3);
    expect(disk.fdatasyncCalls).toBe(1);
    expect(firstAcks.some((ack) => ack.done)).toBe(false);

    const second = Array.from({ length: 5 }, () => queue.append(testMessage()).durable);
    const secondAcks = second.map(watch);
    await turns(3);
    expect(disk.fdatasyncCalls).toBe(1);

    disk.heldSyncs.shift()!();
    await Promise.all(first);
    expect(disk.fdatasyncCalls).toBe(2);
    await turns(3);
    expect(secondAcks.some((ack) => ack.done)).toBe(false);

    disk.heldSyncs.shift()!();
    await Promise.all(second);

    disk.heldSyncs = undefined;
    for (let round = 0; round < 3; round++) {
      await Promise.all(Array.from({ length: 10 }, () => queue.append(testMessage()).durable));
    }
    expect(disk.fdatasyncCalls).toBe(5);
    expect(errors).toEqual([]);
  });

  it('fsync policy: a failed fsync refuses its batch with overloaded, and the next batch goes through', async () => {
    const store = await open({ sync: 'fsync' });
    const queue = store.queue('ingest');
    disk.syncFailure = 'EIO';
    const refused = [queue.append(testMessage()), queue.append(testMessage())];
    for (const { durable } of refused) await expect(durable).rejects.toMatchObject({ code: 'overloaded' });
    disk.syncFailure = undefined;
    await appendAcked(queue, testMessage());
    // The refused records stay queued: their senders retry, so the target may see them twice.
    expect(queue.size).toBe(3);
  });

  for (const code of ['ENOSPC', 'EFBIG', 'EDQUOT', 'EIO']) {
    it(`a write refused half-way with ${code} is cut back and refused with overloaded; the store works again when space returns`, async () => {
      const store = await open();
      const queue = store.queue('ingest');
      const kept = [testMessage(), testMessage(), testMessage()];
      for (const message of kept) await appendAcked(queue, message);
      const before = await activeSegmentBytes();
      disk.writeFailure = { code, bytesBefore: 50 };
      let refusal: unknown;
      try {
        queue.append(testMessage());
      } catch (err) {
        refusal = err;
      }
      expect(refusal).toBeInstanceOf(GatewayError);
      expect(refusal).toMatchObject({ code: 'overloaded', details: { retryAfterMs: 1000 } });
      expect(await activeSegmentBytes()).toBe(before);
      expect(queue.size).toBe(3);

      disk.writeFailure = undefined;
      const after = testMessage();
      await appendAcked(queue, after);
      await store.close();
      const reopened = await open();
      expect(reopened.recovery).toMatchObject({ records: 4, corrupt: 0, torn: 0 });
      const back = await takeMany(reopened.queue('ingest'), 4);
      expect(back.map((record) => record.message.id)).toEqual([...kept, after].map((message) => message.id));
    });
  }

  it('starts a new segment after one reached the file-size limit (EFBIG), so a ulimit does not stop the store for good', async () => {
    const store = await open();
    const queue = store.queue('ingest');
    await appendAcked(queue, testMessage());
    const segments = (await readdir(dir)).filter((name) => name.endsWith('.log'));
    disk.writeFailure = { code: 'EFBIG', bytesBefore: 0 };
    expect(() => queue.append(testMessage())).toThrow(expect.objectContaining({ code: 'overloaded', details: expect.objectContaining({ storage: true }) as unknown }) as Error);
    disk.writeFailure = undefined;
    await appendAcked(queue, testMessage());
    expect((await readdir(dir)).filter((name) => name.endsWith('.log'))).toHaveLength(segments.length + 1);
    await store.close();
    expect((await open()).recovery.records).toBe(2);
  });

  it('an unexpected write error refuses the message as internal, not overloaded', async () => {
    const queue = (await open()).queue('ingest');
    disk.writeFailure = { code: 'EBADF', bytesBefore: 0 };
    expect(() => queue.append(testMessage())).toThrow(expect.objectContaining({ code: 'internal' }) as Error);
  });

  it('keeps settlements waiting for a write through a refused append, and writes them later', async () => {
    const store = await open();
    const queue = store.queue('ingest');
    const [done, waiting] = [testMessage(), testMessage()];
    await appendAcked(queue, done);
    await appendAcked(queue, waiting);
    queue.settle(await takeNext(queue), 'delivered');
    disk.writeFailure = { code: 'ENOSPC', bytesBefore: 10 };
    expect(() => queue.append(testMessage())).toThrow(GatewayError);
    await turns(3);
    expect(errors.map((err) => err.message)).toEqual(['settlements were not recorded yet on disk']);
    disk.writeFailure = undefined;
    await store.close();
    const reopened = await open();
    expect(reopened.recovery.records).toBe(1);
    expect((await takeNext(reopened.queue('ingest'))).message.id).toBe(waiting.id);
  });

  it('reports an attempt the disk refused and keeps counting it in memory', async () => {
    const queue = (await open()).queue('ingest');
    await appendAcked(queue, testMessage());
    const record = await takeNext(queue);
    disk.writeFailure = { code: 'ENOSPC', bytesBefore: 0 };
    expect(queue.recordAttempt(record)).toBe(1);
    expect(errors).toHaveLength(1);
    expect(errors[0]!.message).toMatch(/attempt 1 of message .* was not recorded/);
  });
});
