/**
 * WebSocket fan-out and idle sockets: the gateway's /ws against a bare `ws` server doing the same
 * broadcast, driven by one client program. Run after `npm run build`:
 * `node dist/bench/ws.js [--runs 3] [--idle 19000] [--json]` (about 2 minutes).
 *
 * Every server and every group of clients is a child process of its own (spawned through sh to
 * raise the soft open-files limit to the hard one); clients connect from 127.0.0.2, 127.0.0.3, …
 * so no source address runs short of ports.
 *
 * Fan-out: one publisher, N subscribers of one key (N = 1,000, then 9,000 more connect to the same
 * server process for N = 10,000). Every subscriber subscribes with id "s1". Throughput: bursts of
 * messages sent back to back, deliveries/s from the first send to the last receipt of a burst.
 * Latency: single messages, one at a time, each stamped with the sender's monotonic clock
 * (process.hrtime, one clock for every process on the machine); the latency of a delivery is
 * its receipt time minus the stamp, in an HDR histogram. Runs alternate gateway and bare server.
 *
 * "CPU per delivery" is the server process's user+system CPU time over the bursts divided by the
 * deliveries: on a machine whose cores the clients (and other work) share, it moves less than
 * the rates do.
 *
 * Idle: as many sockets as one process may hold (open files are capped at 20,000 here), RSS of
 * the server process before and after, after a forced GC, per socket.
 *
 * Goals (issue 7): fan-out rate >= 0.7x the bare server's; <= 20 KB per idle socket.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as hdr from 'hdr-histogram-js';
import WebSocket, { WebSocketServer } from 'ws';

const SCRIPT = fileURLToPath(import.meta.url);
const KEY = 'bench/fanout';
const SUBSCRIBE = JSON.stringify({ op: 'subscribe', id: 's1', key: KEY });
const CLIENT_PROCESSES = 4;
/** concurrent connection attempts per client process, below the listen backlog */
const CONNECT_BATCH = 200;

type Server = 'gateway' | 'bare';
type Message =
  | { type: 'listening'; port: number }
  | { type: 'ready' }
  | { type: 'report'; count: number; lastUs: number }
  | { type: 'histogram'; histogram: string }
  | { type: 'memory'; rss: number; heapUsed: number }
  | { type: 'cpu'; user: number; system: number };

const benchStarted = Date.now();
/** Progress on stderr, so a run that takes long shows where. */
function progress(what: string): void {
  if (!process.argv.includes('--json')) process.stderr.write(`[${((Date.now() - benchStarted) / 1000).toFixed(1)} s] ${what}\n`);
}

function nowUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

function newHistogram(): hdr.Histogram {
  return hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: 3, useWebAssembly: false });
}

// ---------------------------------------------------------------------------------------------
// Child roles

/** The gateway as `junction start` runs it, with limits raised for the benchmark. */
async function runGateway(): Promise<void> {
  const [{ loadConfigText }, { Gateway }, { builtinAdapters }, { silentLogger }] = await Promise.all([
    import('../src/config/load.js'), import('../src/gateway.js'), import('../adapters/index.js'), import('../src/log.js'),
  ]);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'junction-bench-ws-'));
  const { config } = loadConfigText(`
listeners: { http: { host: 127.0.0.1, port: 0 } }
defaultRoute: publish
auth: { anonymous: true }
deadletter: { path: ${JSON.stringify(path.join(dir, 'deadletter.jsonl'))} }
websocket: { maxConnections: 20000, maxConnectionsPerIp: 20000, idleTimeout: 0s }
`, '');
  const gateway = await Gateway.start(config, { logger: silentLogger(), adapters: builtinAdapters });
  serve(gateway.address('http')!.port, async () => {
    await gateway.stop();
    await rm(dir, { recursive: true, force: true });
  });
}

/** The same protocol, minimally: `subscribe` is acked, a `publish` goes as it came to every subscriber. */
async function runBare(): Promise<void> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: false });
  const subscribers = new Set<WebSocket>();
  wss.on('connection', (socket) => {
    socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as { op: string; id?: unknown };
      if (frame.op === 'subscribe') {
        subscribers.add(socket);
        socket.send(JSON.stringify({ op: 'ack', id: frame.id }));
      } else if (frame.op === 'publish') {
        for (const subscriber of subscribers) subscriber.send(data, { binary: false });
      }
    });
    socket.on('close', () => subscribers.delete(socket));
  });
  await new Promise<void>((resolve) => wss.once('listening', resolve));
  serve((wss.address() as { port: number }).port, () => new Promise((resolve) => {
    for (const socket of wss.clients) socket.terminate();
    wss.close(() => resolve());
  }));
}

/** Tells the parent the port, answers memory requests, stops on request. */
function serve(port: number, stop: () => Promise<void>): void {
  process.send!({ type: 'listening', port } satisfies Message);
  process.on('message', (message: { type: string }) => {
    if (message.type === 'memory') {
      // Two collections: what is garbage now is not what the sockets cost.
      global.gc?.();
      global.gc?.();
      setTimeout(() => process.send!({ type: 'memory', ...process.memoryUsage() } satisfies Message), 200);
    } else if (message.type === 'cpu') {
      process.send!({ type: 'cpu', ...process.cpuUsage() } satisfies Message);
    } else if (message.type === 'stop') {
      void stop().then(() => process.exit(0));
    }
  });
}

async function openSockets(url: string, count: number, localAddress: string, onSocket: (socket: WebSocket) => Promise<void>): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  for (let i = 0; i < count; i += CONNECT_BATCH) {
    await Promise.all(Array.from({ length: Math.min(CONNECT_BATCH, count - i) }, () => new Promise<void>((resolve, reject) => {
      const socket = new WebSocket(url, { localAddress, perMessageDeflate: false });
      socket.once('open', () => {
        sockets.push(socket);
        onSocket(socket).then(resolve, reject);
      });
      socket.once('error', reject);
    })));
  }
  return sockets;
}

/** N subscribers: the client program, the same for both servers. */
async function runSubscribers(url: string, count: number, localAddress: string): Promise<void> {
  let histogram = newHistogram();
  let received = 0;
  let lastUs = 0;
  await openSockets(url, count, localAddress, (socket) => new Promise((resolve) => {
    socket.on('message', (data: Buffer) => {
      // Only the stamp is read, not the whole frame: the clients share the CPUs with the server.
      const text = data.toString();
      if (text.startsWith('{"op":"ack"')) return resolve();
      const at = text.indexOf('"t":');
      if (at < 0) return;
      const stamp = parseInt(text.slice(at + 4, at + 24), 10);
      const now = nowUs();
      histogram.recordValue(Math.max(1, now - stamp));
      received++;
      lastUs = now;
    });
    socket.send(SUBSCRIBE);
  }));
  process.send!({ type: 'ready' } satisfies Message);
  process.on('message', (message: { type: string }) => {
    if (message.type === 'report') {
      process.send!({ type: 'report', count: received, lastUs } satisfies Message);
    } else if (message.type === 'histogram') {
      process.send!({ type: 'histogram', histogram: hdr.encodeIntoCompressedBase64(histogram) } satisfies Message);
    } else if (message.type === 'reset') {
      histogram = newHistogram();
      received = 0;
      lastUs = 0;
    } else if (message.type === 'stop') {
      process.exit(0);
    }
  });
}

/** Sockets that only stay open. */
async function runIdle(url: string, count: number, localAddress: string): Promise<void> {
  await openSockets(url, count, localAddress, () => Promise.resolve());
  process.send!({ type: 'ready' } satisfies Message);
  process.on('message', (message: { type: string }) => {
    if (message.type === 'stop') process.exit(0);
  });
}

// ---------------------------------------------------------------------------------------------
// The parent

class Child {
  readonly process: ChildProcess;
  readonly #waiting: { type: string; resolve(message: Message): void }[] = [];

  constructor(args: string[], exposeGc = false) {
    // sh raises the soft open-files limit to the hard one; exec keeps the IPC channel.
    this.process = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"', process.execPath, ...(exposeGc ? ['--expose-gc'] : []), SCRIPT, ...args], {
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.process.on('message', (message: Message) => {
      const index = this.#waiting.findIndex((w) => w.type === message.type);
      if (index >= 0) this.#waiting.splice(index, 1)[0]!.resolve(message);
    });
    this.process.on('exit', (code) => {
      if (code !== 0 && code !== null) console.error(`child ${args.join(' ')} exited with ${code}`);
    });
  }

  next<T extends Message['type']>(type: T): Promise<Extract<Message, { type: T }>> {
    return new Promise((resolve) => this.#waiting.push({ type, resolve: resolve as (message: Message) => void }));
  }

  ask<T extends Message['type']>(request: string, type: T): Promise<Extract<Message, { type: T }>> {
    const answer = this.next(type);
    this.process.send({ type: request });
    return answer;
  }

  tell(request: string): void {
    this.process.send({ type: request });
  }

  stop(): Promise<void> {
    return new Promise((resolve) => {
      if (this.process.exitCode !== null) return resolve();
      this.process.once('exit', () => resolve());
      this.process.send({ type: 'stop' });
    });
  }
}

async function startServer(server: Server, exposeGc = false): Promise<{ child: Child; url: string }> {
  const child = new Child([`--role=${server}`], exposeGc);
  const { port } = await child.next('listening');
  return { child, url: `ws://127.0.0.1:${port}${server === 'gateway' ? '/ws' : '/'}` };
}

async function startClients(role: 'subscribers' | 'idle', url: string, total: number): Promise<Child[]> {
  const children = Array.from({ length: CLIENT_PROCESSES }, (_, i) => {
    const count = Math.floor(total / CLIENT_PROCESSES) + (i < total % CLIENT_PROCESSES ? 1 : 0);
    return new Child([`--role=${role}`, `--url=${url}`, `--count=${count}`, `--from=127.0.0.${2 + i}`]);
  });
  await Promise.all(children.map((c) => c.next('ready')));
  return children;
}

/** Waits until the subscribers have `expected` deliveries since the last reset, or the deadline. */
async function collect(children: Child[], expected: number, deadlineMs: number): Promise<{ count: number; lastUs: number }> {
  const deadline = Date.now() + deadlineMs;
  for (;;) {
    const reports = await Promise.all(children.map((c) => c.ask('report', 'report')));
    const count = reports.reduce((n, r) => n + r.count, 0);
    if (count >= expected || Date.now() > deadline) return { count, lastUs: Math.max(...reports.map((r) => r.lastUs)) };
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

async function latencies(children: Child[]): Promise<hdr.Histogram> {
  const histogram = newHistogram();
  for (const r of await Promise.all(children.map((c) => c.ask('histogram', 'histogram')))) {
    histogram.add(hdr.decodeFromCompressedBase64(r.histogram, 32, false));
  }
  return histogram;
}

interface FanoutResult {
  server: Server;
  subscribers: number;
  run: number;
  deliveriesPerSecond: number;
  /** deliveries that arrived / deliveries expected, over the bursts */
  deliveredRatio: number;
  /** the server process's user+system CPU time over the bursts, per delivery */
  cpuUsPerDelivery: number;
  p50Ms: number;
  p99Ms: number;
}

/** One server process: 1,000 subscribers measured, then 9,000 more connected and 10,000 measured. */
async function fanout(server: Server, sizes: number[], run: number): Promise<FanoutResult[]> {
  const { child, url } = await startServer(server);
  const publisher = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve) => publisher.once('open', resolve));
  const clients: Child[] = [];
  const results: FanoutResult[] = [];
  for (const size of sizes) {
    progress(`${server}: connecting ${size} subscribers`);
    clients.push(...await startClients('subscribers', url, size - results.reduce((max, r) => Math.max(max, r.subscribers), 0)));
    progress(`${server}: measuring ${size} subscribers`);
    results.push(await measure(server, run, child, publisher, clients, size));
  }
  publisher.terminate();
  await Promise.all(clients.map((c) => c.stop()));
  await child.stop();
  return results;
}

async function measure(server: Server, run: number, child: Child, publisher: WebSocket, clients: Child[], subscribers: number): Promise<FanoutResult> {
  const publish = (seq: number) => publisher.send(`{"op":"publish","key":"${KEY}","payload":{"t":${nowUs()},"s":${seq}}}`);
  const reset = () => { for (const c of clients) c.tell('reset'); };
  reset();

  // Warm-up, then latency: one message at a time, the next once every subscriber has the last.
  const singles = 8;
  for (let i = 0; i < 2; i++) {
    publish(i);
    await collect(clients, subscribers * (i + 1), 10_000);
  }
  reset();
  for (let i = 0; i < singles; i++) {
    publish(i);
    await collect(clients, subscribers * (i + 1), 10_000);
  }
  const latency = await latencies(clients);

  // Throughput: bursts of 60,000 deliveries each.
  const burst = Math.max(1, Math.round(60_000 / subscribers));
  const rates: number[] = [];
  let delivered = 0;
  const bursts = 2;
  const cpuBefore = await child.ask('cpu', 'cpu');
  for (let b = 0; b < bursts; b++) {
    reset();
    const started = nowUs();
    for (let i = 0; i < burst; i++) publish(i);
    const result = await collect(clients, subscribers * burst, 30_000);
    delivered += result.count;
    rates.push(result.count / ((result.lastUs - started) / 1e6));
  }
  const cpuAfter = await child.ask('cpu', 'cpu');

  return {
    server,
    subscribers,
    run,
    deliveriesPerSecond: median(rates),
    deliveredRatio: delivered / (bursts * burst * subscribers),
    cpuUsPerDelivery: (cpuAfter.user - cpuBefore.user + cpuAfter.system - cpuBefore.system) / delivered,
    p50Ms: latency.getValueAtPercentile(50) / 1000,
    p99Ms: latency.getValueAtPercentile(99) / 1000,
  };
}

interface IdleResult {
  server: Server;
  sockets: number;
  rssBeforeMB: number;
  rssAfterMB: number;
  bytesPerSocket: number;
}

async function idle(server: Server, sockets: number): Promise<IdleResult> {
  const { child, url } = await startServer(server, true);
  // Warm the server up with one connection, so its code paths are compiled before the baseline.
  const warm = await startClients('idle', url, CLIENT_PROCESSES);
  await Promise.all(warm.map((c) => c.stop()));
  const before = await child.ask('memory', 'memory');
  progress(`${server}: connecting ${sockets} idle sockets`);
  const clients = await startClients('idle', url, sockets);
  progress(`${server}: measuring`);
  const after = await child.ask('memory', 'memory');
  await Promise.all(clients.map((c) => c.stop()));
  await child.stop();
  return {
    server,
    sockets,
    rssBeforeMB: before.rss / 2 ** 20,
    rssAfterMB: after.rss / 2 ** 20,
    bytesPerSocket: (after.rss - before.rss) / sockets,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function option(name: string, fallback: number): number {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`)) ?? (process.argv.includes(`--${name}`) ? `--${name}=${process.argv[process.argv.indexOf(`--${name}`) + 1]}` : undefined);
  return arg === undefined ? fallback : Number(arg.split('=')[1]);
}

async function main(): Promise<void> {
  const runs = option('runs', 3);
  const idleSockets = option('idle', 19_000);
  const json = process.argv.includes('--json');
  const started = Date.now();
  const fanouts: FanoutResult[] = [];
  for (let run = 1; run <= runs; run++) {
    // Alternate which server goes first, so neither always runs on a warmer machine.
    const order: Server[] = run % 2 === 1 ? ['gateway', 'bare'] : ['bare', 'gateway'];
    for (const server of order) {
      for (const result of await fanout(server, [1_000, 10_000], run)) {
        fanouts.push(result);
        if (!json) console.log(`run ${run} ${server.padEnd(7)} ${String(result.subscribers).padStart(6)} subscribers: ${Math.round(result.deliveriesPerSecond).toLocaleString('en-US')} deliveries/s, p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, ${result.cpuUsPerDelivery.toFixed(2)} µs CPU per delivery, delivered ${(result.deliveredRatio * 100).toFixed(1)}%`);
      }
    }
  }
  const idles: IdleResult[] = [];
  for (const server of ['gateway', 'bare'] as Server[]) {
    const result = await idle(server, idleSockets);
    idles.push(result);
    if (!json) console.log(`idle ${server.padEnd(7)} ${result.sockets} sockets: RSS ${result.rssBeforeMB.toFixed(1)} -> ${result.rssAfterMB.toFixed(1)} MB, ${Math.round(result.bytesPerSocket)} bytes per socket`);
  }

  const summary = [1_000, 10_000].map((subscribers) => {
    const of = (server: Server) => fanouts.filter((f) => f.server === server && f.subscribers === subscribers);
    const stat = (server: Server, pick: (f: FanoutResult) => number) => median(of(server).map(pick));
    const medians = (server: Server) => ({
      deliveriesPerSecond: stat(server, (f) => f.deliveriesPerSecond),
      p50Ms: stat(server, (f) => f.p50Ms),
      p99Ms: stat(server, (f) => f.p99Ms),
      cpuUsPerDelivery: stat(server, (f) => f.cpuUsPerDelivery),
      deliveredRatio: Math.min(...of(server).map((f) => f.deliveredRatio)),
    });
    const gateway = medians('gateway');
    const bare = medians('bare');
    return { subscribers, gateway, bare, ratio: gateway.deliveriesPerSecond / bare.deliveriesPerSecond, cpuRatio: bare.cpuUsPerDelivery / gateway.cpuUsPerDelivery };
  });
  const machine = { nproc: os.cpus().length, ramGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, date: new Date().toISOString() };
  if (json) {
    console.log(JSON.stringify({ machine, runs, fanouts, summary, idles, seconds: (Date.now() - started) / 1000 }, null, 2));
    return;
  }
  console.log(`\nmedians of ${runs} runs (${machine.nproc} CPUs, ${machine.ramGiB} GiB, Node ${machine.node}), ${((Date.now() - started) / 1000).toFixed(0)} s`);
  for (const s of summary) {
    const side = (r: typeof s.gateway) => `${Math.round(r.deliveriesPerSecond).toLocaleString('en-US')}/s (p50 ${r.p50Ms.toFixed(2)} ms, p99 ${r.p99Ms.toFixed(2)} ms, ${r.cpuUsPerDelivery.toFixed(2)} µs CPU/delivery)`;
    console.log(`${String(s.subscribers).padStart(6)} subscribers: gateway ${side(s.gateway)}, bare ${side(s.bare)}, rate ratio ${s.ratio.toFixed(2)}, CPU ratio ${s.cpuRatio.toFixed(2)}`);
  }
}

const role = process.argv.find((a) => a.startsWith('--role='))?.slice('--role='.length);
const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? '';
switch (role) {
  case 'gateway': await runGateway(); break;
  case 'bare': await runBare(); break;
  case 'subscribers': await runSubscribers(arg('url'), Number(arg('count')), arg('from')); break;
  case 'idle': await runIdle(arg('url'), Number(arg('count')), arg('from')); break;
  default: await main();
}
