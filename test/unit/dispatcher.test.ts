import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LocalBus } from '../../src/bus/index.js';
import type { RouteConfig } from '../../src/config/schema.js';
import { DeadLetterStore, type DeadLetterOptions, type DeadLetterRecord } from '../../src/deadletter/store.js';
import { Dispatcher, type RoutingSnapshot } from '../../src/delivery/dispatcher.js';
import { TargetLane, type LaneOptions } from '../../src/delivery/target-lane.js';
import { GatewayError } from '../../src/errors.js';
import { silentLogger } from '../../src/log.js';
import { createMessage, type Message } from '../../src/message.js';
import { DiskQueueStore, MemoryQueueStore, type QueueStore, type TargetQueue } from '../../src/queue/index.js';
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
  return { name, match: { key }, priority: 0, mode: 'deliver', timeout: 5000, continue: false, expired: 'drop', to, ...extra };
}

function message(key: string, priority = 4): Message {
  return createMessage({ key, payload: Buffer.from(key), priority, qos: 1, source: { protocol: 'internal' } });
}

function deadLetterStore(path: string, bound: Partial<DeadLetterOptions> = {}): DeadLetterStore {
  return new DeadLetterStore({ path, maxFileSize: 1024 * 1024, maxBytes: 16 * 1024 * 1024, whenFull: 'refuse', fsync: false, ...bound });
}

type LaneShape = Omit<LaneOptions, 'recovered'>;

/** Lanes over `store`'s queues; a record recovery put back gets its outcome from `dispatcher`. */
function makeLanes(targets: Target[], store: QueueStore, lane: LaneShape, dispatcher: () => Dispatcher): Map<string, TargetLane> {
  return new Map(targets.map((t) => [t.name, new TargetLane(t, store.queue(t.name), { ...lane, recovered: (record) => dispatcher().recovered(t.name, record) })]));
}

function started(lanes: Map<string, TargetLane>): Map<string, TargetLane> {
  for (const lane of lanes.values()) lane.start();
  return lanes;
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
      lanes: started(makeLanes(targets, new MemoryQueueStore(), lane, () => { throw new Error('a memory queue store recovers nothing'); })),
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

  describe('accept', () => {
    const publishing = [route('p', 'k/#', ['publish'])];

    it('accepts a message every subscriber took at once before it returns', async () => {
      const local = new LocalBus((err) => { throw err; });
      const delivered: string[] = [];
      await local.subscribe('k/#', (m) => { delivered.push(m.key); });
      const dispatcher = new Dispatcher(snapshot(publishing, [], 1), { bus: local, deadletter: store, logger: silentLogger() });
      expect(dispatcher.accept(message('k/1'))).toBeUndefined();
      expect(delivered).toEqual(['k/1']);
      expect(dispatcher.counters).toMatchObject({ received: 1, accepted: 1, published: 1, rejected: 0 });
    });

    it('accepts the messages waiting for the same hand-off together, once it is done', async () => {
      const local = new LocalBus((err) => { throw err; });
      let handOver!: () => void;
      const turn = new Promise<void>((resolve) => { handOver = resolve; });
      await local.subscribeAll(() => turn);
      const observed: string[] = [];
      const observer = { received: () => {}, accepted: (protocol: string) => { observed.push(protocol); }, deadLettered: () => {} };
      const dispatcher = new Dispatcher(snapshot(publishing, [], 1), { bus: local, deadletter: store, logger: silentLogger(), observer });
      const first = dispatcher.accept(message('k/1'));
      const second = dispatcher.accept(message('k/2'));
      expect(first).toBeInstanceOf(Promise);
      expect(second).toBe(first);
      expect(dispatcher.inflight).toBe(2);
      expect(dispatcher.counters).toMatchObject({ accepted: 0, published: 0 });
      handOver();
      await first;
      expect(dispatcher.counters).toMatchObject({ received: 2, accepted: 2, published: 2, rejected: 0 });
      expect(dispatcher.inflight).toBe(0);
      expect(observed).toEqual(['internal', 'internal']);
      // The wait is over: the next message does not join it.
      expect(dispatcher.accept(message('k/3'))).not.toBe(first);
    });

    it('refuses every message waiting for a hand-off that failed', async () => {
      const failed = Promise.reject(new GatewayError('upstream_unavailable', 'the bus is down'));
      failed.catch(() => {});
      const failing = { publish: () => failed } as unknown as LocalBus;
      const dispatcher = new Dispatcher(snapshot(publishing, [], 1), { bus: failing, deadletter: store, logger: silentLogger() });
      const first = dispatcher.accept(message('k/1'));
      expect(dispatcher.accept(message('k/2'))).toBe(first);
      await expect(first).rejects.toMatchObject({ code: 'upstream_unavailable' });
      expect(dispatcher.counters).toMatchObject({ received: 2, accepted: 0, published: 0, rejected: 2 });
      expect(dispatcher.inflight).toBe(0);
    });

    it('throws a refusal made at once', () => {
      const dispatcher = new Dispatcher(snapshot(publishing, [], 1), { bus, deadletter: store, logger: silentLogger() });
      expect(() => dispatcher.accept(message('elsewhere'))).toThrow(expect.objectContaining({ code: 'no_route' }));
      expect(dispatcher.counters).toMatchObject({ received: 1, rejected: 1 });
    });
  });

  describe('on the queue store', () => {
    const LANE = { concurrency: 4, maxQueue: 100, timeoutMs: 1000 };

    /** One target's queue, with its appends' durability or refusal in the test's hands. */
    function gated(queue: TargetQueue, append: (appended: ReturnType<TargetQueue['append']>) => ReturnType<TargetQueue['append']>): TargetQueue {
      return new Proxy(queue, {
        get(target, property) {
          if (property === 'append') return (m: Message, o?: { transient?: boolean }) => append(target.append(m, o));
          const value: unknown = Reflect.get(target, property, target);
          return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
    }

    function oneLane(t: Target, queue: TargetQueue, routes: RouteConfig[]): { dispatcher: Dispatcher; lane: TargetLane } {
      const lane = new TargetLane(t, queue, { ...LANE, recovered: () => { throw new Error('nothing recovered here'); } });
      lane.start();
      const dispatcher = new Dispatcher({ table: compileRouteTable(routes, 'drop', 1), lanes: new Map([[t.name, lane]]), requestTimeoutMs: 1000 }, { bus, deadletter: store, logger: silentLogger() });
      return { dispatcher, lane };
    }

    it('accepts only once the queue store says the message is durable; a failed flush refuses the sender and the message stays queued', async () => {
      const t = new RecordingTarget('t');
      let flush!: { resolve: () => void; reject: (err: Error) => void };
      const queue = gated(new MemoryQueueStore().queue('t'), (appended) => ({
        ...appended,
        durable: new Promise<void>((resolve, reject) => { flush = { resolve, reject }; }),
      }));
      const { dispatcher, lane } = oneLane(t, queue, [route('r', 'x/#', ['t'])]);
      let accepted = false;
      const first = dispatcher.dispatch(message('x/1')).then(() => { accepted = true; });
      await lane.idle();
      expect(t.delivered).toHaveLength(1);
      expect(accepted).toBe(false);
      flush.resolve();
      await first;

      const second = dispatcher.dispatch(message('x/2'));
      flush.reject(new GatewayError('overloaded', 'the queue store cannot write (EIO)', { storage: true }));
      await expect(second).rejects.toMatchObject({ code: 'overloaded' });
      await lane.idle();
      expect(t.delivered.map((m) => m.key)).toEqual(['x/1', 'x/2']);
    });

    it('refuses the sender when the queue store cannot write, without going down the fallback chain', async () => {
      const primary = new RecordingTarget('primary');
      const queue = gated(new MemoryQueueStore().queue('primary'), () => {
        throw new GatewayError('overloaded', 'the queue store cannot write (ENOSPC)', { storage: true, retryAfterMs: 1000 });
      });
      const { dispatcher } = oneLane(primary, queue, [route('r', 'x/#', ['primary'], { fallback: ['deadletter'] })]);
      await expect(dispatcher.dispatch(message('x/1'))).rejects.toMatchObject({ code: 'overloaded', details: { storage: true } });
      await dispatcher.settled();
      expect(await deadLetters()).toEqual([]);
      expect(dispatcher.counters).toMatchObject({ accepted: 0, rejected: 1 });
    });

    it('keeps a message the full dead-letter store refuses unsettled in the queue store, and refuses a sender it would have dead-lettered', async () => {
      await store.close();
      store = deadLetterStore(join(dir, 'dl.jsonl'), { maxBytes: 10 });
      const t = new RecordingTarget('t');
      t.fail = new GatewayError('upstream_unavailable', 'down');
      const queue = new MemoryQueueStore().queue('t');
      const { dispatcher, lane } = oneLane(t, queue, [route('r', 'x/#', ['t']), route('d', 'dl/#', ['deadletter'])]);
      await dispatcher.dispatch(message('x/1'));
      await dispatcher.settled();
      expect(lane.stats).toMatchObject({ accepted: 1, unsettled: 1, deadLettered: 0, inFlight: 0 });
      expect(queue.held).toBe(1);
      await expect(dispatcher.dispatch(message('dl/1'))).rejects.toMatchObject({ code: 'overloaded', details: { deadLetterFull: true } });
      expect(store.usage).toMatchObject({ refused: 2, written: 0 });
    });

    it('sends a recovered record that fails down the fallback chain of the rule that routes its key to its target now, else to the dead-letter store', async () => {
      const storeDir = join(dir, 'queue');
      const before = await DiskQueueStore.open({ dir: storeDir, sync: 'os', onError: (err) => { throw err; } });
      const routed = message('x/1');
      const unrouted = message('y/1');
      before.queue('primary').append(routed);
      before.queue('primary').append(unrouted);
      await before.close();

      const queues = await DiskQueueStore.open({ dir: storeDir, sync: 'os', onError: (err) => { throw err; } });
      try {
        const primary = new RecordingTarget('primary');
        const backup = new RecordingTarget('backup');
        primary.fail = new GatewayError('upstream_unavailable', 'primary refuses', { retryable: false });
        const lanes = makeLanes([primary, backup], queues, LANE, () => dispatcher);
        const dispatcher: Dispatcher = new Dispatcher({
          table: compileRouteTable([route('r', 'x/#', ['primary'], { fallback: ['backup'] })], 'drop', 1), lanes, requestTimeoutMs: 1000,
        }, { bus, deadletter: store, logger: silentLogger() });
        started(lanes);
        await Promise.all([...lanes.values()].map((lane) => lane.idle()));
        await dispatcher.settled();
        expect(backup.delivered.map((m) => m.id)).toEqual([routed.id]);
        expect((await deadLetters()).map((r) => [r.message.id, r.target, r.reason])).toEqual([[unrouted.id, 'primary', 'failed']]);
        expect(lanes.get('primary')!.stats).toMatchObject({ adopted: 2, rerouted: 1, deadLettered: 1, queued: 0, inFlight: 0 });
      } finally {
        await queues.close();
      }
    });
  });
});
