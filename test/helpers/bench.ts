import { expect } from 'vitest';
import { runCli } from './cli.js';
import type { BenchResult } from '../../src/bench/types.js';

/** Runs `junction bench … --json` without warm-up and returns its result. */
export async function bench(args: string[]): Promise<BenchResult> {
  const run = await runCli(['bench', ...args, '--json', '--warmup', '0', '--drain', '5'], { timeoutMs: 60_000 });
  if (run.code !== 0) throw new Error(`junction bench ${args.join(' ')} exited ${run.code}: ${run.stderr}`);
  return JSON.parse(run.stdout) as BenchResult;
}

/** What every message-moving run must show: all sent, all delivered or acknowledged, no errors. */
export function expectComplete(result: BenchResult, sent: number, fanout: number): void {
  expect(result.errorSamples).toEqual([]);
  expect(result.errors).toBe(0);
  expect(result.sent).toBe(sent);
  expect(result.expected).toBe(sent * fanout);
  expect(result.received).toBe(sent * fanout);
  expect(result.latency.count).toBe(sent * fanout);
  expect(result.latency.p50).toBeGreaterThan(0);
  expect(result.latency.p99).toBeGreaterThanOrEqual(result.latency.p50);
  expect(result.receivedPerS).toBeGreaterThan(0);
}

