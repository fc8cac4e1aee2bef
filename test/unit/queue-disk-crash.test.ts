import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskQueueStore } from '../../src/queue/index.js';
import { testMessage } from '../queue/messages.js';
import { appendAcked, takeMany } from '../queue/store-suite.js';

/** Spawned from the build (`npm test` builds first). */
const CHILD = fileURLToPath(new URL('../queue/store-child.mjs', import.meta.url));

interface ChildRun {
  child: ChildProcess;
  lines: string[];
  stderr: string[];
  /** resolves once the process is gone and its output read to the end */
  ended: Promise<number | null>;
}

function run(command: string, args: string[]): ChildRun {
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const stderr: string[] = [];
  let partial = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    const text = partial + chunk.toString();
    const complete = text.split('\n');
    partial = complete.pop()!;
    lines.push(...complete);
  });
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  const ended = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return { child, lines, stderr, ended };
}

function idsOf(lines: string[], kind: 'ack' | 'settled'): string[] {
  return lines.filter((line) => line.startsWith(`${kind} `)).map((line) => line.slice(kind.length + 1));
}

/** Waits until `enough` holds for the child's output, polling it; fails when the child ends first. */
async function waitFor(running: ChildRun, enough: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let exited = false;
  void running.ended.then(() => { exited = true; });
  while (!enough()) {
    if (exited) throw new Error(`the child ended early:\n${running.stderr.join('')}\n${running.lines.slice(-5).join('\n')}`);
    if (Date.now() > deadline) throw new Error('the child did not get far enough in time');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

describe('disk queue store across real process deaths', () => {
  let dir: string;
  let stores: DiskQueueStore[];
  let children: ChildProcess[];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-queue-'));
    stores = [];
    children = [];
  });

  afterEach(async () => {
    for (const child of children) child.kill('SIGKILL');
    for (const store of stores) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function open(): Promise<DiskQueueStore> {
    const store = await DiskQueueStore.open({ dir, sync: 'os', onError: (err) => { throw err; } });
    stores.push(store);
    return store;
  }

  async function recoveredIds(store: DiskQueueStore): Promise<string[]> {
    const ids: string[] = [];
    for (const target of store.recovery.targets) {
      const queue = store.queue(target);
      ids.push(...(await takeMany(queue, queue.size)).map((record) => record.message.id));
    }
    return ids;
  }

  for (const sync of ['os', 'fsync'] as const) {
    it(`sync ${sync}: every append acknowledged before a SIGKILL mid-stream is recovered`, async () => {
      const running = run(process.execPath, [CHILD, 'append', dir, sync, String(16 * 1024)]);
      children.push(running.child);
      await waitFor(running, () => idsOf(running.lines, 'ack').length >= 3000 && idsOf(running.lines, 'settled').length > 0);
      running.child.kill('SIGKILL');
      await running.ended;
      expect(running.lines.filter((line) => line.startsWith('error'))).toEqual([]);

      const acked = idsOf(running.lines, 'ack');
      const settled = new Set(idsOf(running.lines, 'settled'));
      const store = await open();
      expect(store.recovery.corrupt).toBe(0);
      expect(store.recovery.torn).toBeLessThanOrEqual(1);
      const recovered = await recoveredIds(store);
      expect(new Set(recovered).size).toBe(recovered.length);
      const present = new Set(recovered);
      const missing = acked.filter((id) => !settled.has(id) && !present.has(id));
      expect(missing).toEqual([]);
      expect(acked.length - settled.size).toBeGreaterThan(1000);
    });
  }

  it('a file-size limit refuses appends with overloaded, acknowledges nothing it could not store, and the next append starts a new segment', async () => {
    const limitKiB = 64;
    // SIGXFSZ is ignored by Node, so a write past the limit fails with EFBIG instead of killing the process.
    const running = run('bash', ['-c', `ulimit -f ${limitKiB} && exec "$0" "$@"`, process.execPath, CHILD, 'fill', dir, String(limitKiB * 1024)]);
    children.push(running.child);
    expect(await running.ended).toBe(0);
    const outcomes = running.lines.filter((line) => /^(ack|refused) /.test(line)).map((line) => line.split(' ')[0]);
    expect(outcomes).toEqual(['ack', 'ack', 'ack', 'ack', 'ack', 'refused', 'ack', 'ack', 'refused', 'ack']);
    const refusals = running.lines.filter((line) => line.startsWith('refused ')).map((line) => JSON.parse(line.slice(8)) as { code: string; message: string });
    for (const refusal of refusals) expect(refusal).toMatchObject({ code: 'overloaded', message: expect.stringContaining('EFBIG') as string });
    const acked = idsOf(running.lines, 'ack');
    expect(running.lines).toContain(`filled ${limitKiB * 1024}`);
    const sizes = await Promise.all((await readdir(dir)).filter((name) => name.endsWith('.log')).sort().map(async (name) => (await stat(join(dir, name))).size));
    expect(sizes).toHaveLength(3);
    expect(sizes[0]).toBeLessThan(limitKiB * 1024);
    expect(sizes[1]).toBe(limitKiB * 1024);

    const store = await open();
    expect(store.recovery).toMatchObject({ records: 8, corrupt: 0, torn: 0 });
    expect(await recoveredIds(store)).toEqual(acked);
    const large = testMessage({ payload: Buffer.alloc(256 * 1024, 1) });
    await appendAcked(store.queue('ingest'), large);
    expect((await takeMany(store.queue('ingest'), 1))[0]!.message.payload.equals(large.payload)).toBe(true);
  });
});
