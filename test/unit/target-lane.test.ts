import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { TargetLane, type DeliveryOutcome, type LaneOptions, type Settlement, type SubmitOptions } from '../../src/delivery/target-lane.js';
import { GatewayError } from '../../src/errors.js';
import { createMessage, type Message } from '../../src/message.js';
import { DiskQueueStore, MemoryQueueStore, type QueueRecord, type TargetQueue } from '../../src/queue/index.js';
import type { DeliveryContext, Target, TargetReply } from '../../src/targets/target.js';
import { fakeClock, type FakeClock } from '../helpers/clock.js';

/** One call the lane made to the downstream, answered when the test says so. */
interface Call {
  key: string;
  /** fake-clock time of the call */
  at: number;
  signal: AbortSignal | undefined;
  succeed(): void;
  fail(error: GatewayError): void;
}

/**
 * A downstream driven by the test: each call waits for `succeed` or `fail`, unless `answer`
 * settles it at once.
 */
class ScriptedTarget implements Target {
  readonly name = 'downstream';
  readonly type = 'scripted';
  readonly calls: Call[] = [];
  answer: ((call: Call) => void) | undefined;
  running = 0;
  peakRunning = 0;

  constructor(readonly clock: FakeClock) {}

  deliver(message: Message, ctx: DeliveryContext): Promise<TargetReply> {
    this.running++;
    this.peakRunning = Math.max(this.peakRunning, this.running);
    return new Promise((resolve, reject) => {
      const call: Call = {
        key: message.key,
        at: this.clock.now(),
        signal: ctx.signal,
        succeed: () => {
          this.running--;
          resolve({ payload: Buffer.from('ok') });
        },
        fail: (error) => {
          this.running--;
          reject(error);
        },
      };
      this.calls.push(call);
      this.answer?.(call);
    });
  }

  async close(): Promise<void> {}

  keys(): string[] {
    return this.calls.map((c) => c.key);
  }
}

const unavailable = () => new GatewayError('upstream_unavailable', 'downstream answered 503', { retryable: true, upstreamStatus: 503 });
const refused = () => new GatewayError('upstream_unavailable', 'downstream answered 400', { retryable: false, upstreamStatus: 400 });

function message(key: string, priority = 4, expiresAt?: number): Message {
  return createMessage({ key, payload: Buffer.from(key), priority, qos: 1, source: { protocol: 'internal' }, ...(expiresAt !== undefined ? { expiresAt } : {}) });
}

/** What a submitted message came to, as the lane told its outcome. */
interface Sent {
  /** the reply, or the error the lane gave up with (an expired message: `expired: true`) */
  result: Promise<TargetReply | GatewayError>;
  settled(): boolean;
  /** for a message the lane gave up on: tells the lane how it ended (the dispatcher's part) */
  settle(settlement: Settlement): void;
  /** the store's durability promise, when its policy has one */
  durable: Promise<void> | undefined;
}

/** An outcome that records what the lane said, for a message that was or will be in the lane. */
function recorder(): { outcome: DeliveryOutcome; sent: Omit<Sent, 'durable'> } {
  let done = false;
  let finish!: (value: TargetReply | GatewayError) => void;
  let settleWith: ((settlement: Promise<Settlement>) => void) | undefined;
  const result = new Promise<TargetReply | GatewayError>((resolve) => { finish = resolve; });
  const outcome: DeliveryOutcome = {
    delivered: (reply) => { done = true; finish(reply); },
    expired: () => {
      done = true;
      finish(new GatewayError('upstream_timeout', 'expired while queued', { expired: true }));
      return undefined;
    },
    failed: (error, settle) => { done = true; settleWith = settle; finish(error); },
  };
  return {
    outcome,
    sent: {
      result,
      settled: () => done,
      settle: (settlement) => {
        if (!settleWith) throw new Error('the lane has not given up on this message');
        settleWith(Promise.resolve(settlement));
      },
    },
  };
}

function send(lane: TargetLane, sent: Message, options?: SubmitOptions): Sent {
  const { outcome, sent: recorded } = recorder();
  const durable = lane.submit(sent, outcome, options);
  return { ...recorded, durable };
}

/** The lane's books: every message it took is somewhere. */
function expectBalanced(lane: TargetLane): void {
  const s = lane.stats;
  expect(s.delivered + s.expired + s.deadLettered + s.rerouted + s.returned + s.unsettled + s.handedOver + s.queued + s.inFlight).toBe(s.accepted + s.adopted);
}

/** A memory store's queues hold only what was submitted: nothing recovered to give an outcome to. */
const NOTHING_RECOVERED = () => { throw new Error('nothing was recovered'); };

interface Setup {
  clock: FakeClock;
  target: ScriptedTarget;
  lane: TargetLane;
  queue: TargetQueue;
}

function setup(options: Partial<LaneOptions> = {}, queue: TargetQueue = new MemoryQueueStore().queue('downstream')): Setup {
  const clock = fakeClock();
  const target = new ScriptedTarget(clock);
  const lane = new TargetLane(target, queue, { concurrency: 4, maxQueue: 100, timeoutMs: 1000, clock, recovered: NOTHING_RECOVERED, ...options });
  lane.start();
  return { clock, target, lane, queue };
}

describe('TargetLane retries', () => {
  const retry = { attempts: 4, backoffMs: 100, maxBackoffMs: 250 };

  it('retries a retryable failure after exponential backoff capped at maxBackoffMs, then gives up with the attempts made', async () => {
    // The jitter draw is 1: every wait is the whole cap, 100, 200, then 250 (not 400).
    const { clock, target, lane } = setup({ retry, random: () => 1 });
    target.answer = (call) => call.fail(unavailable());
    const start = clock.now();
    const sent = send(lane, message('r'));
    await clock.settle();
    expect(target.calls).toHaveLength(1);

    for (const wait of [100, 200, 250]) {
      const calls = target.calls.length;
      await clock.advance(wait - 1);
      expect(target.calls).toHaveLength(calls);
      await clock.advance(1);
      expect(target.calls).toHaveLength(calls + 1);
    }
    expect(target.calls.map((c) => c.at - start)).toEqual([0, 100, 300, 550]);
    const error = await sent.result;
    expect(error).toBeInstanceOf(GatewayError);
    expect(error).toMatchObject({ code: 'upstream_unavailable', details: { attempts: 4, upstreamStatus: 503 } });
    expect(clock.pending()).toBe(0);
    expect(lane.stats).toMatchObject({ accepted: 1, retries: 3, delivered: 0, inFlight: 1 });
    sent.settle('deadLettered');
    await lane.idle();
    expect(lane.stats).toMatchObject({ deadLettered: 1, inFlight: 0 });
  });

  it('scales each wait by the jitter draw (full jitter: anywhere from 0 to the cap)', async () => {
    const draws = [0.5, 0.25, 0.1];
    const { clock, target, lane } = setup({ retry, random: () => draws.shift()! });
    target.answer = (call) => (target.calls.length < 4 ? call.fail(unavailable()) : call.succeed());
    const start = clock.now();
    const sent = send(lane, message('j'));
    await clock.advance(1000);
    // 0.5 × 100, then 0.25 × 200, then 0.1 × 250.
    expect(target.calls.map((c) => c.at - start)).toEqual([0, 50, 100, 125]);
    expect(await sent.result).toEqual({ payload: Buffer.from('ok') });
    expect(lane.stats).toMatchObject({ delivered: 1, retries: 3, inFlight: 0 });
  });

  it('does not retry a deliberate refusal', async () => {
    const { clock, target, lane } = setup({ retry, random: () => 1 });
    target.answer = (call) => call.fail(refused());
    const sent = send(lane, message('no'));
    await clock.settle();
    expect(await sent.result).toMatchObject({ details: { retryable: false, attempts: 1 } });
    expect(clock.pending()).toBe(0);
    await clock.advance(10_000);
    expect(target.calls).toHaveLength(1);
    expect(lane.stats.retries).toBe(0);
  });

  it('does not retry once the breaker has opened: the retry is refused without a call', async () => {
    const { clock, target, lane } = setup({
      retry,
      random: () => 1,
      breaker: { errorThresholdPercentage: 50, volumeThreshold: 1, resetTimeout: 60_000, rollingCountTimeout: 10_000, halfOpenProbes: 1 },
    });
    target.answer = (call) => call.fail(unavailable());
    const sent = send(lane, message('b'));
    await clock.settle();
    // The first failure opened the breaker; the retry it scheduled finds it open.
    expect(lane.breaker!.state).toBe('open');
    await clock.advance(100);
    expect(await sent.result).toMatchObject({ code: 'upstream_unavailable', details: { breakerOpen: true, attempts: 2 } });
    expect(target.calls).toHaveLength(1);
    expect(clock.pending()).toBe(1); // only the breaker's own reset timer
    expect(lane.stats.retries).toBe(1);
  });

  it('does not retry past the deadline of a request whose sender stops waiting', async () => {
    const { clock, target, lane } = setup({ retry, random: () => 1 });
    target.answer = (call) => clock.setTimeout(() => call.fail(unavailable()), 150);
    const sent = send(lane, message('req'), { timeoutMs: 200 });
    // First call fails at 150, waits 100, second call fails at 400: past the 200 ms deadline.
    await clock.advance(1000);
    expect(target.calls).toHaveLength(2);
    expect(await sent.result).toMatchObject({ details: { attempts: 2 } });
  });
});

describe('TargetLane pacing and concurrency', () => {
  it('paces calls at the token bucket rate: the burst at once, then one per refill interval', async () => {
    const { clock, target, lane } = setup({ concurrency: 10, rateLimit: { rate: 10, perMs: 1000, burst: 2 } });
    target.answer = (call) => call.succeed();
    const start = clock.now();
    const sent = Array.from({ length: 6 }, (_, i) => send(lane, message(`paced/${i}`)));
    await clock.settle();
    expect(target.calls).toHaveLength(2);
    expect(lane.stats.queued).toBe(4);
    await clock.advance(99);
    expect(target.calls).toHaveLength(2);
    await clock.advance(301);
    expect(target.calls.map((c) => c.at - start)).toEqual([0, 0, 100, 200, 300, 400]);
    expect(target.keys()).toEqual(['paced/0', 'paced/1', 'paced/2', 'paced/3', 'paced/4', 'paced/5']);
    await Promise.all(sent.map((s) => s.result));
    expect(lane.stats).toMatchObject({ delivered: 6, queued: 0, inFlight: 0 });
    expect(clock.pending()).toBe(0);
  });

  it('never runs more calls than the concurrency limit; the queue feeds each freed slot', async () => {
    const { clock, target, lane } = setup({ concurrency: 2 });
    const sent = Array.from({ length: 5 }, (_, i) => send(lane, message(`c/${i}`)));
    await clock.settle();
    expect(target.calls).toHaveLength(2);
    expect(lane.stats).toMatchObject({ queued: 3, inFlight: 2 });
    for (let answered = 0; answered < 5; answered++) {
      target.calls[answered]!.succeed();
      await clock.settle();
      expect(target.calls).toHaveLength(Math.min(5, answered + 3));
    }
    await Promise.all(sent.map((s) => s.result));
    expect(target.peakRunning).toBe(2);
    expect(lane.stats).toMatchObject({ delivered: 5, queued: 0, inFlight: 0 });
  });
});

describe('TargetLane queue', () => {
  it('sends the highest priority first, and when full sheds the newest of the lowest for a higher one', async () => {
    const shedding: boolean[] = [];
    const { clock, target, lane } = setup({ concurrency: 1, maxQueue: 3, onShedding: (_name, on) => shedding.push(on) });
    const first = send(lane, message('first', 4));
    await clock.settle();
    const low = ['low-1', 'low-2', 'low-3'].map((key) => send(lane, message(key, 0)));
    expect(lane.canAccept(message('low-4', 0))).toBe(false);
    expect(() => send(lane, message('low-4', 0))).toThrow(expect.objectContaining({ code: 'overloaded', details: { retryAfterMs: 1000 } }));
    expect(lane.canAccept(message('alarm', 9))).toBe(true);
    const alarm = send(lane, message('alarm', 9));
    await clock.settle();

    expect(await low[2]!.result).toMatchObject({ code: 'overloaded', details: { shed: true } });
    expect(low[0]!.settled()).toBe(false);
    expect(shedding).toEqual([true]);
    low[2]!.settle('deadLettered');

    target.answer = (call) => call.succeed();
    target.calls[0]!.succeed();
    await Promise.all([first.result, alarm.result, low[0]!.result, low[1]!.result]);
    expect(target.keys()).toEqual(['first', 'alarm', 'low-1', 'low-2']);
    expect(shedding).toEqual([true, false]);
    expect(lane.stats).toMatchObject({ accepted: 5, delivered: 4, shed: 1, deadLettered: 1, queued: 0, inFlight: 0 });
  });

  it('drops a message that expires while queued, counted as expired, without calling the downstream', async () => {
    const { clock, target, lane } = setup({ concurrency: 1 });
    const first = send(lane, message('first'));
    await clock.settle();
    const brief = send(lane, message('brief', 4, clock.now() + 50));
    const lasting = send(lane, message('lasting', 4, clock.now() + 500));
    await clock.advance(100);
    target.answer = (call) => call.succeed();
    target.calls[0]!.succeed();
    await Promise.all([first.result, lasting.result]);
    expect(await brief.result).toMatchObject({ code: 'upstream_timeout', details: { expired: true } });
    expect(target.keys()).toEqual(['first', 'lasting']);
    expect(lane.stats).toMatchObject({ expired: 1, delivered: 2, inFlight: 0, queued: 0 });
  });

  it('close() hands back queued messages and pending retries, cancels their timers and aborts calls running', async () => {
    const { clock, target, lane } = setup({ concurrency: 2, retry: { attempts: 3, backoffMs: 100, maxBackoffMs: 1000 }, random: () => 1 });
    const retrying = send(lane, message('retrying'));
    await clock.settle();
    target.calls[0]!.fail(unavailable());
    await clock.settle();
    const running = send(lane, message('running'));
    const held = send(lane, message('held'));
    const queued = [send(lane, message('queued-1')), send(lane, message('queued-2'))];
    await clock.settle();
    expect(lane.stats).toMatchObject({ queued: 2, inFlight: 3 });
    expect(clock.pending()).toBe(1);

    const reason = new GatewayError('overloaded', 'the gateway stopped before this message was delivered', { shutdown: true });
    lane.close(reason);
    const handedBack = await Promise.all([retrying.result, ...queued.map((q) => q.result)]);
    for (const error of handedBack) {
      expect(error).toMatchObject({ code: 'overloaded', details: { shutdown: true } });
      expect(error).not.toBe(reason);
    }
    expect(handedBack[0]).toMatchObject({ details: { attempts: 1 } });
    expect(clock.pending()).toBe(0);
    expect(target.calls.slice(1).map((c) => c.signal?.aborted)).toEqual([true, true]);
    expect(running.settled() || held.settled()).toBe(false);
    expect(() => send(lane, message('late'))).toThrow(expect.objectContaining({ code: 'overloaded' }));
    expect(lane.canAccept(message('late', 9))).toBe(false);

    // A call running at close keeps its success; its failure becomes the close reason, never retried.
    target.calls[1]!.succeed();
    target.calls[2]!.fail(unavailable());
    expect(await running.result).toEqual({ payload: Buffer.from('ok') });
    expect(await held.result).toMatchObject({ details: { shutdown: true } });
    for (const sent of [retrying, held, ...queued]) sent.settle('deadLettered');
    await lane.idle();
    expect(target.calls).toHaveLength(3);
    expect(lane.stats).toMatchObject({ accepted: 5, delivered: 1, deadLettered: 4, queued: 0, inFlight: 0 });
  });
});

describe('TargetLane on the queue store', () => {
  const dirs: string[] = [];
  const stores: DiskQueueStore[] = [];

  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close();
    for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
  });

  async function diskStore(dir?: string, sync: 'os' | 'fsync' = 'os'): Promise<{ store: DiskQueueStore; dir: string }> {
    const at = dir ?? await mkdtemp(join(tmpdir(), 'junction-lane-'));
    if (!dir) dirs.push(at);
    const store = await DiskQueueStore.open({ dir: at, sync, onError: (err) => { throw err; } });
    stores.push(store);
    return { store, dir: at };
  }

  it('sheds lower priorities at the byte bound, and otherwise refuses with overloaded, changing nothing', async () => {
    const store = new MemoryQueueStore();
    const { clock, target, lane, queue } = setup({ concurrency: 1 }, store.queue('downstream'));
    send(lane, message('b/0', 4));
    await clock.settle();
    const probe = send(lane, message('b/1', 0));
    const size = queue.bytes;
    store.queue('downstream', { maxBytes: 2 * size });
    const low = send(lane, message('b/2', 0));
    expect(lane.canAccept(message('b/3', 0))).toBe(false);
    expect(() => send(lane, message('b/3', 0))).toThrow(expect.objectContaining({ code: 'overloaded' }));
    expect([queue.size, lane.stats.accepted]).toEqual([2, 3]);

    const urgent = send(lane, message('b/4', 9));
    expect(await low.result).toMatchObject({ code: 'overloaded', details: { shed: true } });
    expect(probe.settled()).toBe(false);
    expect(lane.stats).toMatchObject({ shed: 1, queued: 2, inFlight: 2 });
    low.settle('deadLettered');
    target.answer = (call) => call.succeed();
    target.calls[0]!.succeed();
    await Promise.all([urgent.result, probe.result]);
    expect(target.keys()).toEqual(['b/0', 'b/4', 'b/1']);
    expect(queue.held).toBe(0);
    expectBalanced(lane);
  });

  it('records each attempt before its call, so a record recovered after a restart keeps its count', async () => {
    const { store: first, dir } = await diskStore();
    const retry = { attempts: 3, backoffMs: 100, maxBackoffMs: 100 };
    const before = setup({ retry, random: () => 1 }, first.queue('downstream'));
    before.target.answer = (call) => call.fail(unavailable());
    const sent = send(before.lane, message('again'));
    await before.clock.settle();
    expect(before.target.calls).toHaveLength(1);
    // The process dies during the backoff: the store is opened again as a restart would.
    const { store: second } = await diskStore(dir);
    expect(second.recovery).toMatchObject({ targets: ['downstream'], records: 1 });

    const recovered: QueueRecord[] = [];
    const { outcome, sent: after } = recorder();
    const lane = setup({ retry, random: () => 1, recovered: (record) => { recovered.push(record); return outcome; } }, second.queue('downstream'));
    // Started, the lane took the recovered record at once: its second call.
    expect(lane.target.calls).toHaveLength(1);
    lane.target.answer = (call) => call.fail(unavailable());
    lane.target.calls[0]!.fail(unavailable());
    await lane.clock.advance(1000);
    expect(recovered.map((record) => [record.message.key, record.attempts])).toEqual([['again', 3]]);
    expect(lane.target.calls).toHaveLength(2);
    expect(await after.result).toMatchObject({ code: 'upstream_unavailable', details: { attempts: 3 } });
    after.settle('deadLettered');
    await lane.lane.idle();
    expect(lane.lane.stats).toMatchObject({ accepted: 0, adopted: 1, deadLettered: 1, retries: 1 });
    expectBalanced(lane.lane);
    expect(sent.settled()).toBe(false);
  });

  it('hands its queued records to the lane that replaces it; calls running finish where they started, a record in backoff follows when it ends', async () => {
    const queue = new MemoryQueueStore().queue('downstream');
    const retry = { attempts: 2, backoffMs: 100, maxBackoffMs: 100 };
    const old = setup({ concurrency: 2, retry, random: () => 1 }, queue);
    const sent = ['retried', 'running', 'second', 'queued'].map((key) => send(old.lane, message(key)));
    await old.clock.settle();
    old.target.calls[0]!.fail(unavailable());
    await old.clock.settle();
    expect(old.target.keys()).toEqual(['retried', 'running', 'second']);
    expect(old.lane.stats).toMatchObject({ queued: 1, inFlight: 3 });

    const successor = new ScriptedTarget(old.clock);
    successor.answer = (call) => call.succeed();
    const replacement = new TargetLane(successor, queue, { concurrency: 2, maxQueue: 100, timeoutMs: 1000, retry, random: () => 1, clock: old.clock, recovered: NOTHING_RECOVERED });
    replacement.start(old.lane);
    await old.clock.settle();
    expect(successor.keys()).toEqual(['queued']);
    expect(old.lane.stats).toMatchObject({ handedOver: 1, queued: 0 });
    expect(replacement.stats).toMatchObject({ adopted: 1, delivered: 1 });

    await old.clock.advance(100);
    expect(successor.keys()).toEqual(['queued', 'retried']);
    old.target.calls[1]!.succeed();
    old.target.calls[2]!.succeed();
    expect((await Promise.all(sent.map((s) => s.result))).every((r) => !(r instanceof GatewayError))).toBe(true);
    await Promise.all([old.lane.idle(), replacement.idle()]);
    expect(old.lane.stats).toMatchObject({ accepted: 4, delivered: 2, handedOver: 2, retries: 1, inFlight: 0 });
    expect(replacement.stats).toMatchObject({ accepted: 0, adopted: 2, delivered: 2, inFlight: 0 });
    expectBalanced(old.lane);
    expectBalanced(replacement);
    expect([queue.size, queue.held]).toEqual([0, 0]);
  });

  it('leaves a message the dead-letter store refused unsettled in the queue store', async () => {
    const { clock, target, lane, queue } = setup();
    target.answer = (call) => call.fail(refused());
    const sent = send(lane, message('nowhere'));
    await clock.settle();
    await sent.result;
    sent.settle('unsettled');
    await lane.idle();
    expect(lane.stats).toMatchObject({ unsettled: 1, inFlight: 0 });
    expect(queue.held).toBe(1);
    expectBalanced(lane);
  });

  it('returns the store\'s durability promise under fsync, and none for a transient request', async () => {
    const { store } = await diskStore(undefined, 'fsync');
    const { clock, target, lane } = setup({}, store.queue('downstream'));
    target.answer = (call) => call.succeed();
    const durable = send(lane, message('kept'));
    const request = send(lane, message('asked'), { transient: true, timeoutMs: 500 });
    expect(durable.durable).toBeInstanceOf(Promise);
    expect(request.durable).toBeUndefined();
    await durable.durable;
    await clock.settle();
    await Promise.all([durable.result, request.result]);
    expect(lane.stats.delivered).toBe(2);
  });
});
