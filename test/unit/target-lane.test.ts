import { describe, expect, it } from 'vitest';
import { TargetLane, type LaneOptions } from '../../src/delivery/target-lane.js';
import { GatewayError } from '../../src/errors.js';
import { createMessage, type Message } from '../../src/message.js';
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
  return createMessage({ key, payload: Buffer.from(key), priority, source: { protocol: 'internal' }, ...(expiresAt !== undefined ? { expiresAt } : {}) });
}

/** What a submitted message came to: kept so a rejection is never unhandled while the test runs on. */
function outcome(promise: Promise<TargetReply>): { result: Promise<TargetReply | GatewayError>; settled: () => boolean } {
  let done = false;
  const result = promise.then(
    (reply) => reply,
    (err: unknown) => err as GatewayError,
  ).finally(() => { done = true; });
  return { result, settled: () => done };
}

function setup(options: Partial<LaneOptions> = {}): { clock: FakeClock; target: ScriptedTarget; lane: TargetLane } {
  const clock = fakeClock();
  const target = new ScriptedTarget(clock);
  const lane = new TargetLane(target, { concurrency: 4, maxQueue: 100, timeoutMs: 1000, clock, ...options });
  return { clock, target, lane };
}

/** The dispatcher's part: a message the lane gave up on is settled, here as dead-lettered. */
function deadLetter(lane: TargetLane, error: GatewayError | TargetReply): void {
  if (error instanceof GatewayError && !error.details.expired) lane.settle(Promise.resolve('deadLettered'));
}

describe('TargetLane retries', () => {
  const retry = { attempts: 4, backoffMs: 100, maxBackoffMs: 250 };

  it('retries a retryable failure after exponential backoff capped at maxBackoffMs, then gives up with the attempts made', async () => {
    // The jitter draw is 1: every wait is the whole cap, 100, 200, then 250 (not 400).
    const { clock, target, lane } = setup({ retry, random: () => 1 });
    target.answer = (call) => call.fail(unavailable());
    const start = clock.now();
    const sent = outcome(lane.submit(message('r')));
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
    deadLetter(lane, error as GatewayError);
    await lane.idle();
    expect(lane.stats).toMatchObject({ deadLettered: 1, inFlight: 0 });
  });

  it('scales each wait by the jitter draw (full jitter: anywhere from 0 to the cap)', async () => {
    const draws = [0.5, 0.25, 0.1];
    const { clock, target, lane } = setup({ retry, random: () => draws.shift()! });
    target.answer = (call) => (target.calls.length < 4 ? call.fail(unavailable()) : call.succeed());
    const start = clock.now();
    const sent = outcome(lane.submit(message('j')));
    await clock.advance(1000);
    // 0.5 × 100, then 0.25 × 200, then 0.1 × 250.
    expect(target.calls.map((c) => c.at - start)).toEqual([0, 50, 100, 125]);
    expect(await sent.result).toEqual({ payload: Buffer.from('ok') });
    expect(lane.stats).toMatchObject({ delivered: 1, retries: 3, inFlight: 0 });
  });

  it('does not retry a deliberate refusal', async () => {
    const { clock, target, lane } = setup({ retry, random: () => 1 });
    target.answer = (call) => call.fail(refused());
    const sent = outcome(lane.submit(message('no')));
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
    const sent = outcome(lane.submit(message('b')));
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
    const sent = outcome(lane.submit(message('req'), { timeoutMs: 200 }));
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
    const sent = Array.from({ length: 6 }, (_, i) => outcome(lane.submit(message(`paced/${i}`))));
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
    const sent = Array.from({ length: 5 }, (_, i) => outcome(lane.submit(message(`c/${i}`))));
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
    const first = outcome(lane.submit(message('first', 4)));
    await clock.settle();
    const low = ['low-1', 'low-2', 'low-3'].map((key) => outcome(lane.submit(message(key, 0))));
    expect(lane.canAccept(0)).toBe(false);
    expect(() => lane.submit(message('low-4', 0))).toThrow(expect.objectContaining({ code: 'overloaded', details: { retryAfterMs: 1000 } }));
    expect(lane.canAccept(9)).toBe(true);
    const alarm = outcome(lane.submit(message('alarm', 9)));
    await clock.settle();

    expect(await low[2]!.result).toMatchObject({ code: 'overloaded', details: { shed: true } });
    expect(low[0]!.settled()).toBe(false);
    expect(shedding).toEqual([true]);
    lane.settle(Promise.resolve('deadLettered'));

    target.answer = (call) => call.succeed();
    target.calls[0]!.succeed();
    await Promise.all([first.result, alarm.result, low[0]!.result, low[1]!.result]);
    expect(target.keys()).toEqual(['first', 'alarm', 'low-1', 'low-2']);
    expect(shedding).toEqual([true, false]);
    expect(lane.stats).toMatchObject({ accepted: 5, delivered: 4, shed: 1, deadLettered: 1, queued: 0, inFlight: 0 });
  });

  it('drops a message that expires while queued, counted as expired, without calling the downstream', async () => {
    const { clock, target, lane } = setup({ concurrency: 1 });
    const first = outcome(lane.submit(message('first')));
    await clock.settle();
    const brief = outcome(lane.submit(message('brief', 4, clock.now() + 50)));
    const lasting = outcome(lane.submit(message('lasting', 4, clock.now() + 500)));
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
    const retrying = outcome(lane.submit(message('retrying')));
    await clock.settle();
    target.calls[0]!.fail(unavailable());
    await clock.settle();
    const running = outcome(lane.submit(message('running')));
    const held = outcome(lane.submit(message('held')));
    const queued = [outcome(lane.submit(message('queued-1'))), outcome(lane.submit(message('queued-2')))];
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
    expect(() => lane.submit(message('late'))).toThrow(expect.objectContaining({ code: 'overloaded' }));
    expect(lane.canAccept(9)).toBe(false);

    // A call running at close keeps its success; its failure becomes the close reason, never retried.
    target.calls[1]!.succeed();
    target.calls[2]!.fail(unavailable());
    expect(await running.result).toEqual({ payload: Buffer.from('ok') });
    expect(await held.result).toMatchObject({ details: { shutdown: true } });
    for (let i = 0; i < 4; i++) lane.settle(Promise.resolve('deadLettered'));
    await lane.idle();
    expect(target.calls).toHaveLength(3);
    expect(lane.stats).toMatchObject({ accepted: 5, delivered: 1, deadLettered: 4, queued: 0, inFlight: 0 });
  });
});
