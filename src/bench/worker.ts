/**
 * One load-generator process: opens its share of the connections from its own loopback source
 * address, sends on the parent's clock, stamps every payload, records latency in HDR histograms
 * and reports counts. The parent (run.ts) forks as many as `--workers` asks, so the clients of a
 * large run spread over cores and over the open-files limit of one process.
 */
import { LatencyHistogram } from './histogram.js';
import { driverFor } from './drivers/index.js';
import type { Closable, ConnectionContext, PublisherConnection } from './drivers/driver.js';
import type { PublisherPlan, SubscriberPlan } from './scenarios.js';
import { nowUs, paddingFor, stampedPayload } from './stamp.js';
import type { BenchProtocol, ScenarioName, ServerKind, ServerPorts } from './types.js';

export interface WorkerPlan {
  scenario: ScenarioName;
  index: number;
  localAddress: string;
  server: ServerKind;
  host: string;
  ports: ServerPorts;
  publishers: PublisherPlan[];
  subscribers: SubscriberPlan[];
  idle: { protocol: BenchProtocol; count: number } | undefined;
  payload: number;
  qos: 0 | 1;
  priorities: number[];
  keepalive: number;
  /** the server's CA certificate (PEM) when the run is over TLS */
  tlsCa: string | undefined;
  /** MQTT subscribers keep persistent sessions */
  persistent: boolean;
}

/** When to send, on the machine-wide clock (µs): the same for every worker. */
export interface WorkerClock {
  startUs: number;
  measureFromUs: number;
  stopAtUs: number;
}

export interface WorkerCounts {
  connected: number;
  failed: number;
  dropped: number;
  sent: number;
  /** sends the server accepted (acked, or written for QoS 0), per key: what subscribers should get */
  acceptedByKey: Record<string, number>;
  received: number;
  errors: number;
}

export type ParentMessage =
  | { type: 'plan'; plan: WorkerPlan }
  | { type: 'go'; clock: WorkerClock }
  | { type: 'stop' };

export type WorkerMessage =
  | { type: 'connected'; counts: WorkerCounts; error?: string }
  | { type: 'progress'; counts: WorkerCounts; sending: boolean }
  | { type: 'result'; result: WorkerResult };

export interface WorkerResult {
  counts: WorkerCounts;
  sentMeasured: number;
  /** the same, per key: mixed runs have one key per publishing protocol */
  sentMeasuredByKey: Record<string, number>;
  receivedMeasured: number;
  errorSamples: string[];
  delivery: string;
  ack: string;
  lastSendUs: number;
  lastReceiveUs: number;
  cpuSeconds: number;
  wallSeconds: number;
  /** open loop: messages that went later than scheduled because the window of unacked ones was full */
  behindSchedule: number;
}

/** Open-loop senders stop sending (and fall behind schedule) past this many unacknowledged. */
const MAX_OUTSTANDING = 10_000;
/** Connection attempts at once per worker: below the server's listen backlog. */
const CONNECT_CONCURRENCY = 100;

const counts: WorkerCounts = { connected: 0, failed: 0, dropped: 0, sent: 0, acceptedByKey: {}, received: 0, errors: 0 };
const delivery = new LatencyHistogram();
const ack = new LatencyHistogram();
const errorSamples = new Set<string>();
const connections: Closable[] = [];
let sentMeasured = 0;
const sentMeasuredByKey: Record<string, number> = {};
let receivedMeasured = 0;
let lastSendUs = 0;
let lastReceiveUs = 0;
let behindSchedule = 0;
let measureFromUs = Number.MAX_SAFE_INTEGER;
let sending = false;
let cpuAtGo = process.cpuUsage();
let wallAtGo = nowUs();

function send(message: WorkerMessage): void {
  process.send!(message);
}

function noteError(error: string): void {
  counts.errors++;
  if (errorSamples.size < 5) errorSamples.add(error);
}

function context(plan: WorkerPlan, n: number, inflight = 1): ConnectionContext {
  return {
    inflight,
    scenario: plan.scenario, server: plan.server, host: plan.host, ports: plan.ports, localAddress: plan.localAddress,
    clientId: `bench-${process.pid}-${plan.index}-${n}`, qos: plan.qos, keepaliveS: plan.keepalive, tlsCa: plan.tlsCa, persistent: plan.persistent,
    onDrop: (reason) => {
      counts.dropped++;
      if (errorSamples.size < 5) errorSamples.add(`dropped: ${reason}`);
    },
  };
}

/** Runs `open` for 0..n-1 with a bounded number at once; failures are counted, not thrown. */
async function openAll<T>(n: number, open: (i: number) => Promise<T>, opened: (value: T) => void): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < n) {
      const i = next++;
      try {
        opened(await open(i));
        counts.connected++;
      } catch (err) {
        counts.failed++;
        if (errorSamples.size < 5) errorSamples.add(`connect: ${(err as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(CONNECT_CONCURRENCY, n) }, lane));
}

function onDelivery(stampUs: number): void {
  counts.received++;
  if (stampUs < 0) return noteError('delivery without a send stamp');
  const now = nowUs();
  lastReceiveUs = now;
  if (stampUs >= measureFromUs) {
    receivedMeasured++;
    delivery.record(now - stampUs);
  }
}

/** One publisher's send loop: on a fixed schedule (open loop) or `inflight` at a time (closed loop). */
class PublisherRun {
  #k = 0;
  #outstanding = 0;
  #filling = false;
  readonly #padding: string;

  constructor(
    readonly plan: PublisherPlan,
    readonly connection: PublisherConnection,
    readonly worker: WorkerPlan,
    readonly clock: WorkerClock,
    readonly onIdle: () => void,
  ) {
    this.#padding = paddingFor(worker.payload);
  }

  get finished(): boolean {
    return this.#outstanding === 0 && (this.#k >= this.plan.count || nowUs() >= this.clock.stopAtUs);
  }

  #send(stampUs: number): void {
    const priorities = this.worker.priorities;
    const priority = priorities[this.#k % priorities.length]!;
    this.#k++;
    this.#outstanding++;
    counts.sent++;
    const key = this.plan.key;
    if (stampUs >= this.clock.measureFromUs) {
      sentMeasured++;
      sentMeasuredByKey[key] = (sentMeasuredByKey[key] ?? 0) + 1;
    }
    lastSendUs = nowUs();
    this.connection.publish(key, stampedPayload(stampUs, this.worker.payload, this.#padding), priority, (error) => {
      this.#outstanding--;
      if (error === undefined) {
        counts.acceptedByKey[key] = (counts.acceptedByKey[key] ?? 0) + 1;
        if (stampUs >= this.clock.measureFromUs) ack.record(nowUs() - stampUs);
      } else {
        noteError(error);
      }
      if (this.plan.rate === undefined) this.fill();
      else if (this.finished) this.onIdle();
    });
  }

  /** Closed loop: top the window up. */
  fill(): void {
    if (this.#filling) return;
    this.#filling = true;
    while (this.#outstanding < this.plan.inflight && this.#k < this.plan.count && nowUs() < this.clock.stopAtUs) this.#send(nowUs());
    this.#filling = false;
    if (this.finished) this.onIdle();
  }

  /** Open loop: send whatever the schedule says is due, stamped with when it was due. */
  tick(now: number): void {
    const intervalUs = 1_000_000 / this.plan.rate!;
    const due = Math.min(this.plan.count, Math.floor((Math.min(now, this.clock.stopAtUs) - this.clock.startUs) / intervalUs) + 1);
    while (this.#k < due) {
      if (this.#outstanding >= MAX_OUTSTANDING) {
        behindSchedule += due - this.#k;
        return;
      }
      this.#send(Math.round(this.clock.startUs + this.#k * intervalUs));
    }
  }
}

async function connect(plan: WorkerPlan, publishers: PublisherConnection[]): Promise<void> {
  let n = 0;
  await openAll(plan.subscribers.length, (i) => {
    const subscriber = plan.subscribers[i]!;
    return driverFor(subscriber.protocol).subscriber(context(plan, n++), subscriber.key, onDelivery);
  }, (c) => connections.push(c));
  if (plan.idle) {
    const driver = driverFor(plan.idle.protocol);
    await openAll(plan.idle.count, () => driver.idle(context(plan, n++)), (c) => connections.push(c));
  }
  const opened: PublisherConnection[] = new Array(plan.publishers.length);
  await openAll(plan.publishers.length, async (i) => {
    const publisher = plan.publishers[i]!;
    opened[i] = await driverFor(publisher.protocol).publisher(context(plan, n++, publisher.inflight));
    return opened[i];
  }, (c) => connections.push(c));
  publishers.push(...opened);
}

function go(plan: WorkerPlan, publishers: PublisherConnection[], clock: WorkerClock): void {
  measureFromUs = clock.measureFromUs;
  cpuAtGo = process.cpuUsage();
  wallAtGo = nowUs();
  const runs: PublisherRun[] = [];
  const onIdle = () => {
    if (sending && runs.every((run) => run.finished)) {
      sending = false;
      send({ type: 'progress', counts, sending });
    }
  };
  plan.publishers.forEach((p, i) => { if (publishers[i]) runs.push(new PublisherRun(p, publishers[i]!, plan, clock, onIdle)); });
  sending = runs.length > 0;
  const closed = runs.filter((run) => run.plan.rate === undefined);
  const open = runs.filter((run) => run.plan.rate !== undefined);
  // Timers may fire a little early; nothing is sent before the shared start, or it would fall before
  // the measured window.
  const begin = () => {
    const left = clock.startUs - nowUs();
    if (left > 0) return void setTimeout(begin, Math.ceil(left / 1000));
    for (const run of closed) run.fill();
    if (open.length === 0) return;
    // A 1 ms tick: timers cannot do finer, and each tick sends everything that fell due.
    const tick = () => {
      const now = nowUs();
      for (const run of open) run.tick(now);
      if (now < clock.stopAtUs && !open.every((run) => run.finished)) setTimeout(tick, 1);
      else onIdle();
    };
    tick();
  };
  begin();
  const progress = setInterval(() => send({ type: 'progress', counts, sending }), 250);
  progress.unref();
}

async function stop(): Promise<void> {
  const cpu = process.cpuUsage(cpuAtGo);
  send({
    type: 'result',
    result: {
      counts, sentMeasured, sentMeasuredByKey, receivedMeasured, errorSamples: [...errorSamples],
      delivery: delivery.encode(), ack: ack.encode(), lastSendUs, lastReceiveUs,
      cpuSeconds: (cpu.user + cpu.system) / 1e6, wallSeconds: (nowUs() - wallAtGo) / 1e6, behindSchedule,
    },
  });
  await Promise.race([
    Promise.allSettled(connections.map((c) => c.close())),
    new Promise((resolve) => setTimeout(resolve, 5000)),
  ]);
  process.exit(0);
}

let plan: WorkerPlan | undefined;
const publishers: PublisherConnection[] = [];
process.on('message', (message: ParentMessage) => {
  if (message.type === 'plan') {
    plan = message.plan;
    connect(plan, publishers).then(
      () => send({ type: 'connected', counts }),
      (err: Error) => send({ type: 'connected', counts, error: err.message }),
    );
  } else if (message.type === 'go') {
    go(plan!, publishers, message.clock);
  } else {
    void stop();
  }
});
// The parent going away ends the worker: a load generator must never keep sending on its own.
process.on('disconnect', () => process.exit(1));
// The parent ends workers still closing their connections with SIGTERM; exiting through Node
// rather than by the signal writes the CPU profile of a profiled worker.
process.on('SIGTERM', () => process.exit(143));
