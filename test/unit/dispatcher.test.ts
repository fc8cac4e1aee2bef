import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalBus } from '../../src/bus/index.js';
import type { RouteConfig } from '../../src/config/schema.js';
import { DeadLetterStore, type DeadLetterOptions, type DeadLetterRecord } from '../../src/deadletter/store.js';
import { Dispatcher, type RoutingSnapshot } from '../../src/delivery/dispatcher.js';
import { TargetLane } from '../../src/delivery/target-lane.js';
import { GatewayError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { createMessage, type Message } from '../../src/message.js';
import { compileRouteTable } from '../../src/router/index.js';
import type { DeliveryContext, Target, TargetReply } from '../../src/targets/target.js';

/** An in-memory downstream: records deliveries, and fails or holds calls when told to. */
class RecordingTarget implements Target {
  readonly type = 'memory';
  readonly delivered: Message[] = [];
  fail: GatewayError | undefined;
  hold: Promise<void> | undefined;
  constructor(readonly name: string) {}
  async deliver(message: Message, _ctx: DeliveryContext): Promise<TargetReply> {
    if (this.hold) await this.hold;
    if (this.fail) throw this.fail;
    this.delivered.push(message);
    return { payload: Buffer.from(`reply from ${this.name}`) };
  }
  async close(): Promise<void> {}
}

function route(name: string, key: string, to: RouteConfig['to'], extra: Partial<RouteConfig> = {}): RouteConfig {
  return { name, match: { key }, priority: 0, mode: 'deliver', timeout: 5000, continue: false, to, ...extra };
}

function message(key: string, priority = 4): Message {
  return createMessage({ key, payload: Buffer.from(key), priority, source: { protocol: 'internal' } });
}

function deadLetterStore(path: string, bound: Partial<DeadLetterOptions> = {}): DeadLetterStore {
  return new DeadLetterStore({ path, maxFileSize: 1024 * 1024, maxBytes: 16 * 1024 * 1024, whenFull: 'refuse', fsync: false, ...bound });
}

describe('Dispatcher', () => {
  let dir: string;
  let store: DeadLetterStore;
  const bus = new LocalBus((err) => { throw err; });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-dispatch-'));
    store = deadLetterStore(join(dir, 'dl.jsonl'));
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  function snapshot(routes: RouteConfig[], targets: RecordingTarget[], version: number, lane = { concurrency: 4, maxQueue: 100, timeoutMs: 1000 }): RoutingSnapshot {
    return {
      table: compileRouteTable(routes, 'drop', version),
      lanes: new Map(targets.map((t) => [t.name, new TargetLane(t, lane)])),
      requestTimeoutMs: 1000,
    };
  }

  async function deadLetters(): Promise<DeadLetterRecord[]> {
    await store.close();
    const text = await readFile(join(dir, 'dl.jsonl'), 'utf8').catch(() => '');
    return text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as DeadLetterRecord);
  }

  it('routes every in-flight message by exactly one table while tables are swapped', async () => {
    const a = new RecordingTarget('a');
    const b = new RecordingTarget('b');
    const wide = { concurrency: 4, maxQueue: 10_000, timeoutMs: 1000 };
    const tableA = snapshot([route('to-a', 'k/#', ['a'])], [a], 1, wide);
    const tableB = snapshot([route('to-b', 'k/#', ['b'])], [b], 2, wide);
    const dispatcher = new Dispatcher(tableA, { bus, deadletter: store, logger: silentLogger() });
    const sent: Promise<unknown>[] = [];
    for (let i = 0; i < 2000; i++) {
      sent.push(dispatcher.dispatch(message(`k/${i}`)));
      if (i % 7 === 0) dispatcher.swap(i % 14 === 0 ? tableB : tableA);
    }
    await Promise.all(sent);
    await Promise.all([...tableA.lanes.values(), ...tableB.lanes.values()].map((lane) => lane.idle()));
    const keysA = new Set(a.delivered.map((m) => m.key));
    const keysB = new Set(b.delivered.map((m) => m.key));
    expect(keysA.size + keysB.size).toBe(2000);
    for (const key of keysA) expect(keysB.has(key)).toBe(false);
    expect(a.delivered.length).toBe(keysA.size);
    expect(b.delivered.length).toBe(keysB.size);
  });

  it('dead-letters an accepted message whose target fails, after its fallback also fails', async () => {
    const primary = new RecordingTarget('primary');
    const backup = new RecordingTarget('backup');
    primary.fail = new GatewayError('upstream_unavailable', 'primary down');
    backup.fail = new GatewayError('upstream_unavailable', 'backup down');
    const dispatcher = new Dispatcher(snapshot([route('r', 'x/#', ['primary'], { fallback: ['backup'] } as Partial<RouteConfig>)], [primary, backup], 1), { bus, deadletter: store, logger: silentLogger() });
    const m = message('x/1');
    await dispatcher.dispatch(m);
    await dispatcher.settled();
    const records = await deadLetters();
    expect(records).toHaveLength(1);
    // The fallback took it (primary settled as rerouted) and then gave up itself: its name is on the record.
    expect(records[0]).toMatchObject({ target: 'backup', reason: 'failed', attempts: 1, message: { id: m.id, key: 'x/1', encoding: 'base64' } });
    expect(Buffer.from(records[0]!.message.payload, 'base64').toString()).toBe('x/1');
  });

  it('tells the sender overloaded and sends nothing anywhere when a target without fallback is full', async () => {
    const slow = new RecordingTarget('slow');
    const other = new RecordingTarget('other');
    let release!: () => void;
    slow.hold = new Promise((resolve) => { release = resolve; });
    const snap = snapshot([route('r', 'x/#', ['other', 'slow'])], [slow, other], 1, { concurrency: 1, maxQueue: 1, timeoutMs: 1000 });
    const dispatcher = new Dispatcher(snap, { bus, deadletter: store, logger: silentLogger() });
    await dispatcher.dispatch(message('x/1'));
    await dispatcher.dispatch(message('x/2'));
    await expect(dispatcher.dispatch(message('x/3'))).rejects.toMatchObject({ code: 'overloaded' });
    slow.hold = undefined;
    release();
    await Promise.all([...snap.lanes.values()].map((lane) => lane.idle()));
    expect(other.delivered.map((m) => m.key)).toEqual(['x/1', 'x/2']);
    expect(slow.delivered.map((m) => m.key)).toEqual(['x/1', 'x/2']);
  });

  it('delivers queued messages highest priority first', async () => {
    const t = new RecordingTarget('t');
    let release!: () => void;
    t.hold = new Promise((resolve) => { release = resolve; });
    const snap = snapshot([route('r', '#', ['t'])], [t], 1, { concurrency: 1, maxQueue: 100, timeoutMs: 5000 });
    const dispatcher = new Dispatcher(snap, { bus, deadletter: store, logger: silentLogger() });
    await dispatcher.dispatch(message('first', 4));
    for (const [key, priority] of [['p0-a', 0], ['p0-b', 0], ['p9-a', 9], ['p5', 5], ['p9-b', 9]] as const) {
      await dispatcher.dispatch(message(key, priority));
    }
    t.hold = undefined;
    release();
    await snap.lanes.get('t')!.idle();
    expect(t.delivered.map((m) => m.key)).toEqual(['first', 'p9-a', 'p9-b', 'p5', 'p0-a', 'p0-b']);
  });

  it('drops expired messages at ingress and counts them', async () => {
    const t = new RecordingTarget('t');
    const dispatcher = new Dispatcher(snapshot([route('r', '#', ['t'])], [t], 1), { bus, deadletter: store, logger: silentLogger() });
    const m = createMessage({ key: 'a', payload: Buffer.alloc(0), source: { protocol: 'internal' }, expiresAt: Date.now() - 1 });
    await expect(dispatcher.dispatch(m)).resolves.toMatchObject({ expired: true });
    expect(dispatcher.counters.expired).toBe(1);
    expect(t.delivered).toHaveLength(0);
  });
});
