/**
 * A fuzz campaign against a gateway of its own (a child process): per protocol, N mutated inputs
 * over real sockets, while a well-behaved client publishes and subscribes beside them. Reports
 * crashes, error log lines, what the well-behaved client lost, and the gateway's RSS before, at
 * its peak and after idling.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as h2connect, constants as h2, type ClientHttp2Session } from 'node:http2';
import { createConnection, type Socket } from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import mqtt from 'mqtt';
import WebSocket from 'ws';
import { JEMALLOC_CONF, jemallocPath } from '../../src/allocator.js';
import { DEAD_LETTER_FULL_ALERT } from '../../src/deadletter/store.js';
import { GROUP_SHED_LOST_ALERT } from '../../src/groups/group-manager.js';
import { FUZZ_PROTOCOLS, GRPC_METHODS, inputs, type FuzzProtocol } from './inputs.js';

/** connections each protocol's inputs are spread over at once */
const PARALLEL = 8;
/** gRPC calls in flight at once (each on a connection of its own lane): a Subscribe call waits out INPUT_WAIT_MS */
const GRPC_PARALLEL = 32;
/** an input's connection is dropped after this long without the gateway closing it */
const INPUT_WAIT_MS = 200;

export interface CampaignOptions {
  /** bin/junction.js of the build under test */
  bin: string;
  inputsPerProtocol: number;
  protocols?: readonly FuzzProtocol[];
  seed?: number;
  /** how long the gateway idles after the load before RSS is read again */
  idleMs?: number;
  /** progress lines */
  log?: (line: string) => void;
}

export interface ProtocolResult {
  protocol: FuzzProtocol;
  inputs: number;
  ms: number;
  /** connections the gateway closed (malformed input closes only its own) */
  closedByGateway: number;
  /** the gateway's RSS once this protocol's inputs were all sent */
  rssMb: number;
}

export interface CampaignReport {
  seed: number;
  results: ProtocolResult[];
  /** the gateway exited during the campaign */
  crashed: boolean;
  /** log lines at error level or above (pino 50+): unhandled rejections and internal errors land here */
  errorLines: string[];
  /** error-level alerts that a documented bound was reached (BOUND_ALERTS), by message: findings, not defects */
  boundAlerts: Record<string, number>;
  rssMb: { before: number; peak: number; afterIdle: number };
  /** where the gateway's memory is, before the load and after idling */
  memoryMb: { before: ProcessMemory; afterIdle: ProcessMemory | undefined };
  /** what the gateway still held after idling, which its memory is expected to keep */
  heldAfterIdle: HeldState | undefined;
  /** qos 1 messages it had acknowledged, received back, and publishes that failed (never acknowledged: not losses) */
  wellBehaved: { sent: number; received: number; failed: number };
  loadAverage: number[];
  cpus: number;
  /** the jemalloc library the gateway ran with, or undefined: glibc's malloc */
  preloaded: string | undefined;
}

interface Gateway {
  child: ChildProcess;
  ports: Record<string, number>;
  errorLines: string[];
  boundAlerts: Record<string, number>;
  /** the jemalloc library it was started with, or undefined: glibc's malloc */
  preloaded: string | undefined;
  exited: boolean;
}

/**
 * Alerts a gateway logs at error level when a bound it documents is reached, which a long
 * campaign reaches by design: fuzzed group names open groups nobody consumes (up to
 * groups.maxGroups), every message matching them is shed once they are full, and the dead-letter
 * store fills to deadletter.maxBytes. The operator is told (throttled); nothing crashed or leaked.
 */
const BOUND_ALERTS = new Set<string>([...Object.values(DEAD_LETTER_FULL_ALERT), GROUP_SHED_LOST_ALERT]);

async function startGateway(bin: string, dir: string): Promise<Gateway> {
  const config = join(dir, 'gateway.yaml');
  writeFileSync(config, `
listeners:
  http: { host: 127.0.0.1, port: 0, maxConnectionsPerIp: 100000, connectRate: { rate: 100000, per: 1s, burst: 100000 } }
  mqtt: { host: 127.0.0.1, port: 0, maxConnectionsPerIp: 100000, connectRate: { rate: 100000, per: 1s, burst: 100000 } }
  grpc: { host: 127.0.0.1, port: 0, maxConnectionsPerIp: 100000, connectRate: { rate: 100000, per: 1s, burst: 100000 } }
  admin: { host: 127.0.0.1, port: 0 }
auth: { anonymous: true }
storage: { dir: ${join(dir, 'store')} }
deadletter: { path: ${join(dir, 'deadletter.jsonl')} }
log: { level: info }
defaultRoute: publish
`);
  // On jemalloc when it is installed, as npm start and docs/operations.md start the gateway.
  const jemalloc = jemallocPath();
  const env = jemalloc === undefined ? process.env : { ...process.env, LD_PRELOAD: jemalloc, MALLOC_CONF: process.env.MALLOC_CONF ?? JEMALLOC_CONF };
  const child = spawn(process.execPath, [bin, 'start', '-c', config], { stdio: ['ignore', 'pipe', 'pipe'], env });
  const gateway: Gateway = { child, ports: {}, errorLines: [], boundAlerts: {}, preloaded: jemalloc, exited: false };
  child.on('exit', () => { gateway.exited = true; });
  child.stderr!.on('data', (chunk: Buffer) => gateway.errorLines.push(chunk.toString().trim()));
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        gateway.errorLines.push(line);
        return;
      }
      if (Number(entry.level) >= 50) {
        const alert = String(entry.msg);
        if (BOUND_ALERTS.has(alert)) gateway.boundAlerts[alert] = (gateway.boundAlerts[alert] ?? 0) + 1;
        else gateway.errorLines.push(line);
      }
      if (entry.msg === 'listener up') gateway.ports[String(entry.listener)] = Number(String(entry.address).split(':').pop());
      if (entry.msg === 'gateway ready') resolve();
    });
    child.once('exit', (code) => reject(new Error(`the gateway exited with ${code} before it was ready`)));
  });
  return gateway;
}

/** Connections and queued messages: what legitimately holds memory once the load stops. */
export interface HeldState {
  connections: Record<string, number>;
  groups: number;
  groupQueued: number;
  groupQueuedBytes: number;
}

async function heldState(adminPort: number): Promise<HeldState> {
  const admin = `http://127.0.0.1:${adminPort}`;
  const { counts } = await (await fetch(`${admin}/admin/connections?limit=0`)).json() as { counts: Record<string, number> };
  const { groups } = await (await fetch(`${admin}/admin/stats`)).json() as { groups: { queued: number; queuedBytes: number }[] };
  return {
    connections: counts, groups: groups.length,
    groupQueued: groups.reduce((sum, g) => sum + g.queued, 0), groupQueuedBytes: groups.reduce((sum, g) => sum + g.queuedBytes, 0),
  };
}

/** MB of the gateway's memory, by where it lives. */
export interface ProcessMemory {
  rss: number;
  /** JS objects in use, and the heap V8 has committed for them, not all of it resident (from the gateway's /metrics) */
  heapUsed: number;
  heapTotal: number;
  /** Buffers and other memory V8 is told about outside its heap */
  external: number;
  /** resident pages of the program and its libraries, read from their files */
  code: number;
  /** the C allocator's main heap (the `[heap]` mapping): native objects, freed or not */
  mallocHeap: number;
  /** every other resident page: V8's heap, the C allocator's other arenas and large blocks, thread stacks */
  otherAnonymous: number;
}

async function processMemory(pid: number, adminPort: number): Promise<ProcessMemory> {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const mb = (name: string) => Math.round(Number(new RegExp(`^${name} (\\S+)`, 'm').exec(text)?.[1] ?? 0) / 1048576);
  const { rss, code, mallocHeap } = residentMemory(pid);
  return {
    rss, heapUsed: mb('junction_nodejs_heap_size_used_bytes'), heapTotal: mb('junction_nodejs_heap_size_total_bytes'), external: mb('junction_nodejs_external_memory_bytes'),
    code, mallocHeap, otherAnonymous: rss - code - mallocHeap,
  };
}

/** RSS in MB, and the parts of it that are file pages and the C allocator's main heap, from /proc/<pid>/smaps. */
function residentMemory(pid: number): { rss: number; code: number; mallocHeap: number } {
  let rss = 0;
  let code = 0;
  let mallocHeap = 0;
  let mapping = '';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (header) {
      mapping = header[1]!;
      continue;
    }
    const resident = /^Rss:\s+(\d+) kB/.exec(line);
    if (!resident) continue;
    const kb = Number(resident[1]);
    rss += kb;
    if (mapping === '[heap]') mallocHeap += kb;
    else if (mapping.startsWith('/')) code += kb;
  }
  return { rss: Math.round(rss / 1024), code: Math.round(code / 1024), mallocHeap: Math.round(mallocHeap / 1024) };
}

function rssMb(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return Math.round(kb / 1024);
}

/** Sends each input on a connection of its own kind, PARALLEL at once; counts closes by the gateway. */
async function drive(gateway: Gateway, protocol: FuzzProtocol, source: Iterator<Buffer>, counters: { closed: number }): Promise<void> {
  const next = (): Buffer | undefined => {
    const step = source.next();
    return step.done ? undefined : step.value;
  };
  const lanes = Array.from({ length: protocol === 'grpc' ? GRPC_PARALLEL : PARALLEL }, () => lane(gateway, protocol, next, counters));
  await Promise.all(lanes);
}

/** One lane: a connection that takes inputs until the gateway closes it, then a new one. */
async function lane(gateway: Gateway, protocol: FuzzProtocol, next: () => Buffer | undefined, counters: { closed: number }): Promise<void> {
  if (protocol === 'grpc') return grpcLane(gateway.ports.grpc!, next, counters);
  if (protocol === 'ws-json' || protocol === 'mqtt-ws') return webSocketLane(gateway.ports.http!, protocol, next, counters);
  for (let input = next(); input !== undefined && !gateway.exited;) {
    const socket = await rawSocket(protocol, gateway.ports);
    let closed = false;
    socket.once('close', () => { closed = true; });
    // Several inputs per connection while it stays open: malformed ones close it early.
    for (let sent = 0; sent < 16 && input !== undefined && !closed; sent++, input = next()) {
      await new Promise<void>((resolve) => socket.write(input!, () => resolve()));
    }
    if (!closed) await Promise.race([new Promise((resolve) => socket.once('close', resolve)), delay(INPUT_WAIT_MS)]);
    if (closed) counters.closed++;
    socket.destroy();
  }
}

async function rawSocket(protocol: FuzzProtocol, ports: Record<string, number>): Promise<Socket> {
  const socket = createConnection(protocol === 'mqtt-tcp' ? ports.mqtt! : ports.http!, '127.0.0.1');
  socket.on('error', () => undefined);
  socket.on('data', () => undefined);
  await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  if (protocol === 'ws-frames') {
    socket.write('GET /ws HTTP/1.1\r\nHost: j\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n');
    await new Promise((resolve) => {
      socket.once('data', resolve);
      socket.once('close', resolve);
    });
  }
  return socket;
}

async function webSocketLane(port: number, protocol: 'ws-json' | 'mqtt-ws', next: () => Buffer | undefined, counters: { closed: number }): Promise<void> {
  for (let input = next(); input !== undefined;) {
    const socket = protocol === 'mqtt-ws' ? new WebSocket(`ws://127.0.0.1:${port}/mqtt`, 'mqtt') : new WebSocket(`ws://127.0.0.1:${port}/ws`);
    socket.on('error', () => undefined);
    const opened = await new Promise<boolean>((resolve) => socket.once('open', () => resolve(true)).once('error', () => resolve(false)));
    let closed = !opened;
    socket.once('close', () => { closed = true; });
    for (let sent = 0; sent < 16 && input !== undefined && !closed; sent++, input = next()) {
      const data = input;
      await new Promise<void>((resolve) => socket.send(data, { binary: protocol === 'mqtt-ws' }, () => resolve()));
    }
    if (!closed) await Promise.race([new Promise((resolve) => socket.once('close', resolve)), delay(INPUT_WAIT_MS)]);
    if (closed) counters.closed++;
    socket.terminate();
  }
}

async function grpcLane(port: number, next: () => Buffer | undefined, counters: { closed: number }): Promise<void> {
  let session: ClientHttp2Session | undefined;
  for (let input = next(), i = 0; input !== undefined; input = next(), i++) {
    if (!session || session.closed || session.destroyed) {
      if (session) counters.closed++;
      session = h2connect(`http://127.0.0.1:${port}`);
      session.on('error', () => undefined);
    }
    const method = GRPC_METHODS[i % GRPC_METHODS.length]!;
    // One call in eight also gets a mangled header.
    const header = i % 8 === 0 ? { 'grpc-timeout': input.subarray(0, 8).toString('latin1').replace(/[^\x20-\x7e]/g, '9') } : {};
    const stream = session.request({ ':method': 'POST', ':path': `/junction.v1.Gateway/${method}`, 'content-type': 'application/grpc', te: 'trailers', ...header });
    stream.on('error', () => undefined);
    stream.on('data', () => undefined);
    stream.end(input);
    await Promise.race([new Promise((resolve) => stream.once('close', resolve)), delay(INPUT_WAIT_MS)]);
    if (!stream.closed) stream.close(h2.NGHTTP2_CANCEL);
  }
  session?.close();
}

/** An MQTT subscriber and an HTTP publisher of qos 1 messages on keys no fuzz input uses. */
async function wellBehaved(ports: Record<string, number>): Promise<{ stop(): Promise<CampaignReport['wellBehaved']> }> {
  const subscriber = await mqtt.connectAsync(`mqtt://127.0.0.1:${ports.mqtt}`, { reconnectPeriod: 0, clientId: 'well-behaved' });
  let received = 0;
  subscriber.on('message', () => received++);
  await subscriber.subscribeAsync('calm/#', { qos: 1 });
  let sent = 0;
  let failed = 0;
  let stopping = false;
  const publishing = (async () => {
    while (!stopping) {
      try {
        const response = await fetch(`http://127.0.0.1:${ports.http}/v1/messages/calm/x`, { method: 'POST', body: String(sent), headers: { 'x-qos': '1' } });
        await response.arrayBuffer();
        if (response.status === 202) sent++;
        else failed++;
      } catch {
        // A kept-alive connection the gateway closed as this request went out: it was never acknowledged.
        failed++;
      }
      await delay(20);
    }
  })();
  return {
    stop: async () => {
      stopping = true;
      await publishing;
      const deadline = Date.now() + 10_000;
      while (received < sent && Date.now() < deadline) await delay(50);
      await subscriber.endAsync();
      return { sent, received, failed };
    },
  };
}

export async function runCampaign(options: CampaignOptions): Promise<CampaignReport> {
  const seed = options.seed ?? Date.now() % 1_000_000;
  const log = options.log ?? (() => undefined);
  const dir = mkdtempSync(join(os.tmpdir(), 'junction-fuzz-'));
  const gateway = await startGateway(options.bin, dir);
  const pid = gateway.child.pid!;
  try {
    const calm = await wellBehaved(gateway.ports);
    await delay(1000);
    const before = rssMb(pid);
    const memoryBefore = await processMemory(pid, gateway.ports.admin!);
    let peak = before;
    const sampler = setInterval(() => {
      if (!gateway.exited) peak = Math.max(peak, rssMb(pid));
    }, 250);
    const results: ProtocolResult[] = [];
    for (const protocol of options.protocols ?? FUZZ_PROTOCOLS) {
      if (gateway.exited) break;
      const counters = { closed: 0 };
      const started = Date.now();
      await drive(gateway, protocol, inputs(protocol, options.inputsPerProtocol, seed)[Symbol.iterator](), counters);
      const rssAfter = gateway.exited ? 0 : rssMb(pid);
      results.push({ protocol, inputs: options.inputsPerProtocol, ms: Date.now() - started, closedByGateway: counters.closed, rssMb: rssAfter });
      log(`${protocol}: ${options.inputsPerProtocol} inputs in ${Date.now() - started} ms, ${counters.closed} connections closed by the gateway, RSS ${rssAfter} MB`);
    }
    const wellBehavedResult = await calm.stop();
    clearInterval(sampler);
    await delay(options.idleMs ?? 10_000);
    const crashed = gateway.exited;
    return {
      seed, results, crashed, errorLines: gateway.errorLines, boundAlerts: gateway.boundAlerts,
      rssMb: { before, peak, afterIdle: crashed ? 0 : rssMb(pid) },
      memoryMb: { before: memoryBefore, afterIdle: crashed ? undefined : await processMemory(pid, gateway.ports.admin!) },
      heldAfterIdle: crashed ? undefined : await heldState(gateway.ports.admin!),
      wellBehaved: wellBehavedResult, loadAverage: os.loadavg().map((l) => Math.round(l * 100) / 100), cpus: os.cpus().length, preloaded: gateway.preloaded,
    };
  } finally {
    gateway.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}
