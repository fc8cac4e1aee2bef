/**
 * Durable delivery through the gateway, each gateway started from dist/ by the CLI:
 *
 * 1. QoS 1 over HTTP to an http target whose downstream acknowledges at once, under each sync
 *    policy (`none`, `os`, `fsync`) side by side: acknowledged msgs/s, the latency from POST to
 *    202 (p50, p99), CONNECTIONS requests in flight, and the gateway's CPU time per message (from
 *    /proc: on a shared machine it moves less than throughput does). Policies take turns, ROUNDS
 *    times, so drift in the machine's load hits them alike; each figure is the median of the
 *    rounds. The load generator runs here, the downstream in a process of its own.
 * 2. Recovery: a store holding 100,000 queued records (256-byte payloads, 4 targets), written
 *    with the store library; the gateway is started on it and reports how long reading it took
 *    ('queue store recovered'); the start's wall time is compared with an empty start, and the
 *    gateway's RSS once ready shows what holding the queued records costs.
 *
 * The machine's load average is printed before and after: the machine may be shared, and a high
 * load means the figures need a rerun. Run after `npm run build`:
 * `node dist/bench/durability.js [--json]` (or `npm run bench:durability`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as hdr from 'hdr-histogram-js';
import { Pool } from 'undici';
import { median } from '../src/bench/medians.js';
import { PACKAGE_ROOT } from '../src/bench/server.js';
import { createMessage } from '../src/message.js';
import { DiskQueueStore, type SyncPolicy } from '../src/queue/index.js';

const json = process.argv.includes('--json');
const POLICIES: SyncPolicy[] = ['none', 'os', 'fsync'];
const ROUNDS = 3;
const WARMUP_S = 1;
const MEASURE_S = 5;
const CONNECTIONS = 32;
const PAYLOAD = Buffer.alloc(256, 'x');
const RECOVERY_RECORDS = 100_000;
const RECOVERY_TARGETS = ['ingest', 'billing', 'audit', 'alerts'];
const BIN = join(PACKAGE_ROOT, 'bin/junction.js');

/** The downstream, in its own process: answers every request with 204 as soon as its body is in. */
function downstreamMain(): void {
  let received = 0;
  const server = createServer((request, response) => {
    request.resume();
    request.on('end', () => {
      received++;
      response.writeHead(204).end();
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => {
    process.stdout.write(`READY ${(server.address() as AddressInfo).port}\n`);
  });
  process.stdin.on('data', () => process.stdout.write(`RECEIVED ${received}\n`));
}

interface Downstream {
  url: string;
  received(): Promise<number>;
  stop(): void;
}

async function startDownstream(): Promise<Downstream> {
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), '--downstream'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const waiting: ((n: number) => void)[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      if (line.startsWith('READY ')) resolve(Number(line.slice(6)));
      if (line.startsWith('RECEIVED ')) waiting.shift()?.(Number(line.slice(9)));
    });
    child.once('exit', (code) => reject(new Error(`the downstream exited with ${code}`)));
  });
  return {
    url: `http://127.0.0.1:${port}`,
    received: () => new Promise((resolve) => {
      waiting.push(resolve);
      child.stdin!.write('?\n');
    }),
    stop: () => child.kill('SIGKILL'),
  };
}

interface Gateway {
  child: ChildProcess;
  ports: Record<string, number>;
  logs: Record<string, unknown>[];
  /** ms from spawn to 'gateway ready' */
  startMs: number;
  stop(): Promise<void>;
}

async function startGateway(config: string): Promise<Gateway> {
  const started = performance.now();
  const child = spawn(process.execPath, [BIN, 'start', '-c', config], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ports: Record<string, number> = {};
  const logs: Record<string, unknown>[] = [];
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      logs.push(entry);
      if (entry.msg === 'listener up') ports[String(entry.listener)] = Number(String(entry.address).split(':').pop());
      if (entry.msg === 'gateway ready') resolve();
    });
    child.once('exit', (code) => reject(new Error(`the gateway exited with ${code}`)));
  });
  return {
    child, ports, logs, startMs: performance.now() - started,
    stop: () => new Promise((resolve) => {
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

function writeConfig(dir: string, sync: SyncPolicy, downstream: string, targets: string[]): string {
  const file = join(dir, 'gateway.yaml');
  writeFileSync(file, `
listeners:
  http: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
auth: { anonymous: true }
storage: { dir: queue, sync: ${sync} }
deadletter: { path: deadletter.jsonl }
targets:
${targets.map((name) => `  ${name}: { type: http, url: "${downstream}/${name}", concurrency: 64, timeout: 30s, queue: { maxSize: 1000000, maxBytes: 1gb } }`).join('\n')}
routes:
  - { name: bench, match: { key: "bench/#" }, to: [${targets[0]}] }
`);
  return file;
}

interface Throughput {
  perSec: number;
  p50Ms: number;
  p99Ms: number;
  /** the gateway process's user + system CPU time per message, in µs */
  cpuUs: number;
}

/** User + system CPU time of a process so far, in ms (clock ticks of 10 ms). */
function cpuMs(pid: number): number {
  // The command name, field 2, is in parentheses and may hold spaces: count fields after it.
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CONNECTIONS requests in flight for `seconds`, after a warm-up: acknowledged msgs/s, POST→202 latency, the gateway's CPU per message. */
async function load(http: number, pid: number): Promise<Throughput> {
  const pool = new Pool(`http://127.0.0.1:${http}`, { connections: CONNECTIONS, pipelining: 1 });
  const latency = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
  let measuring = false;
  let acked = 0;
  let stop = false;
  const worker = async () => {
    // Each round sends one request; the run ends when `stop` is set, MEASURE_S after the warm-up.
    while (!stop) {
      const sent = process.hrtime.bigint();
      const response = await pool.request({ path: '/v1/messages/bench/durable', method: 'POST', body: PAYLOAD, headers: { 'x-qos': '1' } });
      await response.body.dump();
      if (response.statusCode !== 202) throw new Error(`POST answered ${response.statusCode}`);
      if (!measuring) continue;
      acked++;
      latency.recordValue(Math.max(1, Math.round(Number(process.hrtime.bigint() - sent) / 1000)));
    }
  };
  const workers = Array.from({ length: CONNECTIONS }, worker);
  await new Promise((resolve) => setTimeout(resolve, WARMUP_S * 1000));
  measuring = true;
  const started = performance.now();
  const cpuBefore = cpuMs(pid);
  await new Promise((resolve) => setTimeout(resolve, MEASURE_S * 1000));
  measuring = false;
  const cpu = cpuMs(pid) - cpuBefore;
  const seconds = (performance.now() - started) / 1000;
  stop = true;
  await Promise.all(workers);
  await pool.close();
  return { perSec: acked / seconds, p50Ms: latency.getValueAtPercentile(50) / 1000, p99Ms: latency.getValueAtPercentile(99) / 1000, cpuUs: (cpu * 1000) / acked };
}

async function throughput(downstream: Downstream): Promise<Record<SyncPolicy, Throughput>> {
  const runs = new Map<SyncPolicy, Throughput[]>(POLICIES.map((sync) => [sync, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const sync of POLICIES) {
      const dir = mkdtempSync(join(os.tmpdir(), 'junction-durability-bench-'));
      const gateway = await startGateway(writeConfig(dir, sync, downstream.url, ['sink']));
      try {
        runs.get(sync)!.push(await load(gateway.ports.http!, gateway.child.pid!));
      } finally {
        await gateway.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    }
  }
  const out = {} as Record<SyncPolicy, Throughput>;
  for (const [sync, results] of runs) {
    out[sync] = {
      perSec: Math.round(median(results.map((r) => r.perSec))),
      p50Ms: Number(median(results.map((r) => r.p50Ms)).toFixed(2)),
      p99Ms: Number(median(results.map((r) => r.p99Ms)).toFixed(2)),
      cpuUs: Math.round(median(results.map((r) => r.cpuUs))),
    };
  }
  return out;
}

interface Recovery {
  records: number;
  megabytes: number;
  /** the store's own reading time, from the gateway's log */
  readMs: number;
  /** spawn to ready, with the store, and with an empty one */
  startMs: number;
  emptyStartMs: number;
  rssMiB: number;
  emptyRssMiB: number;
}

function rssMiB(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').find((l) => l.startsWith('VmRSS:'))!;
  return Math.round(Number(line.split(/\s+/)[1]) / 1024);
}

async function recovery(): Promise<Recovery> {
  // A downstream that never answers: recovery is measured, not delivery, and nothing settles.
  const silent = createServer(() => undefined);
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const downstream = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
  const dir = mkdtempSync(join(os.tmpdir(), 'junction-durability-bench-'));
  const emptyDir = mkdtempSync(join(os.tmpdir(), 'junction-durability-bench-'));
  try {
    const store = await DiskQueueStore.open({ dir: join(dir, 'queue'), sync: 'os', onError: (err) => { throw err; } });
    const queues = RECOVERY_TARGETS.map((name) => store.queue(name));
    for (let i = 0; i < RECOVERY_RECORDS; i++) {
      queues[i % queues.length]!.append(createMessage({
        key: `devices/d${String(i % 1000).padStart(4, '0')}/telemetry`, payload: PAYLOAD, priority: i % 10, qos: 1,
        source: { protocol: 'mqtt', clientId: `device-${i % 1000}`, remoteAddress: '10.0.0.1:50000' },
      }));
    }
    const megabytes = store.diskBytes.total / 1024 ** 2;
    await store.close();

    const empty = await startGateway(writeConfig(emptyDir, 'os', downstream, RECOVERY_TARGETS));
    const emptyRss = rssMiB(empty.child.pid!);
    await empty.stop();
    const full = await startGateway(writeConfig(dir, 'os', downstream, RECOVERY_TARGETS));
    const report = full.logs.find((entry) => entry.msg === 'queue store recovered')!;
    const rss = rssMiB(full.child.pid!);
    full.child.kill('SIGKILL');
    if (report.records !== RECOVERY_RECORDS) throw new Error(`recovered ${String(report.records)} of ${RECOVERY_RECORDS}`);
    return {
      records: RECOVERY_RECORDS,
      megabytes: Number(megabytes.toFixed(1)),
      readMs: Number(report.durationMs),
      startMs: Math.round(full.startMs),
      emptyStartMs: Math.round(empty.startMs),
      rssMiB: rss,
      emptyRssMiB: emptyRss,
    };
  } finally {
    silent.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(emptyDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const loadBefore = os.loadavg()[0]!;
  const downstream = await startDownstream();
  let policies: Record<SyncPolicy, Throughput>;
  try {
    policies = await throughput(downstream);
  } finally {
    downstream.stop();
  }
  const recovered = await recovery();
  const loadAfter = os.loadavg()[0]!;
  const machine = {
    cpus: os.cpus().length, model: os.cpus()[0]?.model, memoryGiB: Math.round(os.totalmem() / 1024 ** 3), node: process.version,
    loadAverage: { before: Number(loadBefore.toFixed(2)), after: Number(loadAfter.toFixed(2)) },
  };
  if (json) {
    console.log(JSON.stringify({ machine, rounds: ROUNDS, seconds: MEASURE_S, connections: CONNECTIONS, payloadBytes: PAYLOAD.length, policies, recovery: recovered }, null, 2));
    return;
  }
  console.log(`machine: ${machine.cpus} × ${machine.model}, ${machine.memoryGiB} GiB, Node ${machine.node}; load average ${machine.loadAverage.before} before, ${machine.loadAverage.after} after; ${os.tmpdir()}`);
  console.log(`QoS 1 POST → http target (downstream answers at once), ${PAYLOAD.length}-byte payloads, ${CONNECTIONS} in flight, median of ${ROUNDS} rounds of ${MEASURE_S} s\n`);
  console.log('| sync | acknowledged msgs/s | POST→202 p50 ms | p99 ms | gateway CPU µs/msg |');
  console.log('|---|---:|---:|---:|---:|');
  for (const sync of POLICIES) {
    const r = policies[sync];
    console.log(`| ${sync} | ${r.perSec.toLocaleString('en-US')} | ${r.p50Ms} | ${r.p99Ms} | ${r.cpuUs} |`);
  }
  console.log(`\nrecovery: ${recovered.records.toLocaleString('en-US')} queued records (${recovered.megabytes} MiB) read in ${Math.round(recovered.readMs)} ms; start to ready ${recovered.startMs} ms (empty store: ${recovered.emptyStartMs} ms); RSS once ready ${recovered.rssMiB} MiB (empty: ${recovered.emptyRssMiB} MiB)`);
}

if (process.argv.includes('--downstream')) downstreamMain();
else await main();
