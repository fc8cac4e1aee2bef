import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { benchCertificate, type BenchCertificate } from './tls.js';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ServerKind, ServerPorts } from './types.js';

/** The package root: dist/src/bench/ is three levels below it. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** A server under test that the load generator started, or one somebody else runs. */
export interface ServerUnderTest {
  kind: ServerKind;
  host: string;
  ports: ServerPorts;
  /** the process to sample for RSS and CPU, with its children (workers); absent for `external` */
  pid?: number;
  /** processes the server needs besides its own, sampled with it (the Redis of cluster mode) */
  companionPids?: number[];
  /** the CA certificate (PEM) its clients trust, when it serves TLS */
  tlsCa?: string;
  stop(): Promise<void>;
}

export interface ServerOptions {
  host: string;
  /** ports of an external server */
  ports: ServerPorts;
  /** directory for the V8 CPU profile (`node --cpu-prof`) of Junction or of a bare Node peer */
  cpuProfileDir?: string;
  /** serve MQTT and HTTP over TLS with a throw-away certificate */
  tls?: boolean;
  /** Junction only: cluster mode on a redis-server of the bench's own, with this many workers */
  cluster?: { workers: number } | undefined;
}

/** Ask the kernel for a free port on the host, then give it back for the server to take. */
export async function freePort(host: string): Promise<number> {
  const [port] = await freePorts(host, 1);
  return port!;
}

/**
 * `count` distinct free ports. Each is held until all are found: a port given back at once can
 * be handed out again by the next request, and two listeners of one server would then collide.
 */
export async function freePorts(host: string, count: number): Promise<number[]> {
  const servers: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (let i = 0; i < count; i++) {
      const server = net.createServer();
      servers.push(server);
      ports.push(await new Promise<number>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, host, () => resolve((server.address() as net.AddressInfo).port));
      }));
    }
    return ports;
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  }
}

/** Polls `check` every 100 ms for up to 20 s; a child that exits meanwhile fails at once. */
async function waitUntil(child: ChildProcess, what: string, check: () => Promise<boolean>, goal: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw exitedEarly(child, what);
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`${what} did not ${goal} within 20 s`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function waitForPort(host: string, port: number, child: ChildProcess, what: string): Promise<void> {
  const accepts = () => new Promise<boolean>((resolve) => {
    const socket = net.connect({ host, port }, () => { socket.destroy(); resolve(true); });
    socket.once('error', () => resolve(false));
  });
  return waitUntil(child, what, accepts, `listen on ${host}:${port}`);
}

/** Resolves once the child prints READY (bench/peers/ scripts do). */
function waitForReady(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes('READY')) resolve();
    });
    child.once('exit', () => setImmediate(() => reject(exitedEarly(child, what))));
  });
}

function hasCommand(command: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Starts the child through sh so its soft open-files limit is raised to the hard one: a server
 * holding 19,000 sockets needs it, and Node does not raise it by itself.
 */
/** Servers started and not yet exited, so an interrupted run can stop them (children outlive a killed parent). */
const running = new Set<ChildProcess>();

/** Stops every server this process started; for a run interrupted at any point, even mid-start. */
export function killServers(): void {
  for (const child of running) child.kill('SIGTERM');
}

function spawnWithFileLimit(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess {
  const child = spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)"; exec "$0" "$@"', command, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'], env,
  });
  running.add(child);
  child.once('exit', () => running.delete(child));
  // Servers' own logs stay out of the report, but a pipe nobody reads would stall the server once
  // full; the tail is kept to explain an early exit.
  let tail = '';
  const keep = (chunk: Buffer) => { tail = (tail + chunk.toString()).slice(-2000); };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  child.once('exit', (code) => { if (code) logTails.set(child, tail); });
  return child;
}

const logTails = new WeakMap<ChildProcess, string>();

function exitedEarly(child: ChildProcess, what: string): Error {
  const tail = logTails.get(child)?.trim();
  return new Error(`${what} exited with code ${child.exitCode}${tail ? `:\n${tail}` : ''}`);
}

async function stopChild(child: ChildProcess, dir?: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(timer);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
}

/** config/examples/bench.yaml with `tls:` on the client listeners, written to `dir`. */
async function tlsBenchConfig(dir: string, certificate: BenchCertificate): Promise<string> {
  const file = path.join(PACKAGE_ROOT, 'config/examples/bench.yaml');
  const doc = parseDocument(await readFile(file, 'utf8'));
  for (const listener of ['http', 'mqtt', 'grpc']) doc.setIn(['listeners', listener, 'tls'], { cert: certificate.cert, key: certificate.key });
  // Relative paths in the copy must still mean what they meant next to the original.
  doc.setIn(['deadletter', 'path'], path.join(dir, 'deadletter.jsonl'));
  const copy = path.join(dir, 'bench-tls.yaml');
  await writeFile(copy, doc.toString());
  return copy;
}

/**
 * A redis-server for cluster mode, as docs/scale-out-stores.md says to run it for the guarantee:
 * append-only file flushed on every write, no eviction.
 */
async function startRedis(host: string, dir: string): Promise<{ url: string; child: ChildProcess }> {
  if (!hasCommand('redis-server')) throw new Error('--cluster needs redis-server (apt-get install redis-server)');
  const port = await freePort(host);
  const child = spawnWithFileLimit('redis-server', [
    '--port', String(port), '--bind', host, '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always',
    '--maxmemory-policy', 'noeviction', '--protected-mode', 'no',
  ]);
  await waitForPort(host, port, child, 'redis-server');
  return { url: `redis://${host}:${port}`, child };
}

/** bench.yaml (or its TLS copy) with a `cluster` section, written to `dir`. */
async function clusterBenchConfig(dir: string, config: string, redis: string): Promise<string> {
  const doc = parseDocument(await readFile(config, 'utf8'));
  doc.set('cluster', { redis, nodeId: 'bench' });
  const copy = path.join(dir, 'bench-cluster.yaml');
  await writeFile(copy, doc.toString());
  return copy;
}

/** `node --cpu-prof` into `dir`, for a process that runs on Node (Junction, the bare peers, load workers) */
export function profiling(dir: string | undefined): string[] {
  return dir ? ['--cpu-prof', '--cpu-prof-dir', path.resolve(dir)] : [];
}

async function startJunction(options: ServerOptions): Promise<ServerUnderTest> {
  const { host } = options;
  const dir = await mkdtemp(path.join(os.tmpdir(), 'junction-bench-'));
  const certificate = options.tls ? benchCertificate(dir) : undefined;
  const plain = certificate ? await tlsBenchConfig(dir, certificate) : path.join(PACKAGE_ROOT, 'config/examples/bench.yaml');
  const redis = options.cluster ? await startRedis(host, dir) : undefined;
  const config = redis ? await clusterBenchConfig(dir, plain, redis.url) : plain;
  const [http, mqtt, grpc, admin] = await freePorts(host, 4) as [number, number, number, number];
  const child = spawnWithFileLimit(process.execPath, [
    ...profiling(options.cpuProfileDir), path.join(PACKAGE_ROOT, 'bin/junction.js'), 'start', '-c', config, '--workers', String(options.cluster?.workers ?? 1),
  ], {
    ...process.env,
    JUNCTION_HTTP_PORT: String(http), JUNCTION_MQTT_PORT: String(mqtt), JUNCTION_GRPC_PORT: String(grpc),
    JUNCTION_ADMIN_PORT: String(admin), JUNCTION_DEADLETTER: path.join(dir, 'deadletter.jsonl'), JUNCTION_STORAGE_DIR: path.join(dir, 'queue'),
  });
  const workers = options.cluster?.workers ?? 1;
  // With workers, /readyz answers for whichever took the connection: every worker must be a ready node.
  const ready = workers > 1
    ? () => fetch(`http://${host}:${admin}/admin/cluster`).then((r) => r.json() as Promise<{ nodes: { ready: boolean }[] }>).then(({ nodes }) => nodes.length === workers && nodes.every((n) => n.ready), () => false)
    : () => fetch(`http://${host}:${admin}/readyz`).then((r) => r.ok, () => false);
  await waitUntil(child, 'junction', ready, 'become ready');
  return {
    kind: 'junction', host, pid: child.pid!,
    ...(redis ? { companionPids: [redis.child.pid!] } : {}),
    ports: { http, ws: http, wsPath: '/ws', mqtt, grpc },
    ...(certificate ? { tlsCa: certificate.ca } : {}),
    stop: async () => {
      await stopChild(child);
      if (redis) await stopChild(redis.child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The bare libraries of bench/peers/, each a script that prints READY once it listens. */
async function startPeer(kind: 'aedes' | 'ws' | 'fastify' | 'grpc', host: string, tls: boolean, cpuProfileDir: string | undefined): Promise<ServerUnderTest> {
  if (tls && kind !== 'fastify') throw new Error(`--tls: bench/peers/${kind} serves no TLS; fastify and mosquitto do`);
  const port = await freePort(host);
  const dir = tls ? await mkdtemp(path.join(os.tmpdir(), 'junction-bench-peer-')) : undefined;
  const certificate = dir ? benchCertificate(dir) : undefined;
  const child = spawnWithFileLimit(process.execPath, [...profiling(cpuProfileDir), path.join(PACKAGE_ROOT, `dist/bench/peers/${kind}.js`), '--host', host, '--port', String(port),
    ...(certificate ? ['--cert', certificate.cert, '--key', certificate.key] : [])]);
  await waitForReady(child, `bench/peers/${kind}`);
  const ports: ServerPorts = kind === 'aedes' ? { mqtt: port } : kind === 'ws' ? { ws: port, wsPath: '/ws' } : kind === 'fastify' ? { http: port } : { grpc: port };
  return { kind, host, pid: child.pid!, ports, ...(certificate ? { tlsCa: certificate.ca } : {}), stop: () => stopChild(child, dir) };
}

async function startMosquitto(host: string, tls: boolean): Promise<ServerUnderTest> {
  if (!hasCommand('mosquitto')) throw new Error('mosquitto is not installed: apt-get install mosquitto');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'junction-bench-mosquitto-'));
  const port = await freePort(host);
  const certificate = tls ? benchCertificate(dir) : undefined;
  // Started as root, mosquitto drops to its own user before reading the key: this throw-away
  // key and its folder must be readable by it.
  if (certificate) await Promise.all([chmod(dir, 0o755), chmod(certificate.key, 0o644)]);
  const conf = path.join(dir, 'mosquitto.conf');
  await writeFile(conf, [
    `listener ${port} ${host}`, 'allow_anonymous true', 'max_connections -1', 'persistence false',
    'max_queued_messages 100000', 'log_dest none',
    ...(certificate ? [`certfile ${certificate.cert}`, `keyfile ${certificate.key}`, 'tls_version tlsv1.2'] : []), '',
  ].join('\n'));
  const child = spawnWithFileLimit('mosquitto', ['-c', conf]);
  await waitForPort(host, port, child, 'mosquitto');
  return { kind: 'mosquitto', host, pid: child.pid!, ports: { mqtt: port }, ...(certificate ? { tlsCa: certificate.ca } : {}), stop: () => stopChild(child, dir) };
}

/** nats-server with its MQTT gateway (which needs JetStream) and its WebSocket listener. */
async function startNats(host: string): Promise<ServerUnderTest> {
  if (!hasCommand('nats-server')) throw new Error('nats-server is not installed: apt-get install nats-server');
  const dir = await mkdtemp(path.join(os.tmpdir(), 'junction-bench-nats-'));
  const [client, mqtt, ws] = await freePorts(host, 3) as [number, number, number];
  const conf = path.join(dir, 'nats.conf');
  await writeFile(conf, [
    `listen: "${host}:${client}"`, 'server_name: junction-bench', 'max_connections: 100000', 'max_payload: 1MB',
    `jetstream { store_dir: "${path.join(dir, 'js')}" }`,
    `mqtt { listen: "${host}:${mqtt}" }`,
    `websocket { listen: "${host}:${ws}", no_tls: true }`, '',
  ].join('\n'));
  const child = spawnWithFileLimit('nats-server', ['-c', conf]);
  for (const port of [client, mqtt, ws]) await waitForPort(host, port, child, 'nats-server');
  return { kind: 'nats', host, pid: child.pid!, ports: { mqtt, ws, wsPath: '/' }, stop: () => stopChild(child, dir) };
}

export async function startServer(kind: ServerKind, options: ServerOptions): Promise<ServerUnderTest> {
  switch (kind) {
    case 'junction': return startJunction(options);
    case 'aedes': case 'ws': case 'fastify': case 'grpc': return startPeer(kind, options.host, options.tls === true, options.cpuProfileDir);
    case 'mosquitto': return startMosquitto(options.host, options.tls === true);
    case 'nats':
      if (options.tls) throw new Error('--tls: the bench starts nats-server without TLS');
      return startNats(options.host);
    case 'external': return { kind, host: options.host, ports: options.ports, stop: () => Promise.resolve() };
  }
}
