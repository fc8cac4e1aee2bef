/**
 * gRPC ingress throughput: unary `Publish` calls/s and `PublishStream` msgs/s with 100-byte
 * payloads, through the gateway and through a bare grpc-js server that implements the same proto
 * with the same loader and server options but routes nothing (it only acks). Same client code for
 * both; servers run in child processes so client and server each have a core.
 *
 * Run after `npm run build`: `node dist/bench/grpc.js [--seconds 4] [--runs 3] [--json]`.
 * Runs alternate bare/gateway; medians, gateway/bare ratios and each server's CPU time per
 * message are printed. About a minute.
 *
 * Goals (issue 4): unary and stream each at least 0.7x bare; stream at least 50,000 msgs/s.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  Client, credentials, Metadata, Server, ServerCredentials,
  type ServerDuplexStream, type ServerUnaryCall, type sendUnaryData, type ServiceError,
} from '@grpc/grpc-js';
import type { MethodDefinition } from '@grpc/proto-loader';
import { createGrpcAdapter, serverOptions } from '../adapters/grpc/index.js';
import { loadGatewayProto, type MessageIn, type PublishAckOut } from '../adapters/grpc/proto.js';
import { loadConfigFile, loadConfigText } from '../src/config/load.js';
import { Gateway } from '../src/gateway.js';
import { silentLogger } from '../src/log.js';
import { newMessageId } from '../src/message.js';

const PAYLOAD = Buffer.alloc(100, 0x61);
/** unary calls in flight at once, over one channel */
const UNARY_CONCURRENCY = 64;
const WARMUP_SECONDS = 1;

type Role = 'bare' | 'gateway';

// ---------------------------------------------------------------------------------------------
// Servers (child processes)

const GATEWAY_YAML = `
listeners:
  grpc: { host: 127.0.0.1, port: 0 }
routes:
  - { name: bench, match: { key: "bench/+" }, to: [publish] }
defaultRoute: drop
deadletter: { path: deadletter.jsonl }
auth: { anonymous: true }
`;

async function serveGateway(): Promise<number> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'junction-bench-'));
  const file = path.join(dir, 'gateway.yaml');
  await writeFile(file, GATEWAY_YAML);
  const { config } = await loadConfigFile(file);
  const gateway = await Gateway.start(config, { logger: silentLogger(), adapters: [createGrpcAdapter] });
  process.once('disconnect', () => void gateway.stop().finally(() => rm(dir, { recursive: true, force: true })).finally(() => process.exit(0)));
  return gateway.address('grpc')!.port;
}

/** The same service with nothing behind it: decode, ack with an id, encode. */
async function serveBare(): Promise<number> {
  const { service } = loadGatewayProto();
  // The options a config without a `grpc:` section gets, as the gateway has.
  const server = new Server(serverOptions(loadConfigText('', '').config.grpc));
  server.addService(service, {
    Publish: (call: ServerUnaryCall<MessageIn, PublishAckOut>, callback: sendUnaryData<PublishAckOut>) => {
      callback(null, { id: call.request.id || newMessageId(), sequence: 0, expired: false });
    },
    PublishStream: (call: ServerDuplexStream<MessageIn, PublishAckOut>) => {
      let sequence = 0;
      call.on('data', (m: MessageIn) => call.write({ id: m.id || newMessageId(), sequence: ++sequence, expired: false }));
      call.on('end', () => call.end());
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  process.once('disconnect', () => {
    server.forceShutdown();
    process.exit(0);
  });
  return port;
}

/** The server's CPU time so far, in µs (user + system), asked over IPC. */
function cpuOf(child: ChildProcess): Promise<number> {
  return new Promise((resolve) => {
    child.once('message', (usage) => {
      const { user, system } = usage as NodeJS.CpuUsage;
      resolve(user + system);
    });
    child.send('cpu');
  });
}

function startServer(role: Role): Promise<{ child: ChildProcess; port: number }> {
  const child = fork(fileURLToPath(import.meta.url), ['--serve', role], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('message', (port) => resolve({ child, port: Number(port) }));
    child.once('exit', (code) => reject(new Error(`${role} server exited with ${code}`)));
  });
}

// ---------------------------------------------------------------------------------------------
// Client

type Method = MethodDefinition<object, PublishAckOut>;

/**
 * The client sends the same message every time, so it is encoded once: the client's own CPU
 * (one core of two) goes to the calls, not to re-encoding, and measures the server better.
 */
function encodedOnce(method: Method, message: object): (value: object) => Buffer {
  const bytes = method.requestSerialize(message);
  return () => bytes;
}

function methods(): { publish: Method; publishStream: Method } {
  const service = loadGatewayProto().service as unknown as Record<'Publish' | 'PublishStream', Method>;
  return { publish: service.Publish, publishStream: service.PublishStream };
}

interface Measured {
  /** calls or messages acked */
  count: number;
  seconds: number;
}

/** Unary Publish with UNARY_CONCURRENCY calls in flight for `seconds`. */
async function unary(client: Client, method: Method, seconds: number): Promise<Measured> {
  let done = 0;
  let failed = 0;
  const until = performance.now() + seconds * 1000;
  const serialize = encodedOnce(method, { key: 'bench/unary', payload: PAYLOAD, qos: 0 });
  const loop = async () => {
    while (performance.now() < until) {
      await new Promise<void>((resolve) => {
        client.makeUnaryRequest(method.path, serialize, method.responseDeserialize, {}, new Metadata(), {},
          (err: ServiceError | null) => {
            if (err) failed++;
            else done++;
            resolve();
          });
      });
    }
  };
  const start = performance.now();
  await Promise.all(Array.from({ length: UNARY_CONCURRENCY }, loop));
  if (failed > 0) throw new Error(`${failed} unary calls failed`);
  return { count: done, seconds: (performance.now() - start) / 1000 };
}

/** One PublishStream, written as fast as flow control allows for `seconds`. */
async function stream(client: Client, method: Method, seconds: number): Promise<Measured> {
  const call = client.makeBidiStreamRequest(method.path, encodedOnce(method, { key: 'bench/stream', payload: PAYLOAD, qos: 0 }), method.responseDeserialize, new Metadata(), {});
  let acked = 0;
  let errors = 0;
  call.on('data', (ack: PublishAckOut) => {
    if (ack.error) errors++;
    else acked++;
  });
  const finished = new Promise<void>((resolve, reject) => {
    call.on('status', () => resolve());
    call.on('error', reject);
  });
  const start = performance.now();
  const until = start + seconds * 1000;
  while (performance.now() < until) {
    // Write a batch, then yield to the event loop so acks are read; wait for drain when told to.
    let ok = true;
    for (let i = 0; i < 256 && ok; i++) ok = call.write({});
    if (!ok) await new Promise((resolve) => call.once('drain', resolve));
    else await new Promise((resolve) => setImmediate(resolve));
  }
  const count = acked;
  const elapsed = (performance.now() - start) / 1000;
  call.end();
  await finished;
  if (errors > 0) throw new Error(`${errors} stream messages were refused`);
  return { count, seconds: elapsed };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { seconds: { type: 'string', default: '4' }, runs: { type: 'string', default: '3' }, json: { type: 'boolean', default: false } } });
  const seconds = Number(values.seconds);
  const runs = Number(values.runs);
  const { publish, publishStream } = methods();
  const servers = { bare: await startServer('bare'), gateway: await startServer('gateway') };
  const clients = {
    bare: new Client(`127.0.0.1:${servers.bare.port}`, credentials.createInsecure()),
    gateway: new Client(`127.0.0.1:${servers.gateway.port}`, credentials.createInsecure()),
  };
  type Scenario = 'unary' | 'stream';
  /** per role and scenario: rate (per second) and the server's CPU µs per call or message, one per run */
  const results = {
    bare: { unary: { rate: [] as number[], cpu: [] as number[] }, stream: { rate: [] as number[], cpu: [] as number[] } },
    gateway: { unary: { rate: [] as number[], cpu: [] as number[] }, stream: { rate: [] as number[], cpu: [] as number[] } },
  };
  const measure = async (role: Role, scenario: Scenario): Promise<void> => {
    const before = await cpuOf(servers[role].child);
    const { count, seconds: elapsed } = scenario === 'unary'
      ? await unary(clients[role], publish, seconds)
      : await stream(clients[role], publishStream, seconds);
    const cpu = (await cpuOf(servers[role].child)) - before;
    results[role][scenario].rate.push(count / elapsed);
    results[role][scenario].cpu.push(cpu / count);
  };
  try {
    for (const role of ['bare', 'gateway'] as const) {
      await unary(clients[role], publish, WARMUP_SECONDS);
      await stream(clients[role], publishStream, WARMUP_SECONDS);
    }
    for (let run = 0; run < runs; run++) {
      // Alternate which goes first, so drift (thermal, other load) does not favour one side.
      const order: Role[] = run % 2 === 0 ? ['bare', 'gateway'] : ['gateway', 'bare'];
      for (const role of order) {
        await measure(role, 'unary');
        await measure(role, 'stream');
        const r = results[role];
        if (!values.json) console.error(`run ${run + 1}/${runs} ${role}: unary ${Math.round(r.unary.rate.at(-1)!)} calls/s, stream ${Math.round(r.stream.rate.at(-1)!)} msgs/s`);
      }
    }
  } finally {
    clients.bare.close();
    clients.gateway.close();
    servers.bare.child.disconnect();
    servers.gateway.child.disconnect();
  }
  const medians = (role: Role, scenario: Scenario) => ({ rate: median(results[role][scenario].rate), cpuMicros: median(results[role][scenario].cpu) });
  const summary = {
    date: new Date().toISOString(),
    machine: { nproc: os.availableParallelism(), ramGiB: Math.round(os.totalmem() / 2 ** 30), node: process.version, cpu: os.cpus()[0]?.model ?? 'unknown', loadavg: os.loadavg().map((l) => Number(l.toFixed(2))) },
    settings: { payloadBytes: PAYLOAD.length, seconds, runs, unaryConcurrency: UNARY_CONCURRENCY, streams: 1 },
    unary: { bare: medians('bare', 'unary'), gateway: medians('gateway', 'unary') },
    stream: { bare: medians('bare', 'stream'), gateway: medians('gateway', 'stream') },
    runs: results,
  };
  if (values.json) {
    console.log(JSON.stringify(summary, null, 2));
    return;
  }
  const n = (x: number) => Math.round(x).toLocaleString('en-US');
  const row = (name: string, unit: string, scenario: Scenario) => {
    const bare = summary[scenario].bare;
    const gateway = summary[scenario].gateway;
    return `| ${name} | ${n(bare.rate)} ${unit} | ${n(gateway.rate)} ${unit} | ${(gateway.rate / bare.rate).toFixed(2)} | ${bare.cpuMicros.toFixed(1)} µs | ${gateway.cpuMicros.toFixed(1)} µs |`;
  };
  console.log('| scenario | bare grpc-js | gateway | gateway / bare | bare CPU per msg | gateway CPU per msg |');
  console.log('|---|---|---|---|---|---|');
  console.log(row('unary Publish', 'calls/s', 'unary'));
  console.log(row('PublishStream', 'msgs/s', 'stream'));
  console.log(`\nmedians of ${runs} alternating runs of ${seconds} s; per run: ${JSON.stringify(results)}`);
  console.log(`machine: ${summary.machine.nproc} CPUs (${summary.machine.cpu}), ${summary.machine.ramGiB} GiB RAM, Node ${summary.machine.node}, load average ${summary.machine.loadavg.join(' ')}`);
}

const serve = process.argv.indexOf('--serve');
if (serve !== -1) {
  const role = process.argv[serve + 1] as Role;
  process.on('message', (m) => {
    if (m === 'cpu') process.send!(process.cpuUsage());
  });
  (role === 'gateway' ? serveGateway() : serveBare()).then((port) => process.send!(port), (err: unknown) => {
    console.error(err);
    process.exit(1);
  });
} else {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(1);
  });
}
