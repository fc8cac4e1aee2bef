import type { BenchProtocol, ScenarioName, ServerKind, ServerPorts } from './types.js';

/** Everything `junction bench` was asked for, after defaults. Times in seconds. */
export interface BenchOptions {
  server: ServerKind;
  host: string;
  ports: ServerPorts;
  connections: number;
  publishers: number;
  subscribers: number;
  topics: number;
  /** messages per second over all publishers (open loop); undefined: as fast as acks allow */
  rate: number | undefined;
  /** messages each publisher keeps unacknowledged in closed loop */
  inflight: number;
  duration: number;
  /** messages over all publishers; the run ends at whichever of count and duration comes first */
  count: number | undefined;
  warmup: number;
  /** how long to wait after the last send for deliveries still on their way */
  drain: number;
  payload: number;
  qos: 0 | 1;
  /** priorities to cycle through, already expanded from a mix such as 0:90,9:10 */
  priorities: number[];
  keepalive: number;
  workers: number;
  json: boolean;
  cpuProfileDir: string | undefined;
  /** every connection over TLS, to a server given a throw-away certificate (MQTT and HTTP scenarios) */
  tls: boolean;
  /** MQTT subscribers keep persistent sessions (clean: false): their QoS 1 deliveries go through the broker's session store */
  persistent: boolean;
  /** Junction in cluster mode on a redis-server the bench starts, with this many worker processes (1: one process) */
  cluster: { workers: number } | undefined;
}

export interface PublisherPlan {
  protocol: BenchProtocol;
  key: string;
  /** messages per second for this publisher; undefined = closed loop */
  rate: number | undefined;
  inflight: number;
  count: number;
}

export interface SubscriberPlan {
  protocol: BenchProtocol;
  /** what the subscriber subscribes to */
  key: string;
  /** a member of a group of competing consumers of `key`: the group gets each message once */
  member?: { group: string; key: string };
}

export interface Topology {
  publishers: PublisherPlan[];
  subscribers: SubscriberPlan[];
  idle: { protocol: BenchProtocol; count: number } | undefined;
  latencyKind: 'delivery' | 'ack' | 'none';
}

export interface ScenarioSpec {
  summary: string;
  /** servers that speak this scenario's protocol as Junction does */
  servers: readonly ServerKind[];
  /** `--tls` works with it: its clients speak MQTT or HTTP */
  tls?: boolean;
  /** defaults that differ from the general ones */
  defaults: Partial<BenchOptions>;
  topology(options: BenchOptions): Topology;
}

const MIXED_PROTOCOLS: BenchProtocol[] = ['mqtt', 'ws', 'http', 'grpc'];

/** Splits a total over `parts`, the first ones taking the remainder. */
function share(total: number, parts: number, index: number): number {
  return Math.floor(total / parts) + (index < total % parts ? 1 : 0);
}

/** Publishers and subscribers of one key, all on `protocol`; latency until each delivery. */
function fanout(o: BenchOptions, protocol: BenchProtocol, key: string): Topology {
  return {
    publishers: publishers(o, protocol, o.publishers, () => key),
    subscribers: Array.from({ length: o.subscribers }, () => ({ protocol, key })),
    idle: undefined,
    latencyKind: 'delivery',
  };
}

function publishers(options: BenchOptions, protocol: BenchProtocol, n: number, key: (i: number) => string): PublisherPlan[] {
  const count = options.count ?? Number.MAX_SAFE_INTEGER;
  return Array.from({ length: n }, (_, i) => ({
    protocol, key: key(i), inflight: options.inflight,
    rate: options.rate === undefined ? undefined : options.rate / n,
    count: options.count === undefined ? count : share(count, n, i),
  }));
}

export const SCENARIO_SPECS: Record<ScenarioName, ScenarioSpec> = {
  'mqtt-pubsub': {
    summary: 'N MQTT publishers → M subscribers over T topics (publisher i and subscriber j use topic bench/(i mod T))',
    servers: ['junction', 'aedes', 'mosquitto', 'nats', 'external'],
    tls: true,
    defaults: { inflight: 100 },
    topology: (o) => ({
      publishers: publishers(o, 'mqtt', o.publishers, (i) => `bench/${i % o.topics}`),
      subscribers: Array.from({ length: o.subscribers }, (_, j) => ({ protocol: 'mqtt' as const, key: `bench/${j % o.topics}` })),
      idle: undefined,
      latencyKind: 'delivery',
    }),
  },
  'mqtt-connections': {
    summary: 'hold N MQTT connections with keepalive pings for the duration',
    servers: ['junction', 'aedes', 'mosquitto', 'nats', 'external'],
    tls: true,
    defaults: { connections: 1000, duration: 30 },
    topology: (o) => ({ publishers: [], subscribers: [], idle: { protocol: 'mqtt', count: o.connections }, latencyKind: 'none' }),
  },
  'ws-fanout': {
    summary: 'WebSocket publishers → M subscribers of one key (bench/fanout)',
    servers: ['junction', 'ws', 'nats', 'external'],
    // Each delivery is a read on its own socket, which costs the client about what it costs the
    // server to write it: two workers keep one from being the bottleneck at --max.
    defaults: { subscribers: 1000, rate: 10, workers: 2 },
    topology: (o) => fanout(o, 'ws', 'bench/fanout'),
  },
  'ws-connections': {
    summary: 'hold N WebSocket connections with pings for the duration',
    servers: ['junction', 'ws', 'nats', 'external'],
    defaults: { connections: 1000, duration: 30 },
    topology: (o) => ({ publishers: [], subscribers: [], idle: { protocol: 'ws', count: o.connections }, latencyKind: 'none' }),
  },
  'http-publish': {
    summary: 'POST /v1/messages/bench/http on N keep-alive connections, one request at a time each; latency until 202',
    servers: ['junction', 'fastify', 'external'],
    tls: true,
    // One worker at a bare fastify route is near a full core: two keep the generator out of the way.
    defaults: { connections: 32, inflight: 1, workers: 2 },
    topology: (o) => ({
      publishers: publishers({ ...o, inflight: 1 }, 'http', o.connections, () => 'bench/http'),
      subscribers: [], idle: undefined, latencyKind: 'ack',
    }),
  },
  'grpc-unary': {
    summary: 'Publish calls on N channels, `inflight` calls outstanding on each; latency until the PublishAck',
    servers: ['junction', 'grpc', 'external'],
    // A grpc-js client costs more CPU per call than the server: two workers.
    defaults: { connections: 4, inflight: 32, workers: 2 },
    topology: (o) => ({
      publishers: publishers(o, 'grpc', o.connections, () => 'bench/grpc'),
      subscribers: [], idle: undefined, latencyKind: 'ack',
    }),
  },
  'grpc-stream': {
    summary: 'PublishStream on N streams, `inflight` messages unacknowledged on each; latency until each ack',
    servers: ['junction', 'grpc', 'external'],
    defaults: { connections: 1, inflight: 512 },
    topology: (o) => ({
      publishers: publishers(o, 'grpc', o.connections, () => 'bench/grpc-stream'),
      subscribers: [], idle: undefined, latencyKind: 'ack',
    }),
  },
  'grpc-fanout': {
    summary: 'unary Publish calls → M Subscribe streams of one key (bench/grpc-fanout), each on its own channel',
    servers: ['junction', 'grpc', 'external'],
    // Decoding every stream's deliveries costs the client more CPU than the server: two workers.
    defaults: { subscribers: 100, inflight: 8, workers: 2 },
    topology: (o) => fanout(o, 'grpc', 'bench/grpc-fanout'),
  },
  'work-queue': {
    summary: 'N MQTT publishers → a group of M competing MQTT consumers ($share/bench/bench/work): each message to one of them',
    servers: ['junction', 'mosquitto', 'external'],
    defaults: { qos: 1, inflight: 100, subscribers: 4 },
    topology: (o) => ({
      publishers: publishers(o, 'mqtt', o.publishers, () => 'bench/work'),
      subscribers: Array.from({ length: o.subscribers }, () => ({ protocol: 'mqtt' as const, key: '$share/bench/bench/work', member: { group: 'bench', key: 'bench/work' } })),
      idle: undefined,
      latencyKind: 'delivery',
    }),
  },
  mixed: {
    summary: 'all four protocols at once: one publisher per protocol on bench/mixed/PROTOCOL, each key subscribed on the three other protocols',
    servers: ['junction', 'external'],
    // 32 in flight: the HTTP publisher opens that many connections, and fewer made its requests
    // queue at half the maximum rate. Two workers: sixteen clients in one process delayed sends.
    defaults: { qos: 1, inflight: 32, workers: 2 },
    topology: (o) => ({
      publishers: MIXED_PROTOCOLS.flatMap((protocol) => publishers(
        { ...o, rate: o.rate === undefined ? undefined : o.rate / MIXED_PROTOCOLS.length, count: o.count === undefined ? undefined : Math.ceil(o.count / MIXED_PROTOCOLS.length) },
        protocol, o.publishers, () => `bench/mixed/${protocol}`,
      )),
      subscribers: MIXED_PROTOCOLS.flatMap((from) => MIXED_PROTOCOLS.filter((to) => to !== from).map((to) => ({ protocol: to, key: `bench/mixed/${from}` }))),
      idle: undefined,
      latencyKind: 'delivery',
    }),
  },
};

/** "0:90,9:10" → a cycle of 100 priorities, 90 zeros and 10 nines, interleaved. */
export function expandPriorityMix(mix: string): number[] {
  const parts = mix.split(',').map((part) => {
    const [priority, weight] = part.split(':').map(Number);
    if (!Number.isInteger(priority) || priority! < 0 || priority! > 9 || !Number.isInteger(weight ?? 1) || (weight ?? 1) < 1) {
      throw new Error(`--priority: expected PRIORITY[:WEIGHT],… with priorities 0-9, got "${mix}"`);
    }
    return { priority: priority!, weight: weight ?? 1 };
  });
  const total = parts.reduce((sum, p) => sum + p.weight, 0);
  // Spread each priority evenly over the cycle instead of sending them in blocks.
  const cycle: number[] = [];
  const credit = parts.map(() => 0);
  for (let i = 0; i < total; i++) {
    parts.forEach((p, j) => { credit[j]! += p.weight; });
    let best = 0;
    credit.forEach((c, j) => { if (c > credit[best]!) best = j; });
    credit[best]! -= total;
    cycle.push(parts[best]!.priority);
  }
  return cycle;
}
