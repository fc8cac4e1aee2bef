/**
 * Queue store benchmarks, in process (the store alone: no sockets, no lane):
 *
 * 1. Appends: msgs/s and append latency p50/p99 per sync policy (`none` = memory, `os`, `fsync`),
 *    with 64 appends in flight; an append's latency runs from the call until the sender may be
 *    acknowledged (its `durable` promise, when the policy has one).
 * 2. A message's whole stay, append → take → attempt → settle, back to back with a turn of the
 *    event loop every 1,000 messages (when deferred writes and group commits run): µs per
 *    message, the store's share of a QoS 1 message's cost on the event loop.
 * 3. Recovery: opening a disk store that holds 100,000 unsettled records (4 targets, 10 priorities).
 *
 * 256-byte payloads. Each figure is the median of RUNS runs. Run after `npm run build`:
 * `node dist/bench/queue-store.js [--json]`.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import * as hdr from 'hdr-histogram-js';
import { median } from '../src/bench/medians.js';
import { createMessage, type Message } from '../src/message.js';
import { DiskQueueStore, openQueueStore, type QueueStore, type SyncPolicy } from '../src/queue/index.js';

const json = process.argv.includes('--json');
const RUNS = 5;
const APPENDS = 100_000;
const IN_FLIGHT = 64;
const CYCLES = 100_000;
const RECOVERY_RECORDS = 100_000;
const POLICIES: SyncPolicy[] = ['none', 'os', 'fsync'];

/** Built once: the benchmark measures the store, not message creation. */
const MESSAGES: Message[] = Array.from({ length: 1024 }, (_, i) => createMessage({
  key: `devices/d${String(i).padStart(4, '0')}/telemetry`,
  payload: Buffer.alloc(256, i),
  headers: { 'content-type': 'application/json' },
  priority: i % 10,
  qos: 1,
  source: { protocol: 'mqtt', clientId: `device-${i}`, remoteAddress: '10.0.0.1:50000' },
}));

function fail(error: Error): never {
  throw error;
}

async function withStore<T>(sync: SyncPolicy, use: (store: QueueStore) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(os.tmpdir(), 'junction-queue-bench-'));
  const store = await openQueueStore({ dir, sync, onError: fail });
  try {
    return await use(store);
  } finally {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface AppendRun {
  perSec: number;
  p50Us: number;
  p99Us: number;
}

/** IN_FLIGHT producers, each appending its next message once the previous one may be acknowledged. */
function appends(sync: SyncPolicy): Promise<AppendRun> {
  return withStore(sync, async (store) => {
    const queue = store.queue('ingest');
    const latency = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 10_000_000_000, numberOfSignificantValueDigits: 3 });
    let next = 0;
    const producer = async (): Promise<void> => {
      while (next < APPENDS) {
        const message = MESSAGES[next++ % MESSAGES.length]!;
        const started = process.hrtime.bigint();
        const { durable } = queue.append(message);
        if (durable) await durable;
        latency.recordValue(Math.max(1, Number(process.hrtime.bigint() - started)));
      }
    };
    const started = process.hrtime.bigint();
    await Promise.all(Array.from({ length: IN_FLIGHT }, producer));
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    return { perSec: APPENDS / seconds, p50Us: latency.getValueAtPercentile(50) / 1000, p99Us: latency.getValueAtPercentile(99) / 1000 };
  });
}

/** µs per message for its whole stay in the store. */
function cycles(sync: SyncPolicy): Promise<number> {
  return withStore(sync, async (store) => {
    const queue = store.queue('ingest');
    let durable: Promise<void> | undefined;
    const started = process.hrtime.bigint();
    for (let i = 0; i < CYCLES; i++) {
      durable = queue.append(MESSAGES[i % MESSAGES.length]!).durable;
      const record = queue.take()!;
      queue.recordAttempt(record);
      queue.settle(record, 'delivered');
      if (i % 1000 === 999) await new Promise((resolve) => setImmediate(resolve));
    }
    await durable;
    return Number(process.hrtime.bigint() - started) / 1000 / CYCLES;
  });
}

interface RecoveryRun {
  ms: number;
  records: number;
  megabytes: number;
  segments: number;
}

async function recovery(): Promise<RecoveryRun[]> {
  const dir = mkdtempSync(join(os.tmpdir(), 'junction-queue-bench-'));
  try {
    const store = await DiskQueueStore.open({ dir, sync: 'os', onError: fail });
    const targets = ['ingest', 'billing', 'audit', 'alerts'].map((name) => store.queue(name));
    for (let i = 0; i < RECOVERY_RECORDS; i++) targets[i % targets.length]!.append(MESSAGES[i % MESSAGES.length]!);
    // Some records were in flight when the process stopped: their attempts come back too.
    for (const queue of targets) {
      for (let i = 0; i < 100; i++) queue.recordAttempt(queue.take()!);
    }
    const megabytes = store.diskBytes.total / 1024 ** 2;
    await store.close();
    const runs: RecoveryRun[] = [];
    for (let run = 0; run < RUNS; run++) {
      const started = performance.now();
      const reopened = await DiskQueueStore.open({ dir, sync: 'os', onError: fail });
      const ms = performance.now() - started;
      if (reopened.recovery.records !== RECOVERY_RECORDS) throw new Error(`recovered ${reopened.recovery.records} of ${RECOVERY_RECORDS}`);
      runs.push({ ms, records: reopened.recovery.records, megabytes, segments: reopened.recovery.segments });
      await reopened.close();
    }
    return runs;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const results: Record<string, { appendsPerSec: number; p50Us: number; p99Us: number; cycleUs: number }> = {};
  for (const sync of POLICIES) {
    const runs: AppendRun[] = [];
    const cycleUs: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      runs.push(await appends(sync));
      cycleUs.push(await cycles(sync));
    }
    results[sync] = {
      appendsPerSec: Math.round(median(runs.map((r) => r.perSec))),
      p50Us: Number(median(runs.map((r) => r.p50Us)).toFixed(1)),
      p99Us: Number(median(runs.map((r) => r.p99Us)).toFixed(1)),
      cycleUs: Number(median(cycleUs).toFixed(2)),
    };
  }
  const recoveryRuns = await recovery();
  const recovered = {
    records: RECOVERY_RECORDS,
    megabytes: Number(recoveryRuns[0]!.megabytes.toFixed(1)),
    segments: recoveryRuns[0]!.segments,
    ms: Math.round(median(recoveryRuns.map((r) => r.ms))),
  };
  const machine = { cpus: os.cpus().length, model: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 1024 ** 3), node: process.version };
  if (json) {
    console.log(JSON.stringify({ machine, runs: RUNS, payloadBytes: 256, inFlight: IN_FLIGHT, policies: results, recovery: recovered }, null, 2));
    return;
  }
  console.log(`machine: ${machine.cpus} × ${machine.model}, ${machine.memoryGiB} GiB, Node ${machine.node}; ${os.tmpdir()}`);
  console.log(`256-byte payloads, ${IN_FLIGHT} appends in flight, median of ${RUNS} runs\n`);
  console.log('| sync | appends/s | append p50 µs | append p99 µs | append+take+attempt+settle µs/msg |');
  console.log('|---|---:|---:|---:|---:|');
  for (const sync of POLICIES) {
    const r = results[sync]!;
    console.log(`| ${sync} | ${r.appendsPerSec.toLocaleString('en-US')} | ${r.p50Us} | ${r.p99Us} | ${r.cycleUs} |`);
  }
  console.log(`\nrecovery: ${recovered.records.toLocaleString('en-US')} unsettled records (${recovered.megabytes} MiB in ${recovered.segments} segments) back in their queues in ${recovered.ms} ms`);
}

await main();
