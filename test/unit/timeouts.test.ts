import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { settledBy, withTimeout } from '../../src/timeouts.js';

describe('bounded waits', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('withTimeout gives the work its outcome, or the timeout error, and leaves no timer behind', async () => {
    await expect(withTimeout(Promise.resolve(1), 100, () => new Error('late'))).resolves.toBe(1);
    await expect(withTimeout(Promise.reject(new Error('boom')), 100, () => new Error('late'))).rejects.toThrow('boom');
    expect(vi.getTimerCount()).toBe(0);
    const late = withTimeout(new Promise(() => undefined), 100, () => new Error('late'));
    const settled = expect(late).rejects.toThrow('late');
    await vi.advanceTimersByTimeAsync(100);
    await settled;
    expect(vi.getTimerCount()).toBe(0);
  });

  it('settledBy says whether the work finished before the deadline, whatever its outcome', async () => {
    await expect(settledBy(Promise.reject(new Error('x')), Date.now() + 100)).resolves.toBe(true);
    const never = settledBy(new Promise(() => undefined), Date.now() + 100);
    await vi.advanceTimersByTimeAsync(100);
    await expect(never).resolves.toBe(false);
    const past = settledBy(new Promise(() => undefined), Date.now() - 1);
    await vi.advanceTimersByTimeAsync(0);
    await expect(past).resolves.toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });
});
