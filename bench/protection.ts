/**
 * Protection layer benchmarks, in process (no sockets, so only the layer itself is measured):
 *
 * 1. Hot-path cost: msgs/s through Dispatcher → TargetLane (priority queue, token bucket,
 *    concurrency limit, circuit breaker) to an in-memory target, against the same dispatch with the
 *    lane's protections turned off (no bucket, no breaker, unbounded), in pairs of runs; the
 *    ratio is the median of the pairs' ratios. Goal: ≥ 0.9×.
 * 2. Priority under overload: a target that serves 2,000 msgs/s (concurrency 2 × 1 ms) offered
 *    4,000 msgs/s (2×), 10 % priority 9, 90 % priority 0; p50/p99 queueing+service latency per
 *    priority (hdr-histogram-js), with shedding of the lowest priority once the queue is full.
 *
 * Run after `npm run build`: `node dist/bench/protection.js [--json]`.
 */
import os from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import * as hdr from 'hdr-histogram-js';
import { median } from '../src/bench/medians.js';
import { LocalBus } from '../src/bus/index.js';
import type { RouteConfig } from '../src/config/schema.js';
import { DeadLetterStore } from '../src/deadletter/store.js';
import { Dispatcher } from '../src/delivery/dispatcher.js';
import { TargetLane, type LaneOptions } from '../src/delivery/target-lane.js';
import { silentLogger } from '../src/log.js';
import { createMessage, type Message } from '../src/message.js';
import { IngressLimiter } from '../src/protection/ingress-limiter.js';
import { MemoryQueueStore } from '../src/queue/index.js';
import { compileRouteTable } from '../src/router/index.js';
import type { Target, TargetReply } from '../src/targets/target.js';

const json = process.argv.includes('--json');
/**
 * Pairs of runs, one of each arm back to back. The ratio is the median of the pairs' own ratios:
 * a pair runs in the same seconds, so a change in the machine's load moves both of its arms, where
 * a ratio of the two arms' medians could set one pair's bare run against another's guarded one.
 */
const PAIRS = 9;
/** Pairs run first and not counted: the JIT compiles both paths, and the first runs of each are slower. */
const WARMUP_PAIRS = 1;
const MESSAGES = 200_000;
const REPLY: TargetReply = { payload: Buffer.alloc(0) };

class InstantTarget implements Target {
  readonly type = 'memory';
  readonly name = 'sink';
  delivered = 0;
  deliver(): Promise<TargetReply> {
    this.delivered++;
    return Promise.resolve(REPLY);
  }
  async close(): Promise<void> {}
}

/** A downstream with a fixed service time: its capacity is concurrency / serviceMs. */
class TimedTarget implements Target {
  readonly type = 'memory';
  readonly name = 'slow';
  constructor(readonly serviceMs: number, readonly onDone: (message: Message) => void) {}
  deliver(message: Message): Promise<TargetReply> {
    return new Promise((resolve) => setTimeout(() => {
      this.onDone(message);
      resolve(REPLY);
    }, this.serviceMs));
  }
  async close(): Promise<void> {}
}

const ROUTES: RouteConfig[] = [{ name: 'r', match: { key: 'bench/#' }, priority: 0, mode: 'deliver', timeout: 5000, continue: false, expired: 'drop', to: ['sink'], rateLimit: { rate: 10_000_000, per: 1000, burst: 10_000_000, scope: 'route' } }];

/** A memory store's queues hold only what was submitted: nothing recovered to give an outcome to. */
const NOTHING_RECOVERED = { recovered: () => { throw new Error('a memory queue store recovers nothing'); } };

function dispatcher(target: Target, lane: Omit<LaneOptions, 'recovered'>, limited: boolean, store: DeadLetterStore): { dispatcher: Dispatcher; lane: TargetLane } {
  const targetLane = new TargetLane(target, new MemoryQueueStore().queue(target.name), { ...lane, ...NOTHING_RECOVERED });
  targetLane.start();
  const routes = limited ? ROUTES : ROUTES.map((r) => ({ ...r, rateLimit: undefined }));
  const d = new Dispatcher(
    { table: compileRouteTable(routes as RouteConfig[], 'drop'), lanes: new Map([[target.name, targetLane]]), requestTimeoutMs: 5000 },
    { bus: new LocalBus((err) => { throw err; }), deadletter: store, logger: silentLogger(), ...(limited ? { limiter: new IngressLimiter() } : {}) },
  );
  return { dispatcher: d, lane: targetLane };
}

async function throughput(protectedLane: boolean, store: DeadLetterStore): Promise<number> {
  const target = new InstantTarget();
  const options: Omit<LaneOptions, 'recovered'> = protectedLane
    ? {
      concurrency: 64, maxQueue: 10_000, timeoutMs: 5000,
      rateLimit: { rate: 10_000_000, perMs: 1000, burst: 10_000_000 },
      breaker: { errorThresholdPercentage: 50, resetTimeout: 10_000, volumeThreshold: 10, rollingCountTimeout: 10_000, halfOpenProbes: 1 },
      retry: { attempts: 3, backoffMs: 100, maxBackoffMs: 1000 },
    }
    : { concurrency: Number.MAX_SAFE_INTEGER, maxQueue: Number.MAX_SAFE_INTEGER, timeoutMs: 5000 };
  const { dispatcher: d, lane } = dispatcher(target, options, protectedLane, store);
  const payload = Buffer.alloc(100);
  const source = { protocol: 'internal' as const, clientId: 'bench' };
  const started = process.hrtime.bigint();
  // Batches of 1,000 in flight: how a busy adapter feeds the dispatcher.
  for (let sent = 0; sent < MESSAGES; sent += 1000) {
    const batch: Promise<unknown>[] = [];
    for (let i = 0; i < 1000; i++) batch.push(d.dispatch(createMessage({ key: 'bench/a/b', payload, source })));
    await Promise.all(batch);
    await lane.idle();
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  lane.breaker?.shutdown();
  if (target.delivered !== MESSAGES) throw new Error(`delivered ${target.delivered} of ${MESSAGES}`);
  return MESSAGES / seconds;
}

async function overload(store: DeadLetterStore): Promise<Record<string, { p50: number; p99: number; delivered: number }>> {
  const histograms = { 9: hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 }), 0: hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 }) };
  const sentAt = new Map<string, number>();
  const delivered = { 9: 0, 0: 0 };
  const target = new TimedTarget(1, (message) => {
    const p = message.priority as 0 | 9;
    histograms[p].recordValue(Math.max(1, Math.round((performance.now() - sentAt.get(message.id)!) * 1000)));
    delivered[p]++;
  });
  ROUTES[0]!.to = ['slow'];
  const { dispatcher: d, lane } = dispatcher(target, { concurrency: 2, maxQueue: 2000, timeoutMs: 5000 }, false, store);
  const source = { protocol: 'internal' as const };
  const payload = Buffer.alloc(100);
  const seconds = 5;
  const rate = 4000;
  const started = performance.now();
  let sent = 0;
  // Open loop at a fixed rate: every millisecond tick sends what is due, whatever the target does.
  await new Promise<void>((resolve) => {
    const tick = setInterval(() => {
      const due = Math.min(rate * seconds, Math.floor(((performance.now() - started) / 1000) * rate));
      for (; sent < due; sent++) {
        const message = createMessage({ key: 'bench/x', payload, source, priority: sent % 10 === 0 ? 9 : 0 });
        sentAt.set(message.id, performance.now());
        d.dispatch(message).catch(() => undefined);
      }
      if (sent >= rate * seconds) {
        clearInterval(tick);
        resolve();
      }
    }, 1);
  });
  await lane.idle();
  ROUTES[0]!.to = ['sink'];
  const ms = (h: hdr.Histogram, q: number) => h.getValueAtPercentile(q) / 1000;
  return {
    priority9: { p50: ms(histograms[9], 50), p99: ms(histograms[9], 99), delivered: delivered[9] },
    priority0: { p50: ms(histograms[0], 50), p99: ms(histograms[0], 99), delivered: delivered[0] },
  };
}


async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'junction-bench-'));
  const store = new DeadLetterStore({ path: join(dir, 'dl.jsonl'), maxFileSize: 1024 ** 3, maxBytes: 4 * 1024 ** 3, whenFull: 'refuse', fsync: false });
  const bare: number[] = [];
  const guarded: number[] = [];
  for (let pair = -WARMUP_PAIRS; pair < PAIRS; pair++) {
    // Alternate which goes first, so drift in machine load hits both alike.
    let b: number;
    let g: number;
    if (pair % 2 === 0) { b = await throughput(false, store); g = await throughput(true, store); }
    else { g = await throughput(true, store); b = await throughput(false, store); }
    if (pair < 0) continue;
    bare.push(b);
    guarded.push(g);
  }
  const ratios = guarded.map((g, i) => g / bare[i]!);
  const overloadResult = await overload(store);
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  const result = {
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 1024 ** 3), node: process.version },
    hotPath: {
      unprotectedMsgsPerSec: Math.round(median(bare)), protectedMsgsPerSec: Math.round(median(guarded)),
      ratio: Number(median(ratios).toFixed(2)),
      ratioRange: [Number(Math.min(...ratios).toFixed(2)), Number(Math.max(...ratios).toFixed(2))],
      runs: PAIRS, messagesPerRun: MESSAGES,
    },
    overload: overloadResult,
  };
  if (json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  console.log(`machine: ${result.machine.cpus} × ${result.machine.model}, ${result.machine.memoryGiB} GiB, Node ${result.machine.node}`);
  console.log(`hot path (medians of ${PAIRS} pairs): unprotected ${result.hotPath.unprotectedMsgsPerSec} msgs/s, protected ${result.hotPath.protectedMsgsPerSec} msgs/s, ratio ${result.hotPath.ratio} (pairs ${result.hotPath.ratioRange.join('–')})`);
  console.log(`2× overload: priority 9 p50 ${overloadResult.priority9!.p50} ms p99 ${overloadResult.priority9!.p99} ms (${overloadResult.priority9!.delivered} delivered); priority 0 p50 ${overloadResult.priority0!.p50} ms p99 ${overloadResult.priority0!.p99} ms (${overloadResult.priority0!.delivered} delivered)`);
}

await main();
