import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskQueueStore, type DiskStoreOptions } from '../../src/queue/index.js';
import { testMessage } from '../queue/messages.js';
import { appendAcked, describeQueueStore, takeMany, takeNext } from '../queue/store-suite.js';

for (const sync of ['os', 'fsync'] as const) {
  describeQueueStore({
    name: `disk, sync ${sync}`,
    persistent: true,
    fixture: async () => {
      const dir = await mkdtemp(join(tmpdir(), 'junction-queue-'));
      return {
        open: () => DiskQueueStore.open({ dir, sync, segmentBytes: 4096, onError: (err) => { throw err; } }),
        cleanup: () => rm(dir, { recursive: true, force: true }),
      };
    },
  });
}

describe('disk queue store', () => {
  let dir: string;
  let stores: DiskQueueStore[];
  let errors: Error[];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-queue-'));
    stores = [];
    errors = [];
  });

  afterEach(async () => {
    for (const store of stores) await store.close();
    await rm(dir, { recursive: true, force: true });
    expect(errors).toEqual([]);
  });

  async function open(options: Partial<DiskStoreOptions> = {}): Promise<DiskQueueStore> {
    const store = await DiskQueueStore.open({ dir, sync: 'os', onError: (err) => errors.push(err), ...options });
    stores.push(store);
    return store;
  }

  async function segmentFiles(): Promise<string[]> {
    return (await readdir(dir)).filter((name) => name.endsWith('.log')).sort().map((name) => join(dir, name));
  }

  async function bytesOnDisk(): Promise<number> {
    let total = 0;
    for (const file of await segmentFiles()) total += (await stat(file)).size;
    return total;
  }

  /** Lets the store's upkeep (one step per turn of the event loop) run until the log stops changing. */
  async function upkeep(store: DiskQueueStore): Promise<void> {
    let last = -1;
    let still = 0;
    for (let turn = 0; turn < 1000 && still < 5; turn++) {
      await new Promise((resolve) => setImmediate(resolve));
      const total = store.diskBytes.total;
      still = total === last ? still + 1 : 0;
      last = total;
    }
  }

  async function ids(store: DiskQueueStore, target: string, count: number): Promise<string[]> {
    return (await takeMany(store.queue(target), count)).map((record) => record.message.id);
  }

  it('recovers from a store that was never closed, taken records and attempts included', async () => {
    const abandoned = await open();
    const queue = abandoned.queue('ingest');
    const messages = [testMessage(), testMessage(), testMessage()];
    for (const message of messages) await appendAcked(queue, message);
    const taken = await takeNext(queue);
    queue.recordAttempt(taken);
    const reopened = await open();
    expect(reopened.recovery).toMatchObject({ targets: ['ingest'], records: 3, corrupt: 0, torn: 0 });
    const back = await takeMany(reopened.queue('ingest'), 3);
    expect(back.map((record) => record.message.id)).toEqual(messages.map((message) => message.id));
    expect(back.map((record) => record.attempts)).toEqual([1, 0, 0]);
  });

  it('skips a torn final record, counts it and recovers the rest', async () => {
    const store = await open();
    const messages = Array.from({ length: 10 }, () => testMessage());
    for (const message of messages) await appendAcked(store.queue('ingest'), message);
    await store.close();
    const [file] = await segmentFiles();
    await truncate(file!, (await stat(file!)).size - 5);
    const reopened = await open();
    expect(reopened.recovery).toMatchObject({ records: 9, corrupt: 0, torn: 1 });
    expect(await ids(reopened, 'ingest', 9)).toEqual(messages.slice(0, 9).map((message) => message.id));
    expect(reopened.queue('ingest').take()).toBeUndefined();
  });

  it('skips exactly the record with a flipped byte in the middle of a segment, counts it and recovers the rest', async () => {
    const store = await open();
    const messages = Array.from({ length: 10 }, () => testMessage());
    for (const message of messages) await appendAcked(store.queue('ingest'), message);
    await store.close();
    const [file] = await segmentFiles();
    const data = await readFile(file!);
    const payloadAt = data.indexOf(messages[4]!.payload);
    data[payloadAt + 2]! ^= 0x20;
    await writeFile(file!, data);
    const reopened = await open();
    expect(reopened.recovery).toMatchObject({ records: 9, corrupt: 1, torn: 0 });
    const expected = messages.filter((_, i) => i !== 4).map((message) => message.id);
    expect(await ids(reopened, 'ingest', 9)).toEqual(expected);
    expect(reopened.queue('ingest').take()).toBeUndefined();
  });

  it('writes nothing for QoS 0 messages', async () => {
    const store = await open();
    const before = await bytesOnDisk();
    for (let i = 0; i < 50; i++) store.queue('ingest').append(testMessage({ qos: 0 }));
    const queue = store.queue('ingest');
    for (let record = queue.take(); record; record = queue.take()) {
      queue.recordAttempt(record);
      queue.settle(record, 'delivered');
    }
    await upkeep(store);
    expect(await bytesOnDisk()).toBe(before);
  });

  it('rolls segments and deletes those whose records are all settled', async () => {
    const store = await open({ segmentBytes: 4096 });
    const queue = store.queue('ingest');
    for (let i = 0; i < 500; i++) {
      await appendAcked(queue, testMessage());
      const record = await takeNext(queue);
      queue.recordAttempt(record);
      queue.settle(record, 'delivered');
      if (i % 50 === 0) await upkeep(store);
    }
    await upkeep(store);
    expect(await segmentFiles()).toHaveLength(1);
    expect(store.diskBytes).toEqual({ total: await bytesOnDisk(), live: 0 });
  });

  it('compacts around a long-lived record so disk use stays bounded by what is unsettled', async () => {
    const segmentBytes = 4096;
    const store = await open({ segmentBytes });
    const queue = store.queue('ingest');
    const lingering = testMessage({ priority: 0 });
    await appendAcked(queue, lingering);
    const held = await takeNext(queue);
    queue.recordAttempt(held);
    queue.recordAttempt(held);
    queue.release(held);
    const [firstSegment] = await segmentFiles();
    let largest = 0;
    for (let i = 0; i < 3000; i++) {
      await appendAcked(queue, testMessage({ priority: 4 }));
      const record = await takeNext(queue);
      expect(record.message.priority).toBe(4);
      queue.recordAttempt(record);
      queue.settle(record, 'delivered');
      if (i % 100 === 0) {
        await upkeep(store);
        largest = Math.max(largest, await bytesOnDisk());
      }
    }
    await upkeep(store);
    const { total, live } = store.diskBytes;
    expect(total).toBe(await bytesOnDisk());
    expect(live).toBe(queue.bytes);
    expect(total).toBeLessThanOrEqual(2 * live + 3 * segmentBytes);
    expect(largest).toBeLessThanOrEqual(2 * live + 4 * segmentBytes);
    expect(await segmentFiles()).not.toContain(firstSegment);
    await store.close();

    const reopened = await open({ segmentBytes });
    expect(reopened.recovery).toMatchObject({ records: 1, corrupt: 0, torn: 0 });
    const back = await takeNext(reopened.queue('ingest'));
    expect(back.message).toEqual(lingering);
    expect(back.attempts).toBe(2);
  });

  it('refuses a directory another running process holds, and takes over the lock of one that is gone', async () => {
    // The parent process (vitest's) runs, and is not this one.
    await writeFile(join(dir, 'queue.lock'), `${process.ppid}\n`);
    await expect(open()).rejects.toMatchObject({ name: 'DirectoryInUseError', pid: process.ppid });
    const gone = spawnSync(process.execPath, ['-e', '']).pid!;
    await writeFile(join(dir, 'queue.lock'), `${gone}\n`);
    const store = await open();
    expect(await readFile(join(dir, 'queue.lock'), 'utf8')).toBe(`${process.pid}\n`);
    await store.close();
    stores.length = 0;
    expect((await readdir(dir)).includes('queue.lock')).toBe(false);
  });

  it('refuses to read a segment written in a newer format', async () => {
    const body = Buffer.from([0, 2]);
    const covered = Buffer.concat([Buffer.from([body.length, 0, 0, 0]), body]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32LE(crc32(covered));
    await writeFile(join(dir, 'queue-000000000001.log'), Buffer.concat([Buffer.from([0xa7, 0x4a, 0x51, 0x0d]), crc, covered]));
    await expect(DiskQueueStore.open({ dir, sync: 'os', onError: (err) => errors.push(err) })).rejects.toThrow(/queue format 2/);
  });
});
