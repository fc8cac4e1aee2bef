import { Command, Option } from 'commander';
import { expandPriorityMix, SCENARIO_SPECS, type BenchOptions } from './scenarios.js';
import { SCENARIOS, SERVER_KINDS, type ScenarioName, type ServerKind } from './types.js';

interface RawOptions {
  server: ServerKind;
  host: string;
  mqttPort?: string;
  httpPort?: string;
  grpcPort?: string;
  wsPath: string;
  connections?: string;
  publishers: string;
  subscribers?: string;
  topics?: string;
  rate?: string;
  max?: boolean;
  inflight?: string;
  duration?: string;
  count?: string;
  warmup: string;
  drain: string;
  payload: string;
  qos?: string;
  priority: string;
  keepalive: string;
  workers?: string;
  json?: boolean;
  cpuProf?: string;
  tls?: boolean;
  persistent?: boolean;
  cluster?: boolean;
  serverWorkers?: string;
  versus?: string;
  runs?: string;
}

function number(name: string, value: string | undefined, { min = 0, integer = true } = {}): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
    throw new Error(`--${name}: expected ${integer ? 'an integer' : 'a number'} ≥ ${min}, got "${value}"`);
  }
  return n;
}

/** Applies the scenario's defaults, then the general ones, and checks that the run is bounded. */
export function resolveOptions(scenario: ScenarioName, raw: RawOptions): BenchOptions {
  const defaults = SCENARIO_SPECS[scenario].defaults;
  const publishers = number('publishers', raw.publishers, { min: 1 })!;
  const connections = number('connections', raw.connections, { min: 1 }) ?? defaults.connections ?? 1;
  const rate = raw.max ? undefined : number('rate', raw.rate, { min: 0.001, integer: false }) ?? defaults.rate;
  const qos = number('qos', raw.qos) ?? defaults.qos ?? 0;
  if (qos > 1) throw new Error('--qos: 0 or 1');
  const duration = number('duration', raw.duration, { min: 0.1, integer: false }) ?? defaults.duration ?? 10;
  const subscribers = number('subscribers', raw.subscribers) ?? defaults.subscribers ?? 1;
  const clients = connections + publishers + subscribers;
  const httpPort = number('http-port', raw.httpPort, { min: 1 });
  return {
    server: raw.server,
    host: raw.host,
    ports: {
      ...(raw.mqttPort ? { mqtt: number('mqtt-port', raw.mqttPort, { min: 1 }) } : {}),
      ...(httpPort ? { http: httpPort, ws: httpPort, wsPath: raw.wsPath } : {}),
      ...(raw.grpcPort ? { grpc: number('grpc-port', raw.grpcPort, { min: 1 }) } : {}),
    },
    connections,
    publishers,
    subscribers,
    topics: number('topics', raw.topics, { min: 1 }) ?? publishers,
    rate,
    inflight: number('inflight', raw.inflight, { min: 1 }) ?? defaults.inflight ?? 1,
    duration,
    count: number('count', raw.count, { min: 1 }),
    warmup: number('warmup', raw.warmup, { integer: false })!,
    drain: number('drain', raw.drain, { integer: false })!,
    payload: number('payload', raw.payload, { min: 1 })!,
    qos: qos as 0 | 1,
    priorities: expandPriorityMix(raw.priority),
    keepalive: number('keepalive', raw.keepalive, { min: 1 })!,
    // One worker per 5,000 clients keeps each well inside its open-files limit and its core.
    workers: number('workers', raw.workers, { min: 1 }) ?? defaults.workers ?? Math.min(8, Math.max(1, Math.ceil(clients / 5000))),
    json: raw.json === true,
    cpuProfileDir: raw.cpuProf,
    tls: raw.tls === true,
    persistent: raw.persistent === true,
    cluster: raw.cluster === true || raw.serverWorkers !== undefined ? { workers: number('server-workers', raw.serverWorkers, { min: 1 }) ?? 1 } : undefined,
  };
}

/** `--versus aedes,mosquitto`: the peers to run beside Junction, which must be the server under test. */
function versusPeers(list: string, server: ServerKind): ServerKind[] {
  if (server !== 'junction') throw new Error('--versus compares Junction with peers: leave --server out');
  const peers = list.split(',').map((p) => p.trim());
  for (const peer of peers) {
    if (!(SERVER_KINDS as readonly string[]).includes(peer) || peer === 'junction' || peer === 'external') {
      throw new Error(`--versus: "${peer}" is not a peer; one of ${SERVER_KINDS.filter((k) => k !== 'junction' && k !== 'external').join(', ')}`);
    }
  }
  return peers as ServerKind[];
}

const SCENARIO_HELP = SCENARIOS.map((name) => `  ${name.padEnd(17)} ${SCENARIO_SPECS[name].summary}\n${' '.repeat(20)}servers: ${SCENARIO_SPECS[name].servers.join(', ')}`).join('\n');

export function registerBenchCommand(program: Command): void {
  program.command('bench')
    .description('load generator: drive a scenario against Junction or a peer server and report throughput and HDR latency percentiles')
    .addHelpText('after', `\nScenarios:\n${SCENARIO_HELP}\n\nEvery run is bounded by --duration (and --count when given). See docs/benchmarks.md.`)
    .argument('<scenario>', SCENARIOS.join(' | '))
    .addOption(new Option('--server <kind>', 'what to load: Junction, a bare library from bench/peers, a Debian broker, or an external server').choices(SERVER_KINDS).default('junction'))
    .option('--host <address>', 'server address (loopback)', '127.0.0.1')
    .option('--mqtt-port <port>', 'external server: MQTT port')
    .option('--http-port <port>', 'external server: HTTP port (WebSocket too)')
    .option('--grpc-port <port>', 'external server: gRPC port')
    .option('--ws-path <path>', 'external server: WebSocket path', '/ws')
    .option('--connections <n>', 'connections to hold (connections scenarios), HTTP connections, gRPC channels or streams')
    .option('--publishers <n>', 'publishing clients (per protocol in mixed)', '1')
    .option('--subscribers <n>', 'subscribing clients')
    .option('--topics <n>', 'mqtt-pubsub: distinct topics (default: one per publisher)')
    .option('--rate <msgs/s>', 'open loop: messages per second over all publishers, latency from the scheduled send time')
    .option('--max', 'closed loop: each publisher keeps --inflight messages unacknowledged (the default unless the scenario has a rate)')
    .option('--inflight <n>', 'closed loop: unacknowledged messages per publisher')
    .option('--duration <s>', 'seconds of sending (or holding connections) after the warm-up')
    .option('--count <n>', 'stop after this many messages over all publishers (warm-up included)')
    .option('--warmup <s>', 'seconds of sending before measuring', '1')
    .option('--drain <s>', 'longest wait for deliveries after the last send', '5')
    .option('--payload <bytes>', 'payload size', '64')
    .option('--qos <0|1>', 'MQTT QoS / WebSocket qos / message qos')
    .option('--priority <mix>', 'priority mix, PRIORITY[:WEIGHT],… e.g. 0:90,9:10', '0')
    .option('--keepalive <s>', 'heartbeat interval of held connections', '30')
    .option('--workers <n>', 'load-generator processes (default: one per 5,000 clients)')
    .option('--cpu-prof <dir>', 'write a V8 CPU profile of the server process (Junction or a bare Node peer) to this directory')
    .option('--cluster', 'Junction in cluster mode on a redis-server the bench starts (appendonly, appendfsync always); its CPU counts as the server\'s')
    .option('--server-workers <n>', 'Junction with `--workers N` (cluster mode); CPU and memory are the workers\' and Redis\'s together')
    .option('--persistent', 'MQTT subscribers with persistent sessions (clean: false): their QoS 1 deliveries go through the broker\'s session store (Redis with --cluster)')
    .option('--tls', 'MQTT and HTTP over TLS: the server gets a throw-away certificate (Junction, mosquitto, fastify)')
    .option('--versus <servers>', 'the same load against Junction and these servers (comma-separated), alternating, with Junction ÷ peer ratios of rate and CPU per message')
    .option('--runs <n>', 'with --versus: runs per server (default 1)')
    .option('--json', 'print the result as JSON')
    .action(async (scenario: string, raw: RawOptions) => {
      if (!(SCENARIOS as readonly string[]).includes(scenario)) throw new Error(`unknown scenario "${scenario}"; one of ${SCENARIOS.join(', ')}`);
      const options = resolveOptions(scenario as ScenarioName, raw);
      const [{ runBench }, { formatSummary }] = await Promise.all([import('./run.js'), import('./report.js')]);
      const command = ['junction', ...process.argv.slice(2)].join(' ');
      if (raw.versus === undefined) {
        const result = await runBench(scenario as ScenarioName, options, command);
        process.stdout.write(`${options.json ? JSON.stringify(result, null, 2) : formatSummary(result)}\n`);
        return;
      }
      const peers = versusPeers(raw.versus, options.server);
      const runs = number('runs', raw.runs, { min: 1 }) ?? 1;
      const [{ alternate, comparisonOf }, { renderComparison }] = await Promise.all([import('./comparison.js'), import('./render.js')]);
      const servers: ServerKind[] = ['junction', ...peers];
      const results = await alternate(servers, runs, (server) => runBench(scenario as ScenarioName, { ...options, server }, command), (result, run) => {
        if (!options.json) process.stderr.write(`${result.server}, run ${run + 1} of ${runs}:\n${formatSummary(result)}\n\n`);
      });
      const comparison = comparisonOf(scenario, command, servers, results);
      process.stdout.write(`${options.json ? JSON.stringify(comparison, null, 2) : renderComparison(comparison).join('\n')}\n`);
    });
}
