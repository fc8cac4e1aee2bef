/**
 * The load generator's vocabulary: scenarios, servers under test, what one run reports and what a
 * comparison of runs reports. `junction bench --json` prints a {@link BenchResult};
 * `bench/peers/compare.ts` writes {@link ComparisonFile} to bench/results/latest.json, from which
 * BENCHMARKS.md and the chart are rendered.
 */

export const SCENARIOS = [
  'mqtt-pubsub', 'mqtt-connections', 'ws-fanout', 'ws-connections',
  'http-publish', 'grpc-unary', 'grpc-stream', 'grpc-fanout', 'mixed', 'work-queue',
] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/**
 * What the load is sent to. `junction` is the gateway with config/examples/bench.yaml; `aedes`,
 * `ws`, `fastify` and `grpc` are the bare libraries in bench/peers/ doing the same job with no
 * routing; `mosquitto` and `nats` are the Debian brokers; `external` is a server somebody else
 * started (only `--host` and the ports are known, so no RSS or CPU figures).
 */
export const SERVER_KINDS = ['junction', 'aedes', 'ws', 'fastify', 'grpc', 'mosquitto', 'nats', 'external'] as const;
export type ServerKind = (typeof SERVER_KINDS)[number];

export type BenchProtocol = 'mqtt' | 'ws' | 'http' | 'grpc';

/** Where each protocol listens on the server under test. WebSocket is a path on the `ws` port. */
export interface ServerPorts {
  mqtt?: number;
  http?: number;
  ws?: number;
  wsPath?: string;
  grpc?: number;
}

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  memGiB: number;
  node: string;
  os: string;
  loadAverage: number;
}

/** Latency percentiles in milliseconds, from an HDR histogram recorded in microseconds. */
export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

/** One process's footprint over a run, read from /proc. */
export interface ProcessFootprint {
  pid: number;
  /** resident set before any client connected */
  rssBeforeBytes: number;
  /** resident set once every client had connected (connections scenarios) */
  rssConnectedBytes?: number;
  rssAfterBytes: number;
  /** resident set half-way through the measured window, and when the senders stopped: equal when memory stays flat under load */
  rssMidBytes?: number;
  rssEndBytes?: number;
  /** VmHWM: the highest resident set the process ever had */
  peakRssBytes: number;
  /** user + system CPU seconds spent during the measured window */
  cpuSeconds: number;
  /**
   * The same window's CPU by process, when the server is several (cluster mode: the workers, the
   * primary that forked them, Redis): what each would need of a core.
   */
  cpuByProcess?: ProcessCpu[];
}

export interface ProcessCpu {
  /** `gateway` a lone process; `primary` and `worker` under --server-workers; `redis` cluster mode's */
  role: 'gateway' | 'primary' | 'worker' | 'redis';
  pid: number;
  cpuSeconds: number;
}

export interface BenchResult {
  scenario: ScenarioName;
  server: ServerKind;
  /** the options that were in force, after defaults */
  options: Record<string, unknown>;
  /** `junction bench …` command line that reproduces the run */
  command: string;
  machine: MachineInfo;
  startedAt: string;
  /** seconds from the first send to the last receipt (or the hold time for connections scenarios) */
  durationS: number;
  /** messages sent by publishers, warm-up included */
  sent: number;
  /** deliveries received by subscribers, or acks for request-style scenarios, warm-up included */
  received: number;
  /** deliveries expected: accepted sends × subscribers of each key; equal to sent for request-style scenarios */
  expected: number;
  /** refused publishes, failed requests, error frames */
  errors: number;
  /** the first few distinct error texts, for the summary */
  errorSamples: string[];
  /** rates over the measured window, from the end of the warm-up */
  sentPerS: number;
  /** sends per second per key (mixed: one key per publishing protocol) */
  sentPerSByKey: Record<string, number>;
  receivedPerS: number;
  /**
   * Server CPU time per message received (a delivery, or an ack for request-style scenarios), in
   * microseconds: the figure that compares servers best on a shared machine, where rates drift
   * with the load of other processes. Absent when the server's process is not known (`external`)
   * or nothing was received.
   */
  cpuUsPerMessage?: number;
  /** the latency that matters for the scenario: delivery (end to end) or ack */
  latencyKind: 'delivery' | 'ack' | 'none';
  latency: LatencySummary;
  /** open-loop runs only: messages per second asked for */
  targetRate?: number;
  connections?: {
    wanted: number;
    connected: number;
    failed: number;
    /** connections that closed while they should have stayed open */
    dropped: number;
    /** connections opened per second while connecting (with --tls: TLS handshakes per second) */
    openedPerS?: number;
    /** (rssConnected − rssBefore) / connected */
    rssPerConnectionBytes?: number;
  };
  serverProcess?: ProcessFootprint;
  loadGenerator: {
    workers: number;
    /** the busiest worker's CPU time over the wall time of the run (1 = one core flat out) */
    busiestWorkerCpu: number;
    /**
     * The load workers' CPU per message received, as the server's: their work per message is the
     * same whatever the server, so a change in it between runs is the machine (other processes,
     * contention for the cores), not the server.
     */
    cpuUsPerMessage?: number;
    /** true when a worker was near a full core or an open-loop run fell behind its schedule */
    saturated: boolean;
    note?: string;
  };
}

/** Same scenario and options, several runs per server, alternating servers. */
export interface Comparison {
  /** short name of the variant, e.g. "QoS 0, 1 → 1" */
  label: string;
  scenario: ScenarioName;
  /** the command for one Junction run; peers differ only in `--server` */
  command: string;
  /** goal from issue 8 this comparison reports against, in words, with its verdict */
  goal?: { text: string; met: boolean | null; detail: string };
  runs: BenchResult[];
  /** per server: the median of each figure over its runs */
  medians: Record<string, ServerMedians>;
  /** per peer: Junction's median throughput divided by the peer's */
  ratios: Record<string, number>;
  /** per peer: Junction's median server CPU per message divided by the peer's (lower is better) */
  cpuRatios: Record<string, number>;
}

export interface ServerMedians {
  runs: number;
  receivedPerS: number;
  sentPerS: number;
  p50: number;
  p99: number;
  p999: number;
  peakRssBytes: number | null;
  rssPerConnectionBytes: number | null;
  /** server CPU µs per message received (BenchResult.cpuUsPerMessage) */
  cpuUsPerMessage: number | null;
  lost: number;
  errors: number;
  /** connection figures, null when the runs held no connections of their own */
  connected: number | null;
  wanted: number | null;
  dropped: number | null;
}

export interface ComparisonFile {
  generatedAt: string;
  machine: MachineInfo;
  /** the command that regenerated this file */
  command: string;
  comparisons: Comparison[];
}
