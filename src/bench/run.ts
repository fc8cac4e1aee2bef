/**
 * `junction bench SCENARIO`: starts the server under test (unless it is external), forks the
 * worker processes, connects every client, sends on one clock, waits for deliveries still on their
 * way, and reports one {@link BenchResult}.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SingleBar } from 'cli-progress';
import { LatencyHistogram } from './histogram.js';
import { FootprintTracker, machineInfo } from './machine.js';
import { SCENARIO_SPECS, type BenchOptions, type Topology } from './scenarios.js';
import { killServers, profiling, startServer, type ServerUnderTest } from './server.js';
import { nowUs } from './stamp.js';
import type { BenchResult, ScenarioName } from './types.js';
import type { ParentMessage, WorkerCounts, WorkerMessage, WorkerPlan, WorkerResult } from './worker.js';

const WORKER_SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'worker.js');
/** Workers start sending together this long after the parent says go. */
const GO_DELAY_US = 200_000;
/**
 * A directory for V8 CPU profiles of the load workers, to see where the generator's own time goes.
 * An environment switch, not an option: a profiled worker is slower, and its run is no result to keep.
 */
const WORKER_CPU_PROFILE_DIR = process.env.JUNCTION_BENCH_WORKER_CPU_PROF || undefined;
/** A worker this busy (CPU seconds per wall second) may be what limits the run (issue 13: above 85 %). */
const SATURATED_CPU = 0.85;

class Worker {
  readonly child: ChildProcess;
  counts: WorkerCounts = { connected: 0, failed: 0, dropped: 0, sent: 0, acceptedByKey: {}, received: 0, errors: 0 };
  sending = false;
  #waiters: { type: WorkerMessage['type']; resolve(message: WorkerMessage): void }[] = [];

  constructor(readonly index: number) {
    // sh raises the soft open-files limit to the hard one; exec keeps the IPC channel.
    this.child = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"', process.execPath, ...profiling(WORKER_CPU_PROFILE_DIR), WORKER_SCRIPT], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (message: WorkerMessage) => {
      if (message.type !== 'result') this.counts = message.counts;
      if (message.type === 'progress') this.sending = message.sending;
      const at = this.#waiters.findIndex((w) => w.type === message.type);
      if (at >= 0) this.#waiters.splice(at, 1)[0]!.resolve(message);
    });
  }

  send(message: ParentMessage): void {
    this.child.send(message);
  }

  next<T extends WorkerMessage['type']>(type: T): Promise<Extract<WorkerMessage, { type: T }>> {
    return new Promise((resolve, reject) => {
      this.#waiters.push({ type, resolve: resolve as (message: WorkerMessage) => void });
      this.child.once('exit', (code) => reject(new Error(`load worker ${this.index} exited with code ${code}`)));
    });
  }
}

/**
 * Round-robin over the workers, so each gets a like share of every kind of client. Publishers
 * continue the subscribers' turn rather than starting at the first worker again: with as many
 * workers as clients, the two ends of a 1 → 1 run are two processes, not one process's load.
 */
function splitTopology(topology: Topology, options: BenchOptions, scenario: ScenarioName): WorkerPlan[] {
  const after = topology.subscribers.length;
  return Array.from({ length: options.workers }, (_, index) => ({
    scenario, index,
    // 127.0.0.2, .3, …: each worker has a source address of its own, with its own ephemeral ports.
    localAddress: `127.0.0.${2 + (index % 250)}`,
    server: options.server, host: options.host, ports: {},
    publishers: topology.publishers.filter((_, i) => (after + i) % options.workers === index),
    subscribers: topology.subscribers.filter((_, i) => i % options.workers === index),
    idle: topology.idle && { protocol: topology.idle.protocol, count: Math.floor(topology.idle.count / options.workers) + (index < topology.idle.count % options.workers ? 1 : 0) },
    payload: options.payload, qos: options.qos, priorities: options.priorities, keepalive: options.keepalive, tlsCa: undefined,
    persistent: options.persistent,
  }));
}

function total(workers: Worker[], pick: (c: WorkerCounts) => number): number {
  return workers.reduce((sum, w) => sum + pick(w.counts), 0);
}

/**
 * Deliveries the subscribers should get: every accepted send times the subscribers of its key,
 * a group of competing consumers counting once.
 */
function expectedDeliveries(counts: WorkerCounts[], topology: Topology): number {
  const subscribersOf = new Map<string, number>();
  const groups = new Set<string>();
  for (const s of topology.subscribers) {
    if (s.member) {
      const group = `${s.member.group}\u0000${s.member.key}`;
      if (groups.has(group)) continue;
      groups.add(group);
    }
    const key = s.member?.key ?? s.key;
    subscribersOf.set(key, (subscribersOf.get(key) ?? 0) + 1);
  }
  let expected = 0;
  for (const c of counts) for (const [key, n] of Object.entries(c.acceptedByKey)) expected += n * (subscribersOf.get(key) ?? 0);
  return expected;
}

class Progress {
  readonly #bar: SingleBar | undefined;
  readonly #started = Date.now();

  constructor(enabled: boolean, totalSeconds: number) {
    if (!enabled) return;
    this.#bar = new SingleBar({
      format: ' {phase} [{bar}] {value}/{total} s | sent {sent} | received {received} | errors {errors} | connections {connections}',
      stream: process.stderr, hideCursor: true, clearOnComplete: true,
    });
    this.#bar.start(Math.ceil(totalSeconds), 0, { phase: 'connecting', sent: 0, received: 0, errors: 0, connections: 0 });
  }

  update(phase: string, workers: Worker[]): void {
    this.#bar?.update(Math.floor((Date.now() - this.#started) / 1000), {
      phase, sent: total(workers, (c) => c.sent), received: total(workers, (c) => c.received),
      errors: total(workers, (c) => c.errors), connections: total(workers, (c) => c.connected - c.dropped),
    });
  }

  stop(): void {
    this.#bar?.stop();
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function runBench(scenario: ScenarioName, options: BenchOptions, command: string): Promise<BenchResult> {
  const spec = SCENARIO_SPECS[scenario];
  if (!spec.servers.includes(options.server)) {
    throw new Error(`${scenario} runs against ${spec.servers.join(', ')}; ${options.server} does not speak it the same way`);
  }
  const topology = spec.topology(options);
  const startedAt = new Date().toISOString();
  // An interrupted run (Ctrl-C, a closed terminal) must not leave the server it started behind,
  // even one still starting. Workers end by themselves when the parent goes.
  const interrupted = (signal: NodeJS.Signals) => {
    killServers();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  const signals: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const signal of signals) process.once(signal, interrupted);
  let server: ServerUnderTest;
  try {
    if (options.tls && !spec.tls) throw new Error(`--tls: ${scenario} has no TLS variant; the MQTT and HTTP scenarios have`);
    server = await startServer(options.server, { host: options.host, ports: options.ports, cpuProfileDir: options.cpuProfileDir, tls: options.tls, cluster: options.cluster });
  } catch (err) {
    for (const signal of signals) process.off(signal, interrupted);
    throw err;
  }
  const tracker = server.pid === undefined ? undefined : new FootprintTracker(server.pid, server.companionPids);
  const workers = Array.from({ length: options.workers }, (_, i) => new Worker(i));
  const progress = new Progress(!options.json && process.stderr.isTTY === true, options.warmup + options.duration + 10);
  const ticker = setInterval(() => progress.update(workers.some((w) => w.sending) ? 'sending' : 'waiting', workers), 250);
  try {
    const plans = splitTopology(topology, options, scenario).map((plan) => ({ ...plan, ports: server.ports, tlsCa: server.tlsCa }));
    const connecting = performance.now();
    const connected = await Promise.all(workers.map((w, i) => {
      const reply = w.next('connected');
      w.send({ type: 'plan', plan: plans[i]! });
      return reply;
    }));
    const connectSeconds = (performance.now() - connecting) / 1000;
    const fatal = connected.find((c) => c.error);
    if (fatal) throw new Error(`load worker: ${fatal.error}`);
    // Let the server settle (sessions registered, buffers allocated) before its memory is read.
    if (topology.idle) await sleep(2000);
    tracker?.connected();

    const startUs = nowUs() + GO_DELAY_US;
    const clock = { startUs, measureFromUs: startUs + options.warmup * 1e6, stopAtUs: startUs + (options.warmup + options.duration) * 1e6 };
    tracker?.windowStarted();
    for (const w of workers) {
      w.sending = topology.publishers.length > 0;
      w.send({ type: 'go', clock });
    }
    // Senders stop by themselves at the end of the window or of their count; idle connections are held for it.
    // Half-way: by the clock, or by --count for a run that ends at its count first.
    const midwayUs = (clock.measureFromUs + clock.stopAtUs) / 2;
    const halfCount = options.count === undefined ? Number.POSITIVE_INFINITY : options.count / 2;
    let sampledMidway = false;
    while (nowUs() < clock.stopAtUs + GO_DELAY_US && (topology.publishers.length === 0 || workers.some((w) => w.sending))) {
      if (!sampledMidway && (nowUs() >= midwayUs || total(workers, (c) => c.sent) >= halfCount)) {
        sampledMidway = true;
        tracker?.midway();
      }
      await sleep(100);
    }
    if (sampledMidway) tracker?.sendingEnded();

    // Drain: deliveries still on their way, until all arrived or none came for a second.
    const drainUntil = Date.now() + options.drain * 1000;
    let last = -1;
    let lastChange = Date.now();
    while (Date.now() < drainUntil && topology.subscribers.length > 0) {
      const received = total(workers, (c) => c.received);
      if (received >= expectedDeliveries(workers.map((w) => w.counts), topology)) break;
      if (received !== last) { last = received; lastChange = Date.now(); } else if (Date.now() - lastChange > 1000) break;
      await sleep(50);
    }
    tracker?.windowEnded();

    const results = await Promise.all(workers.map((w) => {
      const reply = w.next('result');
      w.send({ type: 'stop' });
      return reply.then((m) => m.result);
    }));
    return summarise(scenario, options, command, startedAt, topology, clock, results, workers, tracker, connectSeconds);
  } finally {
    clearInterval(ticker);
    progress.stop();
    for (const w of workers) if (w.child.exitCode === null) w.child.kill();
    await server.stop();
    for (const signal of signals) process.off(signal, interrupted);
  }
}

function summarise(
  scenario: ScenarioName, options: BenchOptions, command: string, startedAt: string, topology: Topology,
  clock: { startUs: number; measureFromUs: number; stopAtUs: number },
  results: WorkerResult[], workers: Worker[], tracker: FootprintTracker | undefined, connectSeconds: number,
): BenchResult {
  const sum = (pick: (r: WorkerResult) => number) => results.reduce((s, r) => s + pick(r), 0);
  const histogram = new LatencyHistogram();
  for (const r of results) histogram.add(LatencyHistogram.decode(topology.latencyKind === 'ack' ? r.ack : r.delivery));
  const lastSendUs = Math.max(...results.map((r) => r.lastSendUs));
  const lastReceiveUs = Math.max(...results.map((r) => r.lastReceiveUs));
  const requestStyle = topology.latencyKind === 'ack';
  const sendSeconds = Math.max(1e-3, (lastSendUs - clock.measureFromUs) / 1e6);
  // Request-style runs count acks, which end with the last send; pub/sub counts the last delivery.
  const receiveSeconds = requestStyle ? sendSeconds : Math.max(1e-3, (lastReceiveUs - clock.measureFromUs) / 1e6);
  const receivedMeasured = requestStyle ? histogram.count : sum((r) => r.receivedMeasured);
  const accepted = sum((r) => Object.values(r.counts.acceptedByKey).reduce((a, b) => a + b, 0));
  // From the final counts: the workers' last progress reports may be a quarter of a second old.
  const expected = requestStyle ? sum((r) => r.counts.sent) : expectedDeliveries(results.map((r) => r.counts), topology);
  const busiestWorkerCpu = Math.max(...results.map((r) => r.cpuSeconds / Math.max(1e-3, r.wallSeconds)));
  const behind = sum((r) => r.behindSchedule);
  const sentMeasured = sum((r) => r.sentMeasured);
  const scheduled = options.rate === undefined ? 0
    : Math.min(options.rate * options.duration, (options.count ?? Number.POSITIVE_INFINITY) - options.rate * options.warmup);
  const fellBehind = topology.publishers.length > 0 && sentMeasured < 0.95 * scheduled;
  const saturated = busiestWorkerCpu > SATURATED_CPU || fellBehind || behind > 0;
  const connectionsScenario = topology.idle !== undefined;
  const footprint = tracker?.footprint();
  const connected = sum((r) => r.counts.connected);
  const wanted = topology.publishers.length + topology.subscribers.length + (topology.idle?.count ?? 0);
  const round = (n: number) => Math.round(n * 10) / 10;
  const received = requestStyle ? accepted : sum((r) => r.counts.received);
  return {
    scenario, server: options.server, options: { ...options, ports: undefined, json: undefined }, command,
    machine: machineInfo(), startedAt,
    durationS: round(connectionsScenario ? options.duration : receiveSeconds),
    sent: sum((r) => r.counts.sent),
    received,
    expected,
    errors: sum((r) => r.counts.errors),
    errorSamples: [...new Set(results.flatMap((r) => r.errorSamples))].slice(0, 5),
    sentPerS: connectionsScenario ? 0 : round(sentMeasured / sendSeconds),
    sentPerSByKey: Object.fromEntries([...new Set(results.flatMap((r) => Object.keys(r.sentMeasuredByKey)))]
      .map((key) => [key, round(sum((r) => r.sentMeasuredByKey[key] ?? 0) / sendSeconds)])),
    receivedPerS: connectionsScenario ? 0 : round(receivedMeasured / receiveSeconds),
    // The server's CPU is read over the whole window, warm-up and drain included, as `received` counts.
    ...(footprint && received > 0 && !connectionsScenario ? { cpuUsPerMessage: round((footprint.cpuSeconds / received) * 1e6) } : {}),
    latencyKind: topology.latencyKind,
    latency: histogram.summary(),
    ...(options.rate === undefined ? {} : { targetRate: options.rate }),
    ...(connectionsScenario || connected !== wanted ? {
      connections: {
        wanted, connected, failed: sum((r) => r.counts.failed), dropped: sum((r) => r.counts.dropped),
        // every connection's TCP (and with --tls, TLS) handshake and protocol greeting, over the time to open them all
        openedPerS: round(connected / Math.max(1e-3, connectSeconds)),
        ...(footprint?.rssConnectedBytes !== undefined && connected > 0
          ? { rssPerConnectionBytes: Math.round((footprint.rssConnectedBytes - footprint.rssBeforeBytes) / connected) } : {}),
      },
    } : {}),
    ...(footprint ? { serverProcess: footprint } : {}),
    loadGenerator: {
      workers: options.workers,
      busiestWorkerCpu: Math.round(busiestWorkerCpu * 100) / 100,
      ...(received > 0 && !connectionsScenario ? { cpuUsPerMessage: round((sum((r) => r.cpuSeconds) / received) * 1e6) } : {}),
      saturated,
      ...(saturated ? {
        note: fellBehind || behind > 0
          ? `the run fell behind its schedule (${behind} sends waited for a full window): the server or the load generator could not keep up`
          : `a load worker used ${Math.round(busiestWorkerCpu * 100)} % of a core: the load generator may be the bottleneck; try --workers`,
      } : {}),
    },
  };
}
