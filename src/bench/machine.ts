import { readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import type { MachineInfo, ProcessCpu, ProcessFootprint } from './types.js';

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    os: `${os.type()} ${os.release()}`,
    loadAverage: Math.round(os.loadavg()[0]! * 100) / 100,
  };
}

const CLOCK_TICKS = 100;

/** A process's resident set, its high-water mark and its CPU time, read from /proc (Linux). */
export function sampleProcess(pid: number): { rssBytes: number; peakRssBytes: number; cpuSeconds: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0) * 1024;
    // Fields 14 and 15 of stat are utime and stime; the command name (field 2) may hold spaces.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ticks = Number(fields[11]) + Number(fields[12]);
    return { rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM'), cpuSeconds: ticks / CLOCK_TICKS };
  } catch {
    return undefined;
  }
}

/** The process and its descendants (the workers of `--workers N`), from each process's parent in /proc. */
function withDescendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)]);
    } catch {
      // gone since readdir
    }
  }
  const tree = [pid];
  // Each round adds one process's children: bounded by the processes listed.
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []));
  return tree;
}

/** A group of processes summed: the server, its workers and what it needs (its Redis). */
function sampleGroup(pids: number[]): { rssBytes: number; peakRssBytes: number; cpuSeconds: number } | undefined {
  const samples = pids.map(sampleProcess).filter((s) => s !== undefined);
  if (samples.length === 0) return undefined;
  return samples.reduce((sum, s) => ({ rssBytes: sum.rssBytes + s.rssBytes, peakRssBytes: sum.peakRssBytes + s.peakRssBytes, cpuSeconds: sum.cpuSeconds + s.cpuSeconds }));
}

/**
 * Tracks one server over a run: RSS before, once connected, half-way, at the end of sending,
 * after; CPU over the window. The
 * server is its process with its descendants, plus `companions` (cluster mode's redis-server).
 */
export class FootprintTracker {
  readonly #pid: number;
  readonly #companions: readonly number[];
  readonly #rssBefore: number;
  #rssConnected: number | undefined;
  #rssMid: number | undefined;
  #rssEnd: number | undefined;
  #cpuAtStart = 0;
  #cpuSeconds = 0;
  /** each process's CPU seconds when the window started, then spent in it */
  #processesAtStart = new Map<number, number>();
  #byProcess: ProcessCpu[] = [];

  constructor(pid: number, companions: readonly number[] = []) {
    this.#pid = pid;
    this.#companions = companions;
    this.#rssBefore = this.#sample()?.rssBytes ?? 0;
  }

  #sample(): ReturnType<typeof sampleGroup> {
    return sampleGroup([...withDescendants(this.#pid), ...this.#companions]);
  }

  connected(): void {
    this.#rssConnected = this.#sample()?.rssBytes;
  }

  /** Half-way through sending. */
  midway(): void {
    this.#rssMid = this.#sample()?.rssBytes;
  }

  /** The senders stopped; deliveries may still be draining. */
  sendingEnded(): void {
    this.#rssEnd = this.#sample()?.rssBytes;
  }

  windowStarted(): void {
    this.#cpuAtStart = this.#sample()?.cpuSeconds ?? 0;
    this.#processesAtStart = new Map(this.#processes().map(({ pid }) => [pid, sampleProcess(pid)?.cpuSeconds ?? 0]));
  }

  windowEnded(): void {
    this.#cpuSeconds = (this.#sample()?.cpuSeconds ?? this.#cpuAtStart) - this.#cpuAtStart;
    this.#byProcess = this.#processes().flatMap(({ pid, role }) => {
      const start = this.#processesAtStart.get(pid);
      const end = sampleProcess(pid)?.cpuSeconds;
      // A process started or gone within the window (a restarted worker) has no span to report.
      return start === undefined || end === undefined ? [] : [{ role, pid, cpuSeconds: Math.round((end - start) * 100) / 100 }];
    });
  }

  /** The server's processes by role: a process with children is the primary of its workers. */
  #processes(): { pid: number; role: ProcessCpu['role'] }[] {
    const [pid, ...descendants] = withDescendants(this.#pid);
    return [
      { pid: pid!, role: descendants.length > 0 ? 'primary' : 'gateway' },
      ...descendants.map((worker) => ({ pid: worker, role: 'worker' as const })),
      ...this.#companions.map((companion) => ({ pid: companion, role: 'redis' as const })),
    ];
  }

  footprint(): ProcessFootprint {
    const now = this.#sample();
    return {
      pid: this.#pid,
      rssBeforeBytes: this.#rssBefore,
      ...(this.#rssConnected === undefined ? {} : { rssConnectedBytes: this.#rssConnected }),
      ...(this.#rssMid === undefined || this.#rssEnd === undefined ? {} : { rssMidBytes: this.#rssMid, rssEndBytes: this.#rssEnd }),
      rssAfterBytes: now?.rssBytes ?? 0,
      peakRssBytes: now?.peakRssBytes ?? 0,
      cpuSeconds: Math.round(this.#cpuSeconds * 100) / 100,
      ...(this.#byProcess.length > 1 ? { cpuByProcess: this.#byProcess } : {}),
    };
  }
}
