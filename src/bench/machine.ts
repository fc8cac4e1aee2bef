import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { MachineInfo, ProcessFootprint } from './types.js';

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

/** Tracks one server process over a run: RSS before, once connected, half-way, at the end of sending, after; CPU over the window. */
export class FootprintTracker {
  readonly #pid: number;
  readonly #rssBefore: number;
  #rssConnected: number | undefined;
  #rssMid: number | undefined;
  #rssEnd: number | undefined;
  #cpuAtStart = 0;
  #cpuSeconds = 0;

  constructor(pid: number) {
    this.#pid = pid;
    this.#rssBefore = sampleProcess(pid)?.rssBytes ?? 0;
  }

  connected(): void {
    this.#rssConnected = sampleProcess(this.#pid)?.rssBytes;
  }

  /** Half-way through sending. */
  midway(): void {
    this.#rssMid = sampleProcess(this.#pid)?.rssBytes;
  }

  /** The senders stopped; deliveries may still be draining. */
  sendingEnded(): void {
    this.#rssEnd = sampleProcess(this.#pid)?.rssBytes;
  }

  windowStarted(): void {
    this.#cpuAtStart = sampleProcess(this.#pid)?.cpuSeconds ?? 0;
  }

  windowEnded(): void {
    this.#cpuSeconds = (sampleProcess(this.#pid)?.cpuSeconds ?? this.#cpuAtStart) - this.#cpuAtStart;
  }

  footprint(): ProcessFootprint {
    const now = sampleProcess(this.#pid);
    return {
      pid: this.#pid,
      rssBeforeBytes: this.#rssBefore,
      ...(this.#rssConnected === undefined ? {} : { rssConnectedBytes: this.#rssConnected }),
      ...(this.#rssMid === undefined || this.#rssEnd === undefined ? {} : { rssMidBytes: this.#rssMid, rssEndBytes: this.#rssEnd }),
      rssAfterBytes: now?.rssBytes ?? 0,
      peakRssBytes: now?.peakRssBytes ?? 0,
      cpuSeconds: Math.round(this.#cpuSeconds * 100) / 100,
    };
  }
}
