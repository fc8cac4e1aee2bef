import { describe, expect, it } from 'vitest';
import { History } from '../../src/admin/history.js';
import { LatencyWindow } from '../../src/latency-window.js';

describe('the dashboard history', () => {
  it('keeps per-interval counts of the last N intervals and the rules\' recent rates', () => {
    const history = new History(3);
    history.sample(0, { received: {}, routes: {}, rejected: 0, delivered: 0 });
    history.sample(1000, { received: { http: 4 }, routes: { a: 4 }, rejected: 1, delivered: 4 });
    history.sample(2000, { received: { http: 6, mqtt: 2 }, routes: { a: 6, default: 2 }, rejected: 1, delivered: 8 });
    history.sample(4000, { received: { http: 6, mqtt: 6 }, routes: { a: 6, default: 6 }, rejected: 3, delivered: 8 });
    history.sample(5000, { received: { http: 7, mqtt: 6 }, routes: { a: 7, default: 6 }, rejected: 3, delivered: 9 });
    expect(history.points()).toEqual([
      { t: 2000, dt: 1000, received: { http: 2, mqtt: 2 }, rejected: 0, delivered: 4 },
      { t: 4000, dt: 2000, received: { mqtt: 4 }, rejected: 2, delivered: 0 },
      { t: 5000, dt: 1000, received: { http: 1 }, rejected: 0, delivered: 1 },
    ]);
    // the newest two intervals: 3 s, rule a matched once, default four times
    expect(history.routeRates(2)).toEqual({ a: 1 / 3, default: 4 / 3 });
  });

  it('counts a counter that restarted from zero, never a negative interval', () => {
    const history = new History(5);
    history.sample(0, { received: { http: 5 }, routes: {}, rejected: 0, delivered: 10 });
    history.sample(1000, { received: { http: 2 }, routes: {}, rejected: 0, delivered: 3 });
    expect(history.points()).toEqual([{ t: 1000, dt: 1000, received: { http: 2 }, rejected: 0, delivered: 0 }]);
  });
});

describe('the latency window', () => {
  it('gives percentiles of the last seconds from an HDR histogram, within its 1 % precision', () => {
    const window = new LatencyWindow(3);
    for (let ms = 1; ms <= 100; ms++) window.record('http', ms / 1000);
    const q = window.percentiles().http!;
    expect(q.count).toBe(100);
    expect(q.p50).toBeCloseTo(0.050, 3);
    expect(q.p90).toBeCloseTo(0.090, 3);
    expect(q.p99).toBeCloseTo(0.099, 3);
    expect(q.max).toBeCloseTo(0.100, 3);
  });

  it('lets a second leave the window once it has rotated past it', () => {
    const window = new LatencyWindow(2);
    window.record('orders', 2);
    window.rotate();
    window.record('orders', 0.001);
    expect(window.percentiles().orders).toMatchObject({ count: 2 });
    window.rotate();
    const left = window.percentiles().orders!;
    expect(left.count).toBe(1);
    expect(left.max).toBeCloseTo(0.001, 4);
    window.rotate();
    expect(window.percentiles()).toEqual({});
  });
});
