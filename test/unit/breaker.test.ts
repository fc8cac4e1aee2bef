import { afterEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import { TargetBreaker, type BreakerSettings, type BreakerTransition } from '../../src/protection/breaker.js';
import { fakeClock, type FakeClock } from '../helpers/clock.js';

const SETTINGS: BreakerSettings = { errorThresholdPercentage: 50, volumeThreshold: 4, resetTimeout: 1000, rollingCountTimeout: 10_000, halfOpenProbes: 2 };

const unavailable = () => new GatewayError('upstream_unavailable', 'downstream answered 503', { retryable: true });

/** A call held until the test answers it, so probes can overlap. */
interface Held {
  promise: Promise<string>;
  succeed(): void;
  fail(): void;
}

describe('TargetBreaker', () => {
  let clock: FakeClock;
  let breaker: TargetBreaker;
  let transitions: BreakerTransition[];
  /** calls that actually reached the downstream */
  let reached: number;

  function create(settings: Partial<BreakerSettings> = {}): void {
    clock = fakeClock();
    transitions = [];
    reached = 0;
    breaker = new TargetBreaker({ ...SETTINGS, ...settings }, (t) => transitions.push(t), clock);
  }

  afterEach(() => breaker.shutdown());

  const succeed = () => breaker.call(async () => {
    reached++;
    return 'ok';
  });
  const fail = () => breaker.call(async () => {
    reached++;
    throw unavailable();
  }).catch((err: unknown) => err as GatewayError);
  const held = (): Held => {
    let answer!: (ok: boolean) => void;
    const promise = breaker.call(() => new Promise<string>((resolve, reject) => {
      reached++;
      answer = (ok) => (ok ? resolve('probe ok') : reject(unavailable()));
    }));
    // A call the breaker refuses never gets an answer function; answering it is a test bug.
    return { promise, succeed: () => answer(true), fail: () => answer(false) };
  };
  const states = () => transitions.map((t) => t.state);

  async function open(): Promise<void> {
    for (let i = 0; i < SETTINGS.volumeThreshold; i++) await fail();
    expect(breaker.state).toBe('open');
  }

  it('stays closed below volumeThreshold, then opens once the failure share passes errorThresholdPercentage', async () => {
    create();
    await succeed();
    await succeed();
    await fail();
    await fail();
    // 4 calls, 2 failed: 50 % is not above the 50 % threshold.
    expect(breaker.state).toBe('closed');
    await fail();
    // 5 calls, 3 failed: 60 %.
    expect(breaker.state).toBe('open');
    expect(transitions).toEqual([{ state: 'open', at: clock.now(), reason: 'error threshold reached' }]);
    expect(breaker.counts).toMatchObject({ calls: 5, failures: 3, rejected: 0 });
  });

  it('does not open before volumeThreshold calls, however many of them fail', async () => {
    create();
    for (let i = 0; i < 3; i++) await fail();
    expect(breaker.state).toBe('closed');
    await fail();
    expect(breaker.state).toBe('open');
  });

  it('judges only the rolling window: failures older than rollingCountTimeout no longer count', async () => {
    create();
    for (let i = 0; i < 3; i++) await fail();
    await clock.advance(SETTINGS.rollingCountTimeout);
    await fail();
    expect(breaker.state).toBe('closed');
    for (let i = 0; i < 3; i++) await fail();
    expect(breaker.state).toBe('open');
  });

  it('counts a deliberate refusal (4xx) as an answer, not a failure', async () => {
    create();
    const refusal = new GatewayError('upstream_unavailable', 'downstream answered 400', { retryable: false });
    for (let i = 0; i < 6; i++) await expect(breaker.call(() => Promise.reject(refusal))).rejects.toBe(refusal);
    expect(breaker.state).toBe('closed');
    expect(breaker.counts).toMatchObject({ calls: 6, failures: 0 });
  });

  it('refuses while open without calling the downstream, until resetTimeout has passed', async () => {
    create();
    await open();
    const refused = await fail();
    expect(refused).toMatchObject({ code: 'upstream_unavailable', details: { breakerOpen: true, retryable: false } });
    expect(reached).toBe(4);
    expect(breaker.counts.rejected).toBe(1);
    await clock.advance(SETTINGS.resetTimeout - 1);
    expect(breaker.state).toBe('open');
    await clock.advance(1);
    expect(breaker.state).toBe('half_open');
    expect(transitions.at(-1)).toEqual({ state: 'half_open', at: clock.now(), reason: 'resetTimeout passed; letting 2 probe(s) through' });
  });

  it('half-open admits exactly halfOpenProbes probes and closes once all of them succeeded', async () => {
    create();
    await open();
    await clock.advance(SETTINGS.resetTimeout);
    const calls = Array.from({ length: 5 }, held);
    expect(reached).toBe(4 + 2);
    for (const refused of calls.slice(2)) await expect(refused.promise).rejects.toMatchObject({ details: { breakerOpen: true } });
    calls[0]!.succeed();
    expect(await calls[0]!.promise).toBe('probe ok');
    expect(breaker.state).toBe('half_open');
    calls[1]!.succeed();
    await calls[1]!.promise;
    expect(breaker.state).toBe('closed');
    expect(transitions.at(-1)).toMatchObject({ state: 'closed', reason: '2 probe(s) succeeded' });
    expect(states()).toEqual(['open', 'half_open', 'closed']);
    expect(await succeed()).toBe('ok');
  });

  it('reopens on a failed probe and probes again after another resetTimeout; a late probe of the failed round decides nothing', async () => {
    create();
    await open();
    await clock.advance(SETTINGS.resetTimeout);
    const first = held();
    const second = held();
    second.fail();
    await expect(second.promise).rejects.toMatchObject({ code: 'upstream_unavailable' });
    expect(breaker.state).toBe('open');
    await expect(succeed()).rejects.toMatchObject({ details: { breakerOpen: true } });
    await clock.advance(SETTINGS.resetTimeout);
    expect(states()).toEqual(['open', 'half_open', 'open', 'half_open']);

    first.fail();
    await expect(first.promise).rejects.toMatchObject({ code: 'upstream_unavailable' });
    expect(breaker.state).toBe('half_open');
    await succeed();
    await succeed();
    expect(breaker.state).toBe('closed');
  });

  it('counts a call slower than slowCallThreshold as a failure, yet hands back its result', async () => {
    create({ slowCallThreshold: 100 });
    const slow = async (ms: number) => {
      const call = breaker.call(() => new Promise<string>((resolve) => clock.setTimeout(() => resolve(`took ${ms}`), ms)));
      await clock.advance(ms);
      return call;
    };
    expect(await slow(100)).toBe('took 100');
    expect(breaker.counts.slow).toBe(0);
    for (let i = 0; i < 3; i++) expect(await slow(150)).toBe('took 150');
    // 4 calls, 3 slow: 75 %.
    expect(breaker.state).toBe('open');
    expect(breaker.counts).toMatchObject({ calls: 4, slow: 3, failures: 0 });

    // A slow probe is a failed probe.
    await clock.advance(SETTINGS.resetTimeout);
    expect(await slow(150)).toBe('took 150');
    expect(breaker.state).toBe('open');
  });

  it('holds a forced state until released, which closes it', async () => {
    create();
    breaker.force('open');
    expect(breaker.state).toBe('open');
    expect(breaker.forced).toBe('open');
    await expect(succeed()).rejects.toMatchObject({ details: { breakerOpen: true } });
    expect(reached).toBe(0);

    breaker.force('closed');
    // Forced closed, failures reach the downstream and never open it.
    for (let i = 0; i < 8; i++) await fail();
    expect(reached).toBe(8);
    expect(breaker.state).toBe('closed');

    breaker.force(undefined);
    expect(breaker.forced).toBeUndefined();
    expect(breaker.state).toBe('closed');
    // Released while closed already: no change to report.
    expect(transitions.map((t) => [t.state, t.reason])).toEqual([['open', 'forced by an operator'], ['closed', 'forced by an operator']]);
  });

  it('ignores calls started before a force that fail after it', async () => {
    create();
    const inFlight = Array.from({ length: 4 }, held);
    breaker.force('open');
    for (const call of inFlight) {
      call.fail();
      await expect(call.promise).rejects.toMatchObject({ code: 'upstream_unavailable' });
    }
    expect(clock.pending()).toBe(0);
    breaker.force(undefined);
    expect(states()).toEqual(['open', 'closed']);
    expect(await succeed()).toBe('ok');
  });

  it('released from a forced state, an open breaker is closed and does not half-open later', async () => {
    create();
    await open();
    breaker.force('closed');
    breaker.force(undefined);
    expect(breaker.state).toBe('closed');
    await clock.advance(SETTINGS.resetTimeout * 2);
    expect(breaker.state).toBe('closed');
    expect(clock.pending()).toBe(0);
  });
});
