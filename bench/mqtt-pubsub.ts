/**
 * MQTT publish/subscribe throughput: the gateway (every PUBLISH through the router) against bare
 * aedes (the same broker, no router) and Mosquitto, driven by one client program.
 * Run after `npm run build`: `node dist/bench/mqtt-pubsub.js [--runs 3] [--seconds 2] [--json]`.
 *
 * Each server runs in a child process of its own, so the load generator (this process) never
 * shares an event loop with it. Scenarios: QoS 0 and 1, 1 publisher -> 1 subscriber and 10 -> 10
 * (publisher i -> topic bench/i -> subscriber i), 100-byte payloads. The client keeps at most
 * WINDOW messages per pair sent but not yet received (100, like a pipelining client; `--window`),
 * so every broker is measured at the same bounded load instead of being flooded. Goal (issue 3): gateway >= 0.8x bare aedes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import mqtt, { type MqttClient } from 'mqtt';
import type { BrokerBus } from '../src/bus.js';

const PAYLOAD = Buffer.alloc(100, 0x61);
/** Messages per pair sent but not yet received; `--window N` changes it. */
let WINDOW = 100;
const WARMUP_MS = 500;
type Target = 'gateway' | 'aedes' | 'mosquitto';
const TARGETS: Target[] = ['gateway', 'aedes', 'mosquitto'];

interface Scenario {
  name: string;
  qos: 0 | 1;
  pairs: number;
}

const SCENARIOS: Scenario[] = [
  { name: 'qos0 1->1', qos: 0, pairs: 1 },
  { name: 'qos0 10->10', qos: 0, pairs: 10 },
  { name: 'qos1 1->1', qos: 1, pairs: 1 },
  { name: 'qos1 10->10', qos: 1, pairs: 10 },
];

// ---------------------------------------------------------------------------------------------
// Servers (child processes)

/** `node dist/bench/mqtt-pubsub.js serve gateway|aedes`: prints the port, serves until killed. */
async function serve(kind: 'gateway' | 'aedes'): Promise<void> {
  let port: number;
  if (kind === 'aedes') {
    const { Aedes } = await import('aedes');
    const broker = await Aedes.createBroker();
    const server = net.createServer({ noDelay: true }, broker.handle);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as net.AddressInfo).port;
  } else {
    port = (await startBenchGateway()).address('mqtt')!.port;
  }
  process.stdout.write(`${JSON.stringify({ port })}\n`);
}

interface Server {
  port: number;
  pid: number;
  stop(): void;
}

/**
 * CPU time (user + system, µs) a server process has used, from /proc (Linux): per delivered
 * message it depends much less on other load on the machine than msgs/s do.
 */
function cpuMicros(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // utime and stime are fields 14 and 15 of stat(5), in clock ticks of 1/100 s on Linux
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as net.AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => { socket.destroy(); resolve(true); });
      socket.on('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

async function startServer(target: Target, scratch: string): Promise<Server> {
  if (target === 'mosquitto') {
    const port = await freePort();
    const conf = path.join(scratch, 'mosquitto.conf');
    await writeFile(conf, `listener ${port} 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest none\n`);
    const child = spawn('mosquitto', ['-c', conf], { stdio: 'ignore' });
    await waitForPort(port, child);
    return { port, pid: child.pid!, stop: () => child.kill('SIGKILL') };
  }
  const child = spawn(process.execPath, [fileURLToPath(import.meta.url), 'serve', target], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (chunk: Buffer) => resolve((JSON.parse(chunk.toString()) as { port: number }).port));
    child.once('exit', (code) => reject(new Error(`${target} server exited with ${code}`)));
  });
  return { port, pid: child.pid!, stop: () => child.kill('SIGKILL') };
}

// ---------------------------------------------------------------------------------------------
// The client program

async function connect(port: number): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, reconnectPeriod: 0, clean: true });
}

/**
 * Delivered messages per second, all pairs together, counted over `seconds` after a warm-up.
 * Then publishing stops and what is in flight drains before the clients disconnect, so no
 * run leaves work behind for the next.
 */
async function measure(server: Server, scenario: Scenario, seconds: number): Promise<{ rate: number; cpuPerMessage: number }> {
  const port = server.port;
  const publishers = await Promise.all(Array.from({ length: scenario.pairs }, () => connect(port)));
  const subscribers = await Promise.all(Array.from({ length: scenario.pairs }, () => connect(port)));
  const received = new Array<number>(scenario.pairs).fill(0);
  const sent = new Array<number>(scenario.pairs).fill(0);
  const wake: ((() => void) | undefined)[] = [];
  await Promise.all(subscribers.map(async (subscriber, i) => {
    await subscriber.subscribeAsync(`bench/${i}`, { qos: scenario.qos });
    subscriber.on('message', () => {
      received[i]!++;
      const w = wake[i];
      wake[i] = undefined;
      w?.();
    });
  }));
  const total = () => received.reduce((a, b) => a + b, 0);
  let running = true;
  const publishing = Promise.all(publishers.map(async (publisher, i) => {
    const topic = `bench/${i}`;
    while (running) {
      while (sent[i]! - received[i]! < WINDOW) {
        sent[i]!++;
        publisher.publish(topic, PAYLOAD, { qos: scenario.qos });
      }
      await new Promise<void>((resolve) => { wake[i] = resolve; });
    }
  }));
  await sleep(WARMUP_MS);
  const before = total();
  const cpuBefore = cpuMicros(server.pid);
  const start = performance.now();
  await sleep(seconds * 1000);
  const delivered = total() - before;
  const rate = delivered / ((performance.now() - start) / 1000);
  const cpuPerMessage = (cpuMicros(server.pid) - cpuBefore) / delivered;
  running = false;
  const drainBy = Date.now() + 5000;
  while (received.some((r, i) => r < sent[i]!) && Date.now() < drainBy) await sleep(20);
  for (const w of wake) w?.();
  await publishing;
  await Promise.all([...publishers, ...subscribers].map((client) => client.endAsync()));
  return { rate, cpuPerMessage };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The gateway under test: MQTT on an ephemeral port, every PUBLISH routed by a rule to `publish`.
 * Loaded lazily so a child serving bare aedes or Mosquitto does not load the gateway at all.
 */
async function startBenchGateway(): Promise<import('../src/gateway.js').Gateway> {
  const { loadConfigText } = await import('../src/config/load.js');
  const { Gateway } = await import('../src/gateway.js');
  const { builtinAdapters } = await import('../adapters/index.js');
  const { silentLogger } = await import('../src/log.js');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'junction-bench-'));
  const { config } = loadConfigText([
    'listeners: { mqtt: { host: 127.0.0.1, port: 0 } }',
    'auth: { anonymous: true }',
    'deadletter: { path: deadletter.jsonl }',
    'routes:',
    '  - { name: bench, match: { key: "bench/+" }, to: [publish] }',
    'defaultRoute: drop',
  ].join('\n'), path.join(dir, 'gateway.yaml'), {});
  return Gateway.start(config, { logger: silentLogger(), adapters: builtinAdapters });
}

/**
 * Where a message's CPU goes, without sockets: one process, a broker subscriber that only counts,
 * and CPU time (not wall time) per message, so other load on the machine matters less.
 * aedes.publish alone; a Message plus bus.publish through the gateway's broker (the MQTT adapter's
 * publisher); and the whole router (createMessage + dispatch to a `publish` rule).
 */
async function breakdown(): Promise<{ step: string; qos0: number; qos1: number }[]> {
  const { Aedes } = await import('aedes');
  const { createMessage } = await import('../src/message.js');
  const gateway = await startBenchGateway();
  const aedes = await Aedes.createBroker();
  const count = (_packet: unknown, done: () => void) => done();
  await new Promise<void>((resolve) => aedes.subscribe('bench/1', count, resolve));
  const bus = gateway.bus as BrokerBus;
  await new Promise<void>((resolve) => bus.emitter.on('bench/1', count, resolve));
  const source = { protocol: 'mqtt' as const, clientId: 'bench' };
  const cpuPerMessage = async (one: () => Promise<unknown>): Promise<number> => {
    const samples: number[] = [];
    for (let k = 0; k < 5; k++) {
      const n = 50_000;
      const before = process.cpuUsage();
      for (let i = 0; i < n; i += 50) await Promise.all(Array.from({ length: 50 }, one));
      const used = process.cpuUsage(before);
      samples.push((used.user + used.system) / n);
    }
    return median(samples);
  };
  const steps = [
    { step: 'aedes.publish', run: (qos: 0 | 1) => () => new Promise<void>((resolve) => aedes.publish({ cmd: 'publish', topic: 'bench/1', payload: PAYLOAD, qos, retain: false, dup: false }, () => resolve())) },
    { step: 'Message + bus.publish through the broker', run: (qos: 0 | 1) => () => gateway.bus.publish(createMessage({ key: 'bench/1', payload: PAYLOAD, qos, source })) },
    { step: 'Message + dispatch (the router)', run: (qos: 0 | 1) => () => gateway.dispatcher.dispatch(createMessage({ key: 'bench/1', payload: PAYLOAD, qos, source })) },
  ];
  const rows = [];
  for (const { step, run } of steps) rows.push({ step, qos0: await cpuPerMessage(run(0)), qos1: await cpuPerMessage(run(1)) });
  await gateway.stop();
  await new Promise<void>((resolve) => aedes.close(() => resolve()));
  await rm(path.dirname(gateway.config().file), { recursive: true, force: true });
  return rows;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function option(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i === -1 ? fallback : Number(process.argv[i + 1]);
}

async function main(): Promise<void> {
  const runs = option('runs', 3);
  WINDOW = option('window', WINDOW);
  const seconds = option('seconds', 2);
  const json = process.argv.includes('--json');
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'junction-bench-'));
  const servers = new Map<Target, Server>();
  try {
    for (const target of TARGETS) servers.set(target, await startServer(target, scratch));
    const results = new Map<string, number[]>();
    const cpu = new Map<string, number[]>();
    for (let run = 0; run < runs; run++) {
      for (const scenario of SCENARIOS) {
        // The order of the targets rotates from run to run so none always goes first.
        const order = TARGETS.map((_, k) => TARGETS[(k + run) % TARGETS.length]!);
        for (const target of order) {
          const { rate, cpuPerMessage } = await measure(servers.get(target)!, scenario, seconds);
          const key = `${scenario.name}|${target}`;
          results.set(key, [...(results.get(key) ?? []), rate]);
          cpu.set(key, [...(cpu.get(key) ?? []), cpuPerMessage]);
          if (!json) process.stderr.write(`run ${run + 1}/${runs} ${scenario.name.padEnd(12)} ${target.padEnd(10)} ${Math.round(rate).toLocaleString('en-US')} msg/s, ${cpuPerMessage.toFixed(1)} µs CPU/msg\n`);
        }
      }
    }
    const rows = SCENARIOS.map((scenario) => {
      const med = (target: Target) => median(results.get(`${scenario.name}|${target}`)!);
      const medCpu = (target: Target) => median(cpu.get(`${scenario.name}|${target}`)!);
      const gateway = med('gateway');
      const aedes = med('aedes');
      const mosquitto = med('mosquitto');
      const cpuPerMessage = { gateway: medCpu('gateway'), aedes: medCpu('aedes'), mosquitto: medCpu('mosquitto') };
      return { scenario: scenario.name, gateway, aedes, mosquitto, vsAedes: gateway / aedes, vsMosquitto: gateway / mosquitto, cpuPerMessage };
    });
    const steps = await breakdown();
    const machine = { nproc: os.availableParallelism(), memGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, cpu: os.cpus()[0]?.model ?? 'unknown' };
    if (json) {
      console.log(JSON.stringify({ date: new Date().toISOString(), machine, loadAverage: os.loadavg(), runs, seconds, window: WINDOW, payloadBytes: PAYLOAD.length, rows, cpuMicrosecondsPerMessage: steps }, null, 2));
      return;
    }
    const f = (n: number) => Math.round(n).toLocaleString('en-US');
    console.log(`${new Date().toISOString()}  ${machine.nproc} CPUs (${machine.cpu}), ${machine.memGiB} GiB, Node ${machine.node}; load average ${os.loadavg().map((l) => l.toFixed(1)).join(' ')}; ${runs} runs x ${seconds} s, window ${WINDOW}, medians\n`);
    console.log('| scenario | gateway msg/s | bare aedes msg/s | Mosquitto msg/s | gateway / aedes | gateway / Mosquitto |');
    console.log('|---|---:|---:|---:|---:|---:|');
    for (const r of rows) console.log(`| ${r.scenario} | ${f(r.gateway)} | ${f(r.aedes)} | ${f(r.mosquitto)} | ${r.vsAedes.toFixed(2)} | ${r.vsMosquitto.toFixed(2)} |`);
    console.log('\nServer CPU per delivered message (µs, user + system, medians):\n');
    console.log('| scenario | gateway | bare aedes | Mosquitto | aedes / gateway (CPU-bound ratio) |');
    console.log('|---|---:|---:|---:|---:|');
    for (const r of rows) console.log(`| ${r.scenario} | ${r.cpuPerMessage.gateway.toFixed(1)} | ${r.cpuPerMessage.aedes.toFixed(1)} | ${r.cpuPerMessage.mosquitto.toFixed(1)} | ${(r.cpuPerMessage.aedes / r.cpuPerMessage.gateway).toFixed(2)} |`);
    console.log('\nCPU per message without sockets (µs, median of 5 x 50,000):\n');
    console.log('| step | QoS 0 | QoS 1 |');
    console.log('|---|---:|---:|');
    for (const step of steps) console.log(`| ${step.step} | ${step.qos0.toFixed(1)} | ${step.qos1.toFixed(1)} |`);
  } finally {
    for (const server of servers.values()) server.stop();
    await rm(scratch, { recursive: true, force: true });
  }
}

if (process.argv[2] === 'serve') {
  void serve(process.argv[3] as 'gateway' | 'aedes');
} else {
  main().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
