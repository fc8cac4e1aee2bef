import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { hostname } from 'node:os';
import type { Server as TlsServer } from 'node:tls';
import Fastify, { type FastifyInstance, type FastifyPluginCallback, type FastifyReply, type FastifyRequest } from 'fastify';
import fastifyWebsocket from '@fastify/websocket';
import { watch, type FSWatcher } from 'chokidar';
import type { Adapter, AdapterContext, AdapterStats, ConnectionInfo, HttpMount, ProtocolRegistration, WebSocketServerNeeds } from './adapter.js';
import { AccessControl, AuthGuard } from './auth/index.js';
import type { GuardCounters } from './auth/guard.js';
import { Admission, type AdmissionLimit } from './admission.js';
import { bindListener, httpTimeouts, TimeoutCounts, type CountedTimeout } from './listener.js';
import { ListenerTls } from './tls/listener-tls.js';
import { LocalBus, type Bus } from './bus/index.js';
import { GroupManager } from './groups/group-manager.js';
import { loadConfigFile } from './config/load.js';
import { clientListener, type ConfigIssue, type GatewayConfig } from './config/types.js';
import { ConfigError, formatIssue } from './config/types.js';
import { DEAD_LETTER_FULL_ALERT, DeadLetterStore, type DeadLetterSink, type DeadLetterUsage, type FillLevel } from './deadletter/store.js';
import { DeadLetterArchive, messageOf, type DeadLetterFilter, type DeadLetterReader } from './deadletter/replay.js';
import { Dispatcher, type RoutingSnapshot } from './delivery/dispatcher.js';
import { TargetLane } from './delivery/target-lane.js';
import { DirectoryInUseError, DiskQueueStore, openQueueStore, type QueueStore } from './queue/index.js';
import { GatewayError, ListenerError, SetupError, type ListenerName } from './errors.js';
import type { Logger } from './log.js';
import { compileRouteTable } from './router/index.js';
import { builtins } from './builtins.js';
import type { Registry } from './registry.js';
import type { AdminListenerConfig, ListenerTimeouts, TargetSettings } from './config/schema.js';
import { startAdminServer } from './admin/server.js';
import { IngressLimiter } from './protection/ingress-limiter.js';
import type { RateBucket } from './protection/rate-bucket.js';
import type { BucketSpec } from './protection/token-bucket.js';
import { GatewayMetrics, type StorageStats } from './metrics.js';
import { startTracing } from './tracing.js';
import { settledBy } from './timeouts.js';
import { ThrottledLog } from './throttled-log.js';
import type { Message, Protocol } from './message.js';
import { clientErrorAnswer, problemResponse, sendProblem } from './problem.js';
import { MAX_KEY_BYTES } from './topic/rules.js';
import type { Cluster, NodeInfo } from './cluster/cluster.js';
import type { ClusterNode } from './cluster/node.js';
import { PACKAGE_VERSION } from './version.js';

/** A request an adapter answers before fastify's router (HttpMount.answerDirectly). */
interface DirectAnswer {
  method: string;
  prefix: string;
  answer: (request: IncomingMessage, response: ServerResponse) => void;
}

/**
 * The largest request line and headers the HTTP listener reads: a key of MAX_KEY_BYTES fully
 * percent-encoded (3 characters a byte) in the URL, plus Node's default 16 KiB for the rest.
 */
const HTTP_MAX_HEAD_BYTES = 3 * MAX_KEY_BYTES + 16 * 1024;

/** Retained messages a cluster node takes from Redis when it starts: a bound on the start's time and memory. */
const RETAINED_RESTORED_MAX = 100_000;

export interface GatewayOptions {
  logger: Logger;
  /** the protocols to run (one adapter each) and the target types to call; the config was loaded with it. Default: builtins */
  registry?: Registry;
  /** reload when the config file changes */
  watchConfig?: boolean;
  /** this process's number among `--workers N` (1…N), which its cluster node id carries */
  worker?: number;
}

/** One line of the dashboard's "last state changes". */
export interface StateChange {
  kind: 'breaker' | 'shedding' | 'reload';
  /** ms since epoch */
  at: number;
  target?: string;
  text: string;
}

export interface ReplayOutcome {
  replayed: { recordId: string; id: string; via: 'target' | 'router' }[];
  failed: { recordId: string; id: string; error: string }[];
}

/** What the front door counted (docs/security.md, Metrics). */
export interface SecurityStats {
  guard: GuardCounters & { trackedAddresses: number; pendingChecks: number };
  admission: Record<string, Record<AdmissionLimit, number>>;
  tlsHandshakeFailures: Record<string, Record<string, number>>;
  /** connections closed because a `listeners.<name>.timeouts` ran out, by listener and timeout */
  requestTimeouts: Partial<Record<ListenerName, Partial<Record<CountedTimeout, number>>>>;
}

export interface ReloadOutcome {
  ok: boolean;
  /** false when the file loads to the config in force: nothing was swapped and the version stays */
  changed: boolean;
  version: number;
  issues: ConfigIssue[];
}

interface RunningTarget {
  config: string;
  lane: TargetLane;
  /** the byte bound of its queue in the queue store */
  maxBytes: number;
}

/** A routing state built in full before it is put in force: nothing of it runs until committed. */
interface Plan {
  snapshot: RoutingSnapshot;
  targets: Map<string, RunningTarget>;
  /** lanes the plan creates, which start when it is committed */
  created: RunningTarget[];
  /** lanes of the running state that the plan replaces or drops */
  replaced: TargetLane[];
}

/** What the start found in the queue store beyond the store's own report. */
interface RecoveryOutcome {
  /** records of targets no longer configured, written to the dead-letter store */
  noTarget: number;
  /** such records the dead-letter store refused: they stay in the queue store for the next start */
  kept: number;
}

/**
 * The whole gateway: config, routing table, bus, targets, adapters and listeners, plus reload
 * and graceful shutdown.
 */
export class Gateway {
  readonly logger: Logger;
  readonly bus: Bus;
  readonly dispatcher: Dispatcher;
  /** the dead-letter files of this gateway, or the dead-letter stream of the cluster */
  readonly deadletter: DeadLetterSink;
  readonly #adapters = new Map<Protocol, Adapter>();
  /** opened in #start, before any lane exists */
  #store: QueueStore | undefined;
  #recovered: RecoveryOutcome = { noTarget: 0, kept: 0 };
  /** store writes that failed with no sender to tell (attempts, settlements, compaction) */
  readonly #storeErrors: ThrottledLog;
  /** per target, the lane that takes from its queue: the running one, or a retiring one still draining it */
  readonly #owners = new Map<string, TargetLane>();
  #config: GatewayConfig;
  #version = 1;
  readonly #registry: Registry;
  #targets = new Map<string, RunningTarget>();
  /** replaced lanes finishing what they had before a reload */
  readonly #retiring = new Set<TargetLane>();
  #http: FastifyInstance | undefined;
  #admin: FastifyInstance | undefined;
  /** authentication and ACL of the config in force */
  #access: AccessControl;
  /** back-off and the credential verification queue: they outlive reloads */
  readonly guard = new AuthGuard();
  /** connection limits at accept, on every listener */
  readonly admission: Admission;
  readonly #timeouts = new TimeoutCounts();
  /** certificates of the listeners that have TLS, renewed in place */
  readonly #tls = new Map<string, ListenerTls>();
  #tlsWatcher: FSWatcher | undefined;
  #watcher: FSWatcher | undefined;
  #ready = false;
  #draining = false;
  #stopped: Promise<void> | undefined;
  readonly reloads = { ok: 0, unchanged: 0, refused: 0 };
  /** the last state changes (breaker transitions, shedding, reloads), newest last, for the dashboard */
  readonly recentChanges: StateChange[] = [];
  readonly limiter: IngressLimiter;
  readonly groups: GroupManager;
  readonly metrics: GatewayMetrics;
  readonly archive: DeadLetterReader;
  #replays: Promise<unknown> = Promise.resolve();
  /** cluster mode (config `cluster`): this node, its Redis and the bus across nodes */
  readonly #cluster: Cluster | undefined;
  /** the cluster and this node's stores on Redis, closed last */
  readonly #node: ClusterNode | undefined;
  readonly #startedAt = Date.now();

  private constructor(config: GatewayConfig, options: GatewayOptions, node: ClusterNode | undefined) {
    this.#node = node;
    const cluster = node?.cluster;
    this.#cluster = cluster;
    const buckets = node?.stores.buckets;
    this.limiter = new IngressLimiter(buckets ? { shared: (route, spec) => buckets.bucket('route', route, spec) } : {});
    this.#config = config;
    this.logger = options.logger;
    this.#storeErrors = new ThrottledLog(this.logger, 'queue store write failed');
    this.#registry = options.registry ?? builtins;
    this.bus = cluster?.bus ?? new LocalBus((err, pattern) => this.logger.error({ err, pattern }, 'a bus subscriber failed on a delivery'));
    this.admission = new Admission(this.logger);
    this.#access = new AccessControl(config, { guard: this.guard, logger: this.logger });
    for (const [name, listener] of Object.entries(config.listeners)) {
      if (listener?.tls) this.#tls.set(name, new ListenerTls(name, listener.tls, listener.timeouts.handshake));
    }
    this.deadletter = node?.stores.deadletter ?? new DeadLetterStore({
      ...config.deadletter,
      // A dead letter settles a queued message, so it must be as durable as the queue was.
      fsync: config.storage.sync === 'fsync',
      onFill: (level, usage) => this.#deadLetterFill(level, usage),
    });
    this.archive = node?.stores.deadletter ?? new DeadLetterArchive(config.deadletter.path);
    this.metrics = new GatewayMetrics({
      lanes: () => this.lanes(),
      connections: () => this.connections(),
      limiterRejections: () => this.limiter.rejections,
      reloads: () => this.reloads,
      subscriptions: () => this.bus.subscriptionCount,
      adapters: () => this.adapterStats(),
      security: () => this.securityStats(),
      groups: () => this.groups.stats(),
      groupsEvicted: () => this.groups.evicted,
      storage: () => this.storageStats(),
      deadletter: () => this.deadletter.usage,
    });
    this.groups = new GroupManager({
      bus: this.bus,
      settings: () => this.#config.groups,
      deadLetter: async (entry) => {
        await this.deadletter.append(entry);
        this.metrics.deadLettered(entry.target, entry.reason);
      },
      logger: this.logger,
    });
    // Lanes come once the queue store is open (#start); until then nothing is dispatched.
    const table = compileRouteTable(config.routes, config.defaultRoute, this.#version);
    this.dispatcher = new Dispatcher({ table, lanes: new Map(), requestTimeoutMs: config.requests.timeout }, {
      bus: this.bus, deadletter: this.deadletter, logger: this.logger, limiter: this.limiter, observer: this.metrics,
      ...(cluster ? { cluster: { node: cluster.nodeId, answer: (node: string, message: Message) => cluster.answer(node, message) } } : {}),
    });
    cluster?.attach({
      report: () => ({ version: PACKAGE_VERSION, configVersion: this.#version, configHash: this.#configHash(), ready: this.ready, connections: this.connections() as Record<string, number> }),
      answer: (message) => {
        try {
          this.dispatcher.answer(message);
        } catch (err) {
          this.logger.debug({ err: (err as Error).message, key: message.key }, 'an answer from another node found no request waiting');
        }
      },
      reload: (from) => void this.reload(`cluster (node ${from})`),
    });
  }


  /** The config in force, less what differs between nodes by design (its file, the node id). */
  #configHash(): string {
    const { file: _file, cluster, ...shared } = this.#config;
    const common = cluster ? { ...shared, cluster: { ...cluster, nodeId: undefined } } : shared;
    return createHash('sha256').update(JSON.stringify(common)).digest('hex').slice(0, 12);
  }

  static async start(config: GatewayConfig, options: GatewayOptions): Promise<Gateway> {
    await startTracing(options.logger);
    // Embedded mode loads no Redis code: the cluster modules come in only when configured.
    // The dead-letter stream opens before the gateway exists: its fill levels reach it once it does.
    const late: { fill?: (level: FillLevel, usage: DeadLetterUsage) => void } = {};
    const node = config.cluster
      ? await (await import('./cluster/node.js')).openClusterNode({ ...config, cluster: config.cluster }, options.logger, options.worker, (level, usage) => late.fill?.(level, usage))
      : undefined;
    let gateway: Gateway;
    try {
      gateway = new Gateway(config, options, node);
    } catch (err) {
      await node?.close();
      throw err;
    }
    late.fill = (level, usage) => gateway.#deadLetterFill(level, usage);
    try {
      await gateway.#start(options);
    } catch (err) {
      await gateway.stop().catch(() => undefined);
      throw err;
    }
    return gateway;
  }

  get version(): number {
    return this.#version;
  }

  get ready(): boolean {
    return this.#ready && !this.#draining && (this.#cluster?.available ?? true);
  }

  /** What /readyz and the dashboard say: why the gateway is not ready, when it is not. */
  get status(): 'ready' | 'draining' | 'starting' | 'redis_unreachable' {
    if (this.ready) return 'ready';
    if (this.#draining) return 'draining';
    return this.#ready ? 'redis_unreachable' : 'starting';
  }

  /** The nodes of the cluster as of the last heartbeat; just this one when embedded. */
  clusterNodes(): { mode: 'cluster' | 'embedded'; nodes: NodeInfo[] } {
    if (this.#cluster) return { mode: 'cluster', nodes: this.#cluster.nodes() };
    return {
      mode: 'embedded',
      nodes: [{
        id: hostname(), self: true, pid: process.pid, host: hostname(), version: PACKAGE_VERSION, configVersion: this.#version,
        configHash: this.#configHash(), ready: this.ready, connections: this.connections() as Record<string, number>, startedAt: this.#startedAt,
      }],
    };
  }

  get draining(): boolean {
    return this.#draining;
  }

  config(): GatewayConfig {
    return this.#config;
  }

  async #start(options: GatewayOptions): Promise<void> {
    const { listeners } = this.#config;
    const http = listeners.http ? this.#httpListener(listeners.http.timeouts) : undefined;
    // The admin listener comes up first, so /readyz can say "starting" while recovery runs and the rest binds.
    if (listeners.admin) {
      const admin = await startAdminServer(this, this.#tls.get('admin'), listeners.admin.timeouts);
      this.#admin = admin;
      await this.#listen('admin', admin, listeners.admin);
    }
    await this.#recover();
    for (const registration of this.#registry.protocols) {
      this.#adapters.set(registration.protocol, registration.create(this.#context(registration, http)));
    }
    for (const adapter of this.#adapters.values()) await adapter.register?.();
    if (this.#cluster) {
      const restored = await this.#cluster.bus.restoreRetained(RETAINED_RESTORED_MAX);
      if (restored > 0) this.logger.info({ restored }, 'retained messages of the cluster restored');
    }
    if (this.#http && listeners.http) {
      await this.#listen('http', this.#http, listeners.http);
    }
    for (const [protocol, adapter] of this.#adapters) {
      await adapter.start();
      const address = adapter.address?.();
      if (address) this.logger.info({ listener: protocol, address: `${address.address}:${address.port}` }, 'listener up');
    }
    this.#watchCertificates();
    if (options.watchConfig && this.#config.file) {
      this.#watcher = watch(this.#config.file, { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 50 } });
      this.#watcher.on('change', () => void this.reload('file change'));
      this.#watcher.on('add', () => void this.reload('file change'));
    }
    this.#ready = true;
    this.logger.info({ version: this.#version, routes: this.#config.routes.length, targets: Object.keys(this.#config.targets).length }, 'gateway ready');
  }

  /**
   * The shared HTTP listener. Its one WebSocket server serves every WebSocket path (/ws, /mqtt),
   * so its options are settled when the listener starts, from what the adapters declared.
   */
  #httpListener(timeouts: ListenerTimeouts): HttpMount {
    const tls = this.#tls.get('http');
    const { server: serverTimeouts, ...fastifyTimeouts } = httpTimeouts(timeouts);
    const malformedPaths = new Map<string, (request: FastifyRequest, reply: FastifyReply) => void>();
    const directAnswers: DirectAnswer[] = [];
    const serverOptions = { maxHeaderSize: HTTP_MAX_HEAD_BYTES, ...serverTimeouts };
    // Fastify's own body limit is lifted: the HTTP adapter enforces limits.maxPayloadSize itself.
    const app = Fastify({
      logger: false, bodyLimit: 2 ** 31 - 1, forceCloseConnections: 'idle', trustProxy: false,
      // The server is made here so that the requests adapters answer directly never reach
      // fastify (HttpMount.answerDirectly); it gets the timeouts fastify sets on a server it makes.
      serverFactory: (fastifyHandler) => {
        const handler = (request: IncomingMessage, response: ServerResponse): void => {
          for (const direct of directAnswers) {
            if (request.method === direct.method && request.url!.startsWith(direct.prefix)) {
              direct.answer(request, response);
              return;
            }
          }
          fastifyHandler(request, response);
        };
        // Node's https server takes the http server's options too.
        const server = tls ? createHttpsServer({ ...tls.serverOptions(), ...serverOptions }, handler) : createServer(serverOptions, handler);
        server.keepAliveTimeout = fastifyTimeouts.keepAliveTimeout;
        server.requestTimeout = fastifyTimeouts.requestTimeout;
        return server;
      },
      // What the router refuses before any route (a path that is not valid percent-encoding):
      // the adapter whose path it is answers, else a problem+json 400 like every other refusal.
      frameworkErrors: (err, request, reply) => {
        const path = request.url;
        const answer = err.code === 'FST_ERR_BAD_URL' ? [...malformedPaths].find(([prefix]) => path.startsWith(prefix))?.[1] : undefined;
        if (answer) {
          answer(request, reply);
          return;
        }
        const error = new GatewayError('bad_request', err.message);
        this.metrics.rejected('http', error.code);
        sendProblem(reply, error, path);
      },
      clientErrorHandler: (err, socket) => {
        const answer = clientErrorAnswer(err, HTTP_MAX_HEAD_BYTES);
        if (answer) {
          this.metrics.rejected('http', answer.code);
          if (socket.writable) socket.write(answer.response);
        }
        socket.destroy();
      },
    });
    this.#http = app;
    const needs: WebSocketServerNeeds = { maxPayload: 1, perMessageDeflate: false };
    const webSocketRoutes: FastifyPluginCallback[] = [];
    const webSocketPaths = new Set<string>();
    // @fastify/websocket hooks every request of the scope it is registered in (an HTTP publish
    // paid about 0.5 KB and 2.5 us for it), and routes every upgrade of the server it listens on
    // through the whole router: it gets a scope holding the WebSocket routes alone, and hears
    // only the upgrades to their paths, on a server of its own that never listens.
    const upgrades = createServer();
    app.server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      const path = (request.url ?? '/').split('?', 1)[0]!;
      if (webSocketPaths.has(path)) {
        upgrades.emit('upgrade', request, socket, head);
        return;
      }
      const err = new GatewayError('not_found', `no WebSocket endpoint at ${path}${webSocketPaths.size > 0 ? `; WebSocket paths: ${[...webSocketPaths].sort().join(', ')}` : ''}`);
      this.metrics.rejected('http', err.code);
      // Node took its error listener off the socket before the upgrade event.
      socket.on('error', () => socket.destroy());
      socket.once('finish', () => socket.destroy());
      socket.end(problemResponse(err, undefined, request.url));
    });
    void app.register((scope, _options, done) => {
      scope.addHook('onRoute', (route) => {
        if (route.websocket === true) webSocketPaths.add(route.url);
      });
      void scope.register(fastifyWebsocket, { options: { server: upgrades, maxPayload: needs.maxPayload, perMessageDeflate: needs.perMessageDeflate } });
      for (const routes of webSocketRoutes) void scope.register(routes);
      done();
    });
    return {
      register: (plugin) => void app.register(plugin),
      webSocket: (declared, routes) => {
        needs.maxPayload = Math.max(needs.maxPayload, declared.maxPayload);
        needs.perMessageDeflate ||= declared.perMessageDeflate === true;
        webSocketRoutes.push(routes);
      },
      malformedPath: (prefix, answer) => {
        malformedPaths.set(prefix, answer);
      },
      answerDirectly: (method, prefix, answer) => {
        directAnswers.push({ method, prefix, answer });
      },
      clientCertificate: (socket) => tls?.clientCertificate(socket as Socket),
    };
  }

  /** What one adapter gets of the core: see AdapterContext. */
  #context(registration: ProtocolRegistration, http: HttpMount | undefined): AdapterContext {
    const { protocol, section, listener } = registration;
    return {
      protocol,
      logger: this.logger,
      dispatch: (message, options) => {
        const unsafe = this.#unsafeInCluster(message);
        return unsafe ? Promise.reject(unsafe) : this.dispatcher.dispatch(message, options);
      },
      accept: (message) => {
        const unsafe = this.#unsafeInCluster(message);
        if (unsafe) throw unsafe;
        return this.dispatcher.accept(message);
      },
      subscribe: (pattern, handler, options) => this.bus.subscribe(pattern, handler, options),
      subscribeAll: (handler) => this.bus.subscribeAll(handler),
      joinGroup: (group, pattern, member) => this.groups.join(group, pattern, member),
      settings: () => (section === undefined ? undefined : this.#config[section.key]),
      listener: () => (listener ? clientListener(this.#config, protocol) : undefined),
      listen: (accept, options) => {
        const config = clientListener(this.#config, protocol);
        if (!listener || !config) throw new SetupError(`listeners.${protocol}`, 'the protocol has no listener configured');
        return bindListener({
          name: protocol as ListenerName, host: config.host, port: config.port, tls: this.#tls.get(protocol), admission: this.admission,
          // Listeners apply after a restart, their limits with them.
          limits: () => config, timeouts: this.#timeouts, logger: this.logger,
        }, accept, options);
      },
      maxPayloadSize: () => this.#config.limits.maxPayloadSize,
      admitWork: () => {
        const limit = this.#config.limits.maxInflight;
        if (this.dispatcher.inflight >= limit) {
          throw new GatewayError('overloaded', `${limit} messages are under way (limits.maxInflight): retry later`, { retryAfterMs: 1000 });
        }
      },
      access: () => this.#access,
      http,
      refused: (code) => this.metrics.rejected(protocol, code),
      ...(this.#cluster ? { sessions: this.#cluster.sessionsOf(protocol) } : {}),
    };
  }

  /** Acknowledged QoS 1 messages must survive a node: without Redis they cannot be made to. */
  #unsafeInCluster(message: Message): GatewayError | undefined {
    if (message.qos === 0 || !this.#cluster || this.#cluster.available) return undefined;
    return new GatewayError('overloaded', 'Redis is unreachable: QoS 1 messages are refused until it is back (QoS 0 still reaches this node\'s subscribers)', { retryAfterMs: 1000 });
  }

  /** The adapter of a protocol, when it runs. */
  adapter(protocol: Protocol): Adapter | undefined {
    return this.#adapters.get(protocol);
  }

  /** Each running adapter's counters and levels, by protocol. */
  adapterStats(): Map<Protocol, AdapterStats> {
    return new Map([...this.#adapters].map(([protocol, adapter]) => [protocol, adapter.stats()]));
  }

  async #listen(name: ListenerName, app: FastifyInstance, config: AdminListenerConfig): Promise<void> {
    const { host, port } = config;
    const client = clientListener(this.#config, name);
    if (client) this.admission.watch(name, app.server, () => client);
    this.#tls.get(name)?.attach(app.server as unknown as TlsServer, this.logger);
    this.#timeouts.watchHttp(name, app.server);
    try {
      await app.listen({ host, port });
    } catch (err) {
      throw new ListenerError(name, `${host}:${port}`, err as NodeJS.ErrnoException);
    }
    const address = app.server.address() as AddressInfo;
    this.logger.info({ listener: name, address: `${address.address}:${address.port}` }, 'listener up');
  }

  address(name: ListenerName): AddressInfo | undefined {
    if (name === 'http') return this.#http?.server.address() as AddressInfo | undefined ?? undefined;
    if (name === 'admin') return this.#admin?.server.address() as AddressInfo | undefined ?? undefined;
    return this.#adapters.get(name)?.address?.();
  }

  /**
   * Builds the routing state of `config` without touching the one in force: the route table
   * first (it cannot fail on a validated config, but if it did nothing would need undoing), then
   * lanes for new and changed targets. Targets whose config did not change keep their lane (and
   * its connections). When a target cannot be created, the lanes already made are closed.
   */
  #plan(config: GatewayConfig, version: number): Plan {
    const table = compileRouteTable(config.routes, config.defaultRoute, version);
    const targets = new Map<string, RunningTarget>();
    const created: RunningTarget[] = [];
    try {
      for (const [name, targetConfig] of Object.entries(config.targets)) {
        const current = this.#targets.get(name);
        const fingerprint = JSON.stringify([targetConfig, config.breakers[targetConfig.breaker]]);
        if (current && current.config === fingerprint) {
          targets.set(name, current);
          continue;
        }
        const running = { config: fingerprint, lane: this.#createLane(name, targetConfig, config.breakers), maxBytes: targetConfig.queue.maxBytes };
        created.push(running);
        targets.set(name, running);
      }
    } catch (err) {
      for (const { lane } of created) this.#close(lane);
      throw err;
    }
    const replaced = [...this.#targets.values()].filter((running) => targets.get(running.lane.name) !== running).map((running) => running.lane);
    return {
      snapshot: { table, lanes: new Map([...targets].map(([name, running]) => [name, running.lane])), requestTimeoutMs: config.requests.timeout },
      targets,
      created,
      replaced,
    };
  }

  /**
   * Puts a plan in force, in one synchronous step: the dispatcher's routing state, then each new
   * lane in charge of its target's queue (taking over the records of the lane it replaces), then
   * the replaced lanes finish what they still run.
   */
  #commit(plan: Plan): void {
    this.#targets = plan.targets;
    this.dispatcher.swap(plan.snapshot);
    for (const { lane, maxBytes } of plan.created) {
      this.#store!.queue(lane.name, { maxBytes });
      lane.start(this.#owners.get(lane.name));
      this.#owners.set(lane.name, lane);
    }
    this.#retire(plan.replaced);
  }

  /**
   * Opens the queue store, which puts back what an earlier run left unsettled, and starts the
   * lanes on it. Records of targets no longer configured go to the dead-letter store with reason
   * `no_target`. Runs before any listener but the admin one, so /readyz says `starting` meanwhile.
   */
  async #recover(): Promise<void> {
    const { storage } = this.#config;
    try {
      this.#store = this.#node?.stores.queues ?? await openQueueStore({ ...storage, onError: (err) => this.#storeErrors.report(err) });
    } catch (err) {
      if (err instanceof DirectoryInUseError) throw new SetupError('storage.dir', `${err.message}; give each gateway its own storage.dir`);
      const code = (err as NodeJS.ErrnoException).code;
      throw new SetupError('storage.dir', `the queue store in ${storage.dir} cannot be opened: ${code ?? (err as Error).message}`);
    }
    this.#commit(this.#plan(this.#config, this.#version));
    const report = this.#store.recovery;
    const gone = report.targets.filter((name) => !Object.hasOwn(this.#config.targets, name));
    for (const name of gone) await this.#deadLetterUnconfigured(name);
    if (storage.sync !== 'none') {
      const { durationMs, ...counts } = report;
      this.logger.info({ dir: storage.dir, sync: storage.sync, ...counts, ...this.#recovered, durationMs: Math.round(durationMs) }, 'queue store recovered');
    }
  }

  /** The records a removed target left in the queue store, dead-lettered with reason `no_target`. */
  async #deadLetterUnconfigured(name: string): Promise<void> {
    const queue = this.#store!.queue(name);
    const writes: Promise<void>[] = [];
    let kept = 0;
    // Each round takes a record out of the queue, so this ends within the queue's size.
    for (let record = queue.take(); record; record = queue.take()) {
      const taken = record;
      writes.push(this.dispatcher.deadLetter({
        message: taken.message, target: name, reason: 'no_target', attempts: taken.attempts,
        error: `target ${name} is not in the configuration`,
      }).then(() => {
        queue.settle(taken, 'deadLettered');
        this.#recovered.noTarget++;
      }, () => {
        kept++;
      }));
    }
    await Promise.all(writes);
    this.#recovered.kept += kept;
    if (kept > 0) this.logger.error({ target: name, kept }, 'the dead-letter store refused records of a removed target: they stay in the queue store until the next start');
  }

  #deadLetterFill(level: FillLevel, usage: DeadLetterUsage): void {
    const { whenFull } = this.#config.deadletter;
    const fields = { path: this.deadletter.path, bytes: usage.bytes, maxBytes: usage.maxBytes };
    switch (level) {
      case 'high':
        this.logger.warn(fields, 'dead-letter store past 80 % of deadletter.maxBytes');
        break;
      case 'full':
        this.logger.error({ ...fields, whenFull }, DEAD_LETTER_FULL_ALERT[whenFull]);
        break;
      case 'normal':
        this.logger.info(fields, 'dead-letter store below 80 % of deadletter.maxBytes again');
        break;
    }
  }

  /** The queue store's figures, for /metrics and /admin/stats. */
  storageStats(): StorageStats {
    const store = this.#store;
    const queues = new Map<string, { records: number; held: number; bytes: number }>();
    if (store) {
      for (const name of this.lanes().keys()) {
        const queue = store.queue(name);
        queues.set(name, { records: queue.size + queue.held, held: queue.held, bytes: queue.bytes });
      }
    }
    return {
      dir: this.#config.storage.dir,
      sync: this.#config.storage.sync,
      queues,
      ...(store instanceof DiskQueueStore ? { files: store.diskBytes } : {}),
      recovery: { ...(store?.recovery ?? { targets: [], records: 0, corrupt: 0, torn: 0, segments: 0, durationMs: 0 }), ...this.#recovered },
      errors: this.#storeErrors.total,
    };
  }

  /** Closes a lane that never ran. */
  #close(lane: TargetLane): void {
    lane.close(new GatewayError('overloaded', `target ${lane.name} was not started`));
    void lane.target.close().catch(() => undefined);
  }

  /** A target's bucket: shared by every node in cluster mode, this lane's own when embedded. */
  #rateLimit(target: string, spec: BucketSpec): { rateLimit: BucketSpec; sharedBucket?: RateBucket } {
    const buckets = this.#node?.stores.buckets;
    return buckets ? { rateLimit: spec, sharedBucket: buckets.bucket('target', target, spec) } : { rateLimit: spec };
  }

  #createLane(name: string, config: TargetSettings, breakers: GatewayConfig['breakers']): TargetLane {
    const store = this.#store!;
    const type = this.#registry.targetType(config.type);
    if (!type) throw new SetupError(`targets.${name}.type`, `no target type ${config.type} in this build (have: ${this.#registry.targetTypes.map((t) => t.type).join(', ')})`);
    const target = type.create(name, config, { logger: this.logger.child({ target: name }) });
    // The loader resolves every target's breaker to an entry (schema.ts, BreakersSchema).
    const breaker = breakers[config.breaker]!;
    // A breaker's timeout, when it has one, caps the target's.
    const timeoutMs = Math.min(config.timeout, breaker.timeout ?? Infinity);
    return new TargetLane(target, store.queue(name), {
      concurrency: config.concurrency,
      maxQueue: config.queue.maxSize,
      timeoutMs,
      recovered: (record) => this.dispatcher.recovered(name, record),
      ...(config.retry ? { retry: { attempts: config.retry.attempts, backoffMs: config.retry.backoff, maxBackoffMs: config.retry.maxBackoff } } : {}),
      ...(config.rateLimit ? this.#rateLimit(name, { rate: config.rateLimit.rate, perMs: config.rateLimit.per, burst: config.rateLimit.burst }) : {}),
      breaker: {
        errorThresholdPercentage: breaker.errorThresholdPercentage,
        resetTimeout: breaker.resetTimeout,
        volumeThreshold: breaker.volumeThreshold,
        rollingCountTimeout: breaker.rollingCountTimeout,
        halfOpenProbes: breaker.halfOpenProbes,
        ...(breaker.slowCallThreshold !== undefined ? { slowCallThreshold: breaker.slowCallThreshold } : {}),
      },
      onBreakerTransition: (targetName, t) => {
        const log = t.state === 'open' ? this.logger.warn.bind(this.logger) : this.logger.info.bind(this.logger);
        log({ target: targetName, state: t.state, reason: t.reason }, `breaker ${t.state.replace('_', '-')}`);
        this.#record({ kind: 'breaker', at: t.at, target: targetName, text: `breaker ${t.state.replace('_', '-')}: ${t.reason}` });
      },
      onCall: (targetName, ok, seconds) => this.metrics.called(targetName, ok, seconds),
      onShedding: (targetName, shedding) => {
        this.logger.warn({ target: targetName, shedding }, shedding ? 'shedding started' : 'shedding stopped');
        this.#record({ kind: 'shedding', at: Date.now(), target: targetName, text: shedding ? 'shedding started' : 'shedding stopped' });
      },
    });
  }

  /**
   * A replaced lane gets no new work once the new routing state is in force (the dispatcher
   * looks lanes up at the moment it enqueues): it finishes what it has, then releases its
   * downstream connections.
   */
  #retire(lanes: TargetLane[]): void {
    for (const lane of lanes) {
      this.#retiring.add(lane);
      void lane.idle().then(() => {
        this.#retiring.delete(lane);
        if (this.#owners.get(lane.name) === lane) this.#owners.delete(lane.name);
        return lane.target.close();
      }).catch((err: unknown) => this.logger.warn({ err, target: lane.name }, 'a replaced target did not close cleanly'));
    }
  }

  /**
   * Replays dead-lettered records that were not replayed yet. Replays run one at a time, so
   * two concurrent requests cannot replay the same record twice.
   */
  replayDeadLetters(filter: DeadLetterFilter, limit: number): Promise<ReplayOutcome> {
    const run = this.#replays.then(async () => {
      const records = await this.archive.list({ ...filter, pendingOnly: true }, limit);
      const outcome: ReplayOutcome = { replayed: [], failed: [] };
      for (const record of records) {
        const message = messageOf(record);
        // An operator asked for it again: an expiry that already passed no longer applies.
        delete message.expiresAt;
        try {
          const via = await this.dispatcher.replay(message, record.target);
          outcome.replayed.push({ recordId: record.recordId, id: message.id, via });
        } catch (err) {
          outcome.failed.push({ recordId: record.recordId, id: message.id, error: (err as Error).message });
        }
      }
      await this.archive.markReplayed(outcome.replayed.map((r) => r.recordId));
      if (records.length > 0) this.logger.info({ replayed: outcome.replayed.length, failed: outcome.failed.length }, 'dead letters replayed');
      return outcome;
    });
    this.#replays = run.catch(() => undefined);
    return run;
  }

  #record(change: StateChange): void {
    this.recentChanges.push(change);
    if (this.recentChanges.length > 50) this.recentChanges.shift();
  }

  /** open client connections per protocol */
  connections(): Partial<Record<Protocol, number>> {
    const counts: Partial<Record<Protocol, number>> = {};
    for (const [protocol, adapter] of this.#adapters) counts[protocol] = adapter.connections();
    return counts;
  }

  /** up to `limit` open client connections, protocol by protocol */
  listConnections(limit: number): ConnectionInfo[] {
    const list: ConnectionInfo[] = [];
    for (const adapter of this.#adapters.values()) {
      if (list.length >= limit) break;
      list.push(...(adapter.listConnections?.(limit - list.length) ?? []));
    }
    return list;
  }

  /** the running target lanes by name */
  lanes(): ReadonlyMap<string, TargetLane> {
    return this.dispatcher.snapshot.lanes;
  }

  /**
   * Reads every listener's certificate, key and CA again: new connections get the new ones,
   * open connections keep theirs; a listener whose files cannot be used keeps its old ones.
   * Runs on a change of those files, and on every reload (SIGHUP, POST /admin/reload).
   */
  renewCertificates(trigger: string): void {
    for (const tls of this.#tls.values()) {
      const error = tls.renew();
      if (error) this.logger.error({ trigger, listener: tls.listener, path: error.path, err: error.message }, `${error.message}; the old certificate stays in use`);
      else this.logger.info({ trigger, listener: tls.listener }, 'certificate renewed');
    }
  }

  #watchCertificates(): void {
    const files = [...new Set([...this.#tls.values()].flatMap((tls) => tls.files))];
    if (files.length === 0) return;
    this.#tlsWatcher = watch(files, { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 50 } });
    this.#tlsWatcher.on('change', () => this.renewCertificates('certificate file change'));
    this.#tlsWatcher.on('add', () => this.renewCertificates('certificate file change'));
  }

  /** What authentication and admission counted, for metrics and /admin/stats. */
  securityStats(): SecurityStats {
    return {
      guard: { ...this.guard.counters, trackedAddresses: this.guard.trackedAddresses, pendingChecks: this.guard.pending },
      admission: this.admission.refusals(),
      requestTimeouts: this.#timeouts.snapshot(),
      tlsHandshakeFailures: Object.fromEntries([...this.#tls].map(([name, tls]) => [name, { ...tls.failures }])),
    };
  }

  /** Re-reads the config file; an invalid file is refused and the running table stays. */
  async reload(trigger: string): Promise<ReloadOutcome> {
    const file = this.#config.file;
    let config: GatewayConfig;
    try {
      ({ config } = await loadConfigFile(file));
    } catch (err) {
      const issues = err instanceof ConfigError ? err.issues : [{ file, line: 0, column: 0, path: '', message: (err as Error).message }];
      this.reloads.refused++;
      this.logger.error({ trigger, version: this.#version, errors: issues.map(formatIssue) }, 'reload refused; the running table stays');
      this.#record({ kind: 'reload', at: Date.now(), text: `reload refused (${trigger}): ${issues.length} error(s); version ${this.#version} stays` });
      return { ok: false, changed: false, version: this.#version, issues };
    }
    // Certificates are read again whatever the config says: a SIGHUP after replacing them renews them.
    this.renewCertificates(trigger);
    // Saving a file untouched, a second SIGHUP: the table in force is this one already.
    if (JSON.stringify(config) === JSON.stringify(this.#config)) {
      this.reloads.unchanged++;
      this.logger.info({ trigger, version: this.#version }, 'reload: nothing changed');
      return { ok: true, changed: false, version: this.#version, issues: [] };
    }
    if (JSON.stringify(config.listeners) !== JSON.stringify(this.#config.listeners)) {
      this.logger.warn({ trigger }, 'listeners changed: they apply after a restart');
    }
    let access: AccessControl;
    for (const key of ['storage', 'deadletter'] as const) {
      if (JSON.stringify(config[key]) !== JSON.stringify(this.#config[key])) this.logger.warn({ trigger }, `${key} changed: it applies after a restart`);
    }
    let plan: Plan;
    try {
      // Key files (auth.jwt.publicKey) are read here: one that cannot be used refuses the reload.
      access = new AccessControl(config, { guard: this.guard, logger: this.logger });
      plan = this.#plan(config, this.#version + 1);
    } catch (err) {
      this.reloads.refused++;
      const issue = err instanceof SetupError
        ? { file, line: 0, column: 0, path: err.path, message: err.message.slice(err.path.length + 2) }
        : { file, line: 0, column: 0, path: '', message: `the routing state could not be built: ${(err as Error).message}` };
      this.logger.error({ trigger, err }, 'reload refused; the running table stays');
      this.#record({ kind: 'reload', at: Date.now(), text: `reload refused (${trigger}): ${issue.path ? `${issue.path}: ` : ''}${issue.message}; version ${this.#version} stays` });
      return { ok: false, changed: false, version: this.#version, issues: [issue] };
    }
    const levelChanged = config.log.level !== this.#config.log.level;
    this.#version++;
    this.#config = config;
    this.#access = access;
    this.#commit(plan);
    if (levelChanged && process.env.LOG_LEVEL === undefined) this.logger.level = config.log.level;
    this.reloads.ok++;
    this.logger.info({ trigger, version: this.#version, routes: config.routes.length }, 'reload ok');
    if (this.#cluster && !trigger.startsWith('cluster')) {
      void this.#cluster.announceReload().catch((err: unknown) => this.logger.warn({ err }, 'the other nodes could not be told of this reload'));
    }
    this.#record({ kind: 'reload', at: Date.now(), text: `reload ok (${trigger}): version ${this.#version}` });
    return { ok: true, changed: true, version: this.#version, issues: [] };
  }

  /**
   * Graceful shutdown: stop accepting, let queued work drain until the deadline, dead-letter
   * what is left with reason `shutdown`, then close everything.
   */
  stop(): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  async #stop(): Promise<void> {
    // A gateway that never got ready (a listener failed to bind) has served nothing: it releases
    // what it bound without announcing a drain, and its caller reports why it could not start.
    const served = this.#ready;
    this.#draining = true;
    const deadline = Date.now() + this.#config.shutdown.drainTimeout;
    if (served) this.logger.info({ drainTimeoutMs: this.#config.shutdown.drainTimeout }, 'draining');
    await this.#watcher?.close();
    await this.#tlsWatcher?.close();
    await Promise.all([...this.#adapters.values()].map((adapter) => adapter.stop(deadline)));
    await this.#http?.close();
    const lanes = [...[...this.#targets.values()].map((t) => t.lane), ...this.#retiring];
    await settledBy(Promise.all(lanes.map((lane) => lane.idle())), deadline);
    const shutdown = new GatewayError('overloaded', 'the gateway stopped before this message was delivered', { shutdown: true });
    for (const lane of lanes) lane.close(shutdown);
    await this.dispatcher.settled();
    await this.groups.close();
    await Promise.all(lanes.map((lane) => lane.target.close().catch(() => undefined)));
    await this.#store?.close();
    await this.deadletter.close();
    await this.bus.close();
    await this.#node?.close();
    await this.#admin?.close();
    if (served) this.logger.info('stopped');
  }
}
