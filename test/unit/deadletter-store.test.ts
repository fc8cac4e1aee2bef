import { mkdtemp, readdir, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DeadLetterArchive } from '../../src/deadletter/replay.js';
import { DeadLetterStore, type DeadLetterOptions, type DeadLetterUsage, type FillLevel } from '../../src/deadletter/store.js';
import { createMessage, type Message } from '../../src/message.js';
import { eventually } from '../helpers/eventually.js';

function message(n: number): Message {
  // Same-sized payloads, so every record's line has the same length and bounds count in records.
  return createMessage({ key: `jobs/${String(n).padStart(4, '0')}`, payload: Buffer.alloc(200, n % 256), qos: 1, source: { protocol: 'internal' } });
}

describe('dead-letter store', () => {
  let dir: string;
  let path: string;
  let store: DeadLetterStore | undefined;
  let levels: [FillLevel, DeadLetterUsage][];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-deadletter-'));
    path = join(dir, 'dl.jsonl');
    levels = [];
  });

  afterEach(async () => {
    await store?.close();
    store = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  /** The size of one record's line, measured in a store of its own. */
  async function lineBytes(): Promise<number> {
    const probe = new DeadLetterStore({ path: join(dir, 'probe.jsonl'), maxFileSize: 1e9, maxBytes: 1e9, whenFull: 'refuse', fsync: false });
    await probe.append({ message: message(0), target: 't', reason: 'failed', attempts: 1 });
    await probe.close();
    const bytes = probe.usage.bytes;
    await unlink(join(dir, 'probe.jsonl'));
    return bytes;
  }

  function open(options: Partial<DeadLetterOptions>): DeadLetterStore {
    store = new DeadLetterStore({ path, maxFileSize: 1e9, maxBytes: 1e9, whenFull: 'refuse', fsync: false, onFill: (level, usage) => levels.push([level, usage]), ...options });
    return store;
  }

  async function append(target: DeadLetterStore, from: number, count: number): Promise<void> {
    for (let n = from; n < from + count; n++) await target.append({ message: message(n), target: 't', reason: 'failed', attempts: 1 });
  }

  async function listedKeys(): Promise<string[]> {
    return (await new DeadLetterArchive(path).list({}, 10_000)).map((record) => record.message.key);
  }

  it('rotates into numbered files and lists every record across them, oldest first, an older `.1` included', async () => {
    const bytes = await lineBytes();
    await writeFile(`${path}.1`, `${JSON.stringify({ recordId: 'old', at: new Date(0).toISOString(), target: 't', reason: 'failed', attempts: 1, message: { ...message(9999), payload: '', encoding: 'base64' } })}\n`);
    const dl = open({ maxFileSize: 3 * bytes });
    await append(dl, 0, 10);
    expect((await readdir(dir)).sort()).toEqual(['dl.jsonl', 'dl.jsonl.1', 'dl.jsonl.2', 'dl.jsonl.3', 'dl.jsonl.4']);
    expect(await listedKeys()).toEqual(['jobs/9999', ...Array.from({ length: 10 }, (_, n) => `jobs/${String(n).padStart(4, '0')}`)]);
    expect(dl.usage).toMatchObject({ written: 10, files: 5, refused: 0, dropped: 0 });
  });

  it('refuses new records at maxBytes (policy refuse), says so once at 80 % and once at the bound, and takes records again once space is freed', async () => {
    const bytes = await lineBytes();
    const dl = open({ maxFileSize: 2 * bytes, maxBytes: 5 * bytes, whenFull: 'refuse' });
    await append(dl, 0, 4);
    expect(levels.map(([level]) => level)).toEqual(['high']);
    await append(dl, 4, 1);
    await expect(append(dl, 5, 1)).rejects.toMatchObject({ code: 'overloaded', details: { deadLetterFull: true } });
    await expect(append(dl, 6, 1)).rejects.toMatchObject({ code: 'overloaded' });
    expect(levels.map(([level]) => level)).toEqual(['high', 'full']);
    expect(dl.usage).toMatchObject({ written: 5, refused: 2, bytes: 5 * bytes });

    // The operator archives the older files; the store notices at its next refusal past a second.
    await unlink(`${path}.1`);
    await unlink(`${path}.2`);
    await eventually(() => append(dl, 7, 1), 5000, 100);
    expect(levels.map(([level]) => level)).toEqual(['high', 'full', 'normal']);
    expect(await listedKeys()).toEqual(['jobs/0004', 'jobs/0007']);
  });

  it('deletes the oldest file at maxBytes (policy dropOldest), counting each record in it as dropped', async () => {
    const bytes = await lineBytes();
    const dl = open({ maxFileSize: 2 * bytes, maxBytes: 5 * bytes, whenFull: 'dropOldest' });
    await append(dl, 0, 5);
    await append(dl, 5, 1);
    expect(dl.usage).toMatchObject({ written: 6, dropped: 2, refused: 0 });
    expect(levels.map(([level]) => level)).toEqual(['high', 'full']);
    expect(await listedKeys()).toEqual(['jobs/0002', 'jobs/0003', 'jobs/0004', 'jobs/0005']);
    await append(dl, 6, 4);
    expect(dl.usage.dropped).toBe(6);
    expect(dl.usage.bytes).toBeLessThanOrEqual(5 * bytes);
    expect(await listedKeys()).toEqual(['jobs/0006', 'jobs/0007', 'jobs/0008', 'jobs/0009']);
  });

  it('writes appends made together in one batch, each told when its line is written', async () => {
    const dl = open({});
    const records = await Promise.all(Array.from({ length: 200 }, (_, n) => dl.append({ message: message(n), target: 't', reason: 'shed', attempts: 0 })));
    expect(new Set(records.map((record) => record.recordId)).size).toBe(200);
    expect(await listedKeys()).toHaveLength(200);
    expect(dl.usage.written).toBe(200);
  });
});
