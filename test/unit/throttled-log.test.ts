import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ThrottledLog } from '../../src/throttled-log.js';

describe('ThrottledLog', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('counts every failure and logs at most one line per interval, with the failures since the last', () => {
    vi.useFakeTimers({ toFake: ['Date'], now: 1_000_000 });
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write(chunk: Buffer, _encoding, done) { lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>); done(); } });
    const log = new ThrottledLog(pino({ base: null }, sink), 'disk says no', 10_000);
    for (let i = 0; i < 3; i++) log.report(new Error('ENOSPC'), { target: 't' });
    vi.setSystemTime(1_009_999);
    log.report(new Error('ENOSPC'));
    vi.setSystemTime(1_010_000);
    log.report(new Error('ENOSPC'));
    expect(log.total).toBe(5);
    expect(lines.map((line) => [line.msg, line.failures])).toEqual([['disk says no', 1], ['disk says no', 4]]);
    expect(lines[0]).toMatchObject({ level: 50, target: 't', err: { message: 'ENOSPC' } });
  });
});
