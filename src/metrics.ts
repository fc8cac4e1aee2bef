import { Counter, Gauge, Registry, collectDefaultMetrics, type Metric } from 'prom-client';
import type { TargetLane } from './delivery/target-lane.js';
import type { AdapterStats, SlowConsumerCounts } from './adapter.js';
import type { DeadLetterUsage } from './deadletter/store.js';
import type { GroupStats } from './groups/group-manager.js';
import type { Protocol } from './message.js';
import { LatencyWindow } from './latency-window.js';
import type { SecurityStats } from './gateway.js';
import type { RecoveryReport, SyncPolicy } from './queue/index.js';

/** The queue store as the metrics and /admin/stats show it. */
export interface StorageStats {
  dir: string;
  sync: SyncPolicy;
  /** per running target: records in the store (ready and held), held ones, bytes of the ready ones */
  queues: ReadonlyMap<string, { records: number; held: number; bytes: number }>;
  /** bytes of the segment files, and of the unsettled records in them (disk policies) */
  files?: { total: number; live: number };
  /** what this start found, and what became of records of targets no longer configured */
  recovery: RecoveryReport & { noTarget: number; kept: number };
  /** writes with no sender to tell that failed (attempts, settlements, compaction) */
  errors: number;
}

/** What the metrics read at scrape time; nothing here is touched per message. */
export interface MetricsSource {
  lanes(): ReadonlyMap<string, TargetLane>;
  connections(): Partial<Record<Protocol, number>>;
  limiterRejections(): Record<string, number>;
  reloads(): { ok: number; unchanged: number; refused: number };
  subscriptions(): number;
  adapters(): ReadonlyMap<Protocol, AdapterStats>;
  groups(): GroupStats[];
  /** groups without members closed early to make room for a new one (groups.maxGroups) */
  groupsEvicted(): number;
  security(): SecurityStats;
  storage(): StorageStats;
  deadletter(): DeadLetterUsage;
}

/** Per-message events, recorded into plain maps on the hot path and exported at scrape time. */
export interface DispatchObserver {
  received(protocol: Protocol, route: string): void;
  accepted(protocol: Protocol, seconds: number): void;
  deadLettered(target: string, reason: string): void;
}

/**
 * A count by two label values without prom-client's per-call label hashing, and without building
 * a key string per message: two small maps.
 */
class Tally {
  readonly #counts = new Map<string, Map<string, number>>();
  add(first: string, second: string): void {
    let inner = this.#counts.get(first);
    if (!inner) {
      inner = new Map();
      this.#counts.set(first, inner);
    }
    inner.set(second, (inner.get(second) ?? 0) + 1);
  }
  *entries(): IterableIterator<[string, string, number]> {
    for (const [first, inner] of this.#counts) for (const [second, n] of inner) yield [first, second, n];
  }
}

/** One label set of a BucketHistogram: counts per bucket (not cumulative), the last one +Inf. */
interface HistogramSeries {
  labels: Record<string, string>;
  counts: Float64Array;
  sum: number;
}

interface HistogramValue {
  labels: Record<string, string | number>;
  value: number;
  metricName: string;
}

interface HistogramData {
  name: string;
  help: string;
  type: 'histogram';
  aggregator: 'sum';
  values: HistogramValue[];
}

/**
 * A Prometheus histogram whose observation is a bucket search and two additions. prom-client's
 * Histogram.observe walks every bucket and hashes labels on each call, which showed as 2 % of
 * the gateway's CPU under MQTT load (it runs for every message). The registry formats this one
 * at scrape time like any prom-client metric (it reads `name`, `help`, `type` and `get()`).
 */
class BucketHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly #series: HistogramSeries[] = [];

  constructor(readonly name: string, readonly help: string, readonly buckets: readonly number[], registers: Registry[]) {
    for (const registry of registers) registry.registerMetric(this as unknown as Metric);
  }

  /** The recorder for one label set; callers keep it, so no label lookup happens per observation. */
  series(labels: Record<string, string>): (value: number) => void {
    const series: HistogramSeries = { labels, counts: new Float64Array(this.buckets.length + 1), sum: 0 };
    this.#series.push(series);
    const buckets = this.buckets;
    return (value) => {
      let i = 0;
      while (i < buckets.length && value > buckets[i]!) i++;
      series.counts[i]!++;
      series.sum += value;
    };
  }

  get(): HistogramData {
    const values: HistogramValue[] = [];
    for (const { labels, counts, sum } of this.#series) {
      let cumulative = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        cumulative += counts[i]!;
        values.push({ labels: { ...labels, le: i < this.buckets.length ? this.buckets[i]! : '+Inf' }, value: cumulative, metricName: `${this.name}_bucket` });
      }
      values.push({ labels, value: sum, metricName: `${this.name}_sum` }, { labels, value: cumulative, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}

/** Latency buckets in seconds, from 100 µs to 10 s. */
const LATENCY_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const BREAKER_STATES = ['closed', 'half_open', 'open'] as const;
/** How far back the dashboard's latency percentiles look. */
const RECENT_SECONDS = 10;

/**
 * The gateway's Prometheus metrics, in a registry of its own (several gateways can live in one
 * process, as in tests). Labels are bounded: protocol, route name, target name, error code,
 * reason, scope — never a client id or a key.
 */
export class GatewayMetrics implements DispatchObserver {
  readonly registry = new Registry();
  readonly #received = new Tally();
  readonly #rejected = new Tally();
  readonly #deadLettered = new Tally();
  readonly #accepted: BucketHistogram;
  readonly #acceptedByProtocol = new Map<string, (seconds: number) => void>();
  readonly #calls: BucketHistogram;
  /** per target: [error, ok] recorders, so the outcome label is not looked up per call */
  readonly #callsByTarget = new Map<string, ((seconds: number) => void)[]>();

  constructor(source: MetricsSource) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'junction_' });
    const tallied = (name: string, help: string, labelNames: string[], tally: Tally) => new Counter({
      name, help, labelNames, registers,
      collect() {
        this.reset();
        for (const [first, second, n] of tally.entries()) this.inc({ [labelNames[0]!]: first, [labelNames[1]!]: second }, n);
      },
    });
    tallied('junction_messages_received_total', 'Messages routed, by ingress protocol and winning rule ("default" when none matched)', ['protocol', 'route'], this.#received);
    tallied('junction_rejections_total', 'Messages refused to their sender, by error code and protocol', ['code', 'protocol'], this.#rejected);
    tallied('junction_dead_lettered_total', 'Messages written to the dead-letter store, by the target that gave up and the reason', ['target', 'reason'], this.#deadLettered);

    const perTarget = (name: string, help: string, pick: (lane: TargetLane) => number, kind: 'counter' | 'gauge') => {
      const options = {
        name, help, labelNames: ['target'] as const, registers,
        collect(this: Counter<'target'> | Gauge<'target'>) {
          this.reset();
          for (const [target, lane] of source.lanes()) {
            const value = pick(lane);
            if (this instanceof Counter) this.inc({ target }, value);
            else this.set({ target }, value);
          }
        },
      };
      return kind === 'counter' ? new Counter(options) : new Gauge(options);
    };
    perTarget('junction_target_accepted_total', 'Messages a target accepted into its queue', (l) => l.stats.accepted, 'counter');
    perTarget('junction_target_delivered_total', 'Messages a target delivered', (l) => l.stats.delivered, 'counter');
    perTarget('junction_target_rerouted_total', 'Messages a target gave up on that a fallback target took', (l) => l.stats.rerouted, 'counter');
    perTarget('junction_target_expired_total', 'Messages that expired while queued for a target', (l) => l.stats.expired, 'counter');
    perTarget('junction_target_shed_total', 'Queued messages evicted for higher-priority ones', (l) => l.stats.shed, 'counter');
    perTarget('junction_target_retries_total', 'Calls retried after a retryable failure', (l) => l.stats.retries, 'counter');
    perTarget('junction_target_queue_depth', 'Messages waiting in a target queue', (l) => l.stats.queued, 'gauge');
    perTarget('junction_target_in_flight', 'Messages being delivered, waiting to retry or being settled', (l) => l.stats.inFlight, 'gauge');

    new Gauge({
      name: 'junction_breaker_state', help: 'Circuit breaker state per target: 1 for the current state, 0 for the others', labelNames: ['target', 'state'], registers,
      collect() {
        this.reset();
        for (const [target, lane] of source.lanes()) {
          const current = lane.breaker?.state;
          if (current === undefined) continue;
          for (const state of BREAKER_STATES) this.set({ target, state }, state === current ? 1 : 0);
        }
      },
    });
    new Gauge({
      name: 'junction_connections', help: 'Open client connections by protocol (SSE streams count as http)', labelNames: ['protocol'], registers,
      collect() {
        this.reset();
        for (const [protocol, n] of Object.entries(source.connections())) this.set({ protocol }, n ?? 0);
      },
    });
    new Gauge({
      name: 'junction_subscriptions', help: 'Subscriptions on the in-process bus', registers,
      collect() { this.set(source.subscriptions()); },
    });
    new Counter({
      name: 'junction_adapter_events_total', help: 'What each protocol adapter counts beyond refusals (drops, slow consumers closed, limits hit), by event; docs/<protocol>.md lists them', labelNames: ['protocol', 'event'], registers,
      collect() {
        this.reset();
        for (const [protocol, stats] of source.adapters()) {
          for (const [event, n] of Object.entries(stats.counters)) this.inc({ protocol, event }, n);
        }
      },
    });
    const perProtocolSlowConsumers = (name: string, help: string, pick: (counts: SlowConsumerCounts) => number) => new Counter({
      name, help, labelNames: ['protocol'], registers,
      collect() {
        this.reset();
        for (const [protocol, stats] of source.adapters()) {
          if (stats.slowConsumers) this.inc({ protocol }, pick(stats.slowConsumers));
        }
      },
    });
    perProtocolSlowConsumers('junction_subscriber_shed_total', 'qos 0 deliveries dropped because their subscriber was too far behind, by protocol', (c) => c.shed);
    perProtocolSlowConsumers('junction_subscriber_disconnects_total', 'Subscribers disconnected for not draining their buffer in time, by protocol', (c) => c.disconnected);
    new Gauge({
      name: 'junction_adapter_level', help: 'Levels each protocol adapter reports (e.g. the largest outbound backlog), by name', labelNames: ['protocol', 'name'], registers,
      collect() {
        this.reset();
        for (const [protocol, stats] of source.adapters()) {
          for (const [name, n] of Object.entries(stats.gauges ?? {})) this.set({ protocol, name }, n);
        }
      },
    });
    const perGroup = (name: string, help: string, pick: (group: GroupStats) => number, kind: 'counter' | 'gauge') => {
      const options = {
        name, help, labelNames: ['group', 'pattern'] as const, registers,
        collect(this: Counter<'group' | 'pattern'> | Gauge<'group' | 'pattern'>) {
          this.reset();
          for (const group of source.groups()) {
            const labels = { group: group.name, pattern: group.pattern };
            if (this instanceof Counter) this.inc(labels, pick(group));
            else this.set(labels, pick(group));
          }
        },
      };
      return kind === 'counter' ? new Counter(options) : new Gauge(options);
    };
    perGroup('junction_group_members', 'Members of a group of competing consumers', (g) => g.members, 'gauge');
    perGroup('junction_group_queued', 'Messages waiting in a group for a member with room', (g) => g.queued, 'gauge');
    perGroup('junction_group_queued_bytes', 'Bytes of the messages waiting in a group, as groups.maxQueuedBytes counts them', (g) => g.queuedBytes, 'gauge');
    perGroup('junction_group_in_flight', 'Group deliveries members have not acknowledged yet', (g) => g.inFlight, 'gauge');
    perGroup('junction_group_delivered_total', 'Group deliveries members acknowledged', (g) => g.delivered, 'counter');
    perGroup('junction_group_redelivered_total', 'Group deliveries handed to another member (the first went away, refused or timed out)', (g) => g.redelivered, 'counter');
    perGroup('junction_group_dead_lettered_total', 'Group messages shed from a full queue or held when the group closed', (g) => g.deadLettered, 'counter');
    perGroup('junction_group_expired_total', 'Group messages that expired while waiting for a member', (g) => g.expired, 'counter');
    new Counter({
      name: 'junction_groups_evicted_total', help: 'Groups without members closed before groups.retention ended, to make room for a new group (groups.maxGroups)', registers,
      collect() {
        this.reset();
        this.inc(source.groupsEvicted());
      },
    });
    new Counter({
      name: 'junction_limiter_rejections_total', help: 'Messages refused by a token bucket, by scope', labelNames: ['scope'], registers,
      collect() {
        this.reset();
        for (const [scope, n] of Object.entries(source.limiterRejections())) this.inc({ scope }, n);
      },
    });
    new Counter({
      name: 'junction_reloads_total', help: 'Config reloads by outcome', labelNames: ['outcome'], registers,
      collect() {
        this.reset();
        const { ok, unchanged, refused } = source.reloads();
        this.inc({ outcome: 'ok' }, ok);
        this.inc({ outcome: 'unchanged' }, unchanged);
        this.inc({ outcome: 'refused' }, refused);
      },
    });
    new Counter({
      name: 'junction_admission_refusals_total', help: 'Connections closed at accept by a listener limit (connections, connections_per_ip, connect_rate)', labelNames: ['listener', 'limit'], registers,
      collect() {
        this.reset();
        for (const [listener, limits] of Object.entries(source.security().admission)) {
          for (const [limit, n] of Object.entries(limits)) this.inc({ listener, limit }, n);
        }
      },
    });
    new Counter({
      name: 'junction_request_timeouts_total',
      help: 'Connections closed because one of listeners.<name>.timeouts ran out: request (HTTP, answered 408: head or body late), keepAlive (HTTP, no next request), idle (gRPC, no call)',
      labelNames: ['listener', 'timeout'], registers,
      collect() {
        this.reset();
        for (const [listener, counts] of Object.entries(source.security().requestTimeouts)) {
          for (const [timeout, n] of Object.entries(counts)) this.inc({ listener, timeout }, n);
        }
      },
    });
    new Counter({
      name: 'junction_auth_refusals_total', help: 'Credential checks refused before hashing: backed_off (the address failed too often), per_ip_queue_full, queue_full', labelNames: ['reason'], registers,
      collect() {
        this.reset();
        const { backedOff, perIpQueueFull, queueFull } = source.security().guard;
        this.inc({ reason: 'backed_off' }, backedOff);
        this.inc({ reason: 'per_ip_queue_full' }, perIpQueueFull);
        this.inc({ reason: 'queue_full' }, queueFull);
      },
    });
    new Gauge({
      name: 'junction_auth_backoff_addresses', help: 'Remote addresses whose failed credential checks are remembered (bounded)', registers,
      collect() { this.set(source.security().guard.trackedAddresses); },
    });
    new Gauge({
      name: 'junction_auth_checks_pending', help: 'Password and API key checks waiting for a verification slot', registers,
      collect() { this.set(source.security().guard.pendingChecks); },
    });
    new Counter({
      name: 'junction_tls_handshake_failures_total', help: 'TLS handshakes that failed, by listener and reason (plaintext, old_version, client_certificate, timeout, aborted, other)', labelNames: ['listener', 'reason'], registers,
      collect() {
        this.reset();
        for (const [listener, reasons] of Object.entries(source.security().tlsHandshakeFailures)) {
          for (const [reason, n] of Object.entries(reasons)) this.inc({ listener, reason }, n);
        }
      },
    });
    this.#storeMetrics(source, registers);
    this.#accepted = new BucketHistogram('junction_ingress_ack_seconds', 'From a message entering the router to its acceptance (the ack), by protocol', LATENCY_BUCKETS, registers);
    this.#calls = new BucketHistogram('junction_target_call_seconds', 'Duration of calls to a target, by outcome', LATENCY_BUCKETS, registers);
  }

  /** Latencies of the last 10 s, for the dashboard: percentiles from HDR histograms rather than bucket bounds. */
  readonly recent = { ingress: new LatencyWindow(RECENT_SECONDS), targets: new LatencyWindow(RECENT_SECONDS) };
  /** The queue store's and the dead-letter store's figures, read at scrape time. */
  #storeMetrics(source: MetricsSource, registers: Registry[]): void {
    const perQueue = (name: string, help: string, pick: (queue: { records: number; bytes: number }) => number) => new Gauge({
      name, help, labelNames: ['target'], registers,
      collect() {
        this.reset();
        for (const [target, queue] of source.storage().queues) this.set({ target }, pick(queue));
      },
    });
    perQueue('junction_queue_store_records', 'Records of a target in the queue store: waiting, and taken but not settled', (q) => q.records);
    perQueue('junction_queue_store_bytes', 'Bytes of the records waiting in a target\'s queue, as queue.maxBytes counts them', (q) => q.bytes);
    new Gauge({
      name: 'junction_queue_store_file_bytes', help: 'Bytes of the queue store\'s segment files (total), and of the unsettled records in them (live)', labelNames: ['kind'], registers,
      collect() {
        this.reset();
        const files = source.storage().files;
        if (!files) return;
        this.set({ kind: 'total' }, files.total);
        this.set({ kind: 'live' }, files.live);
      },
    });
    new Gauge({
      name: 'junction_queue_store_info', help: 'The queue store\'s sync policy (storage.sync): 1 for the one in use', labelNames: ['sync'], registers,
      collect() {
        this.reset();
        this.set({ sync: source.storage().sync }, 1);
      },
    });
    new Gauge({
      name: 'junction_queue_recovery_records', help: 'What the queue store found at this start: records put back (recovered), damaged records skipped (corrupt, torn), records of targets no longer configured, dead-lettered (no_target) or kept for lack of dead-letter room (kept)', labelNames: ['outcome'], registers,
      collect() {
        this.reset();
        const { records, corrupt, torn, noTarget, kept } = source.storage().recovery;
        this.set({ outcome: 'recovered' }, records);
        this.set({ outcome: 'corrupt' }, corrupt);
        this.set({ outcome: 'torn' }, torn);
        this.set({ outcome: 'no_target' }, noTarget);
        this.set({ outcome: 'kept' }, kept);
      },
    });
    new Gauge({
      name: 'junction_queue_recovery_seconds', help: 'Time the queue store took to read its segments at this start', registers,
      collect() { this.set(source.storage().recovery.durationMs / 1000); },
    });
    new Counter({
      name: 'junction_queue_store_errors_total', help: 'Queue store writes that failed with no sender to tell (attempt counts, settlements, compaction)', registers,
      collect() {
        this.reset();
        this.inc(source.storage().errors);
      },
    });
    new Gauge({
      name: 'junction_deadletter_bytes', help: 'Bytes of the dead-letter file and its rotated predecessors', registers,
      collect() { this.set(source.deadletter().bytes); },
    });
    new Gauge({
      name: 'junction_deadletter_max_bytes', help: 'deadletter.maxBytes: the bound on the dead-letter files', registers,
      collect() { this.set(source.deadletter().maxBytes); },
    });
    new Counter({
      name: 'junction_deadletter_refused_total', help: 'Dead letters refused at deadletter.maxBytes (whenFull: refuse)', registers,
      collect() {
        this.reset();
        this.inc(source.deadletter().refused);
      },
    });
    new Counter({
      name: 'junction_deadletter_dropped_total', help: 'Dead-letter records deleted with the oldest file at deadletter.maxBytes (whenFull: dropOldest)', registers,
      collect() {
        this.reset();
        this.inc(source.deadletter().dropped);
      },
    });
  }

  received(protocol: Protocol, route: string): void {
    this.#received.add(protocol, route);
  }

  rejected(protocol: Protocol, code: string): void {
    this.#rejected.add(code, protocol);
  }

  accepted(protocol: Protocol, seconds: number): void {
    let observe = this.#acceptedByProtocol.get(protocol);
    if (!observe) {
      observe = this.#accepted.series({ protocol });
      this.#acceptedByProtocol.set(protocol, observe);
    }
    observe(seconds);
    this.recent.ingress.record(protocol, seconds);
  }

  deadLettered(target: string, reason: string): void {
    this.#deadLettered.add(target, reason);
  }

  called(target: string, ok: boolean, seconds: number): void {
    let children = this.#callsByTarget.get(target);
    if (!children) {
      children = [this.#calls.series({ target, outcome: 'error' }), this.#calls.series({ target, outcome: 'ok' })];
      this.#callsByTarget.set(target, children);
    }
    children[ok ? 1 : 0]!(seconds);
    this.recent.targets.record(target, seconds);
  }

  /** dead-lettered messages by target, then reason */
  deadLetters(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [target, reason, n] of this.#deadLettered.entries()) (out[target] ??= {})[reason] = n;
    return out;
  }

  /** refusals by protocol, then code */
  rejections(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const [code, protocol, n] of this.#rejected.entries()) (out[protocol] ??= {})[code] = n;
    return out;
  }

  /** totals for the dashboard's rates: received by protocol and by rule, rejected by protocol */
  totals(): { received: Record<string, number>; routes: Record<string, number>; rejected: Record<string, number> } {
    const sum = (tally: Tally, field: 0 | 1) => {
      const out: Record<string, number> = {};
      for (const entry of tally.entries()) {
        const label = entry[field];
        out[label] = (out[label] ?? 0) + entry[2];
      }
      return out;
    };
    return { received: sum(this.#received, 0), routes: sum(this.#received, 1), rejected: sum(this.#rejected, 1) };
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
