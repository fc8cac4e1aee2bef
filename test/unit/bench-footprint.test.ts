import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { FootprintTracker } from '../../src/bench/machine.js';
import { eventually } from '../helpers/eventually.js';

/** every process a test started, its children's children included */
const running: number[] = [];

afterEach(() => {
  for (const pid of running.splice(0)) process.kill(pid, 'SIGKILL');
});

/** A Node process that idles; with `children`, it first starts that many idling children of its own. */
function idler(children = 0): ChildProcess {
  const idle = 'setInterval(() => undefined, 1000)';
  const script = `for (let i = 0; i < ${children}; i++) require('node:child_process').spawn(process.execPath, ['-e', ${JSON.stringify(idle)}], { stdio: 'ignore' }); ${idle}`;
  const child = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
  running.push(child.pid!);
  return child;
}

function childrenOf(pid: number): number[] {
  return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
}

describe('the server footprint of a bench run', () => {
  it('splits the window\'s CPU by process in cluster mode: the primary, each worker, Redis', async () => {
    const primary = idler(2);
    const redis = idler();
    const workers = await eventually(() => {
      const found = childrenOf(primary.pid!);
      expect(found).toHaveLength(2);
      return found;
    });
    running.push(...workers);
    const tracker = new FootprintTracker(primary.pid!, [redis.pid!]);
    tracker.windowStarted();
    tracker.windowEnded();
    const split = tracker.footprint().cpuByProcess!;
    const pids = (role: string) => split.filter((p) => p.role === role).map((p) => p.pid).sort();
    expect(pids('primary')).toEqual([primary.pid]);
    expect(pids('worker')).toEqual([...workers].sort());
    expect(pids('redis')).toEqual([redis.pid]);
    expect(split).toHaveLength(4);
    for (const { cpuSeconds } of split) expect(cpuSeconds).toBeGreaterThanOrEqual(0);
  });

  it('reports no split for one lone process', () => {
    const gateway = idler();
    const tracker = new FootprintTracker(gateway.pid!);
    tracker.windowStarted();
    tracker.windowEnded();
    expect(tracker.footprint().cpuByProcess).toBeUndefined();
  });
});
