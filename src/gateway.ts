import type { AddressInfo } from 'node:net';
import Fastify, { type FastifyInstance } from 'fastify';
import fastifyWebsocket from '@fastify/websocket';
import { watch, type FSWatcher } from 'chokidar';
import type { Adapter, AdapterContext, AdapterFactory } from './adapter.js';
import { LocalBus, type Bus } from './bus.js';
import { loadConfigFile } from './config/load.js';
import type { ConfigIssue, GatewayConfig } from './config/types.js';
import { ConfigError } from './config/types.js';
import { DeadLetterStore } from './deadletter/store.js';
import { Dispatcher, type RoutingSnapshot } from './delivery/dispatcher.js';
import { TargetLane } from './delivery/target-lane.js';
import { GatewayError } from './errors.js';
import type { Logger } from './log.js';
import { compileRouteTable } from './router/index.js';
import { TargetRegistry, type TargetFactory } from './targets/target.js';
import { httpTargetFactory } from './targets/http.js';
import type { TargetConfig } from './config/schema.js';
import { startAdminServer } from './admin/server.js';

export type ListenerName = 'http' | 'mqtt' | 'grpc' | 'admin';

export interface GatewayOptions {
  logger: Logger;
  adapters: AdapterFactory[];
  /** target types beyond the built-in ones */
  targetTypes?: TargetFactory[];
  /** reload when the config file changes */
  watchConfig?: boolean;
}

export interface ReloadOutcome {
  ok: boolean;
  version: number;
  issues: ConfigIssue[];
}

/** A listener that could not bind, said in terms of the config key to change. */
export class ListenerError extends Error {
  constructor(listener: ListenerName, address: string, cause: NodeJS.ErrnoException) {
    const why = cause.code === 'EADDRINUSE' ? 'is already in use'
      : cause.code === 'EACCES' ? 'needs privileges this process lacks'
      : cause.code === 'EADDRNOTAVAIL' ? 'is not an address of this machine'
      : `cannot be bound (${cause.code ?? cause.message})`;
    super(`listeners.${listener}: ${address} ${why}; change listeners.${listener}.host/port in the config file`);
    this.name = 'ListenerError';
  }
}

const DEFAULT_TARGET_TYPES: TargetFactory[] = [httpTargetFactory as TargetFactory];

interface RunningTarget {
  config: string;
  lane: TargetLane;
}

/**
 * The whole gateway: config, routing table, bus, targets, adapters and listeners, plus reload
 * and graceful shutdown.
 */
export class Gateway {
  readonly logger: Logger;
  readonly bus: Bus;
  readonly dispatcher: Dispatcher;
  readonly deadletter: DeadLetterStore;
  readonly adapters: Adapter[] = [];
  #config: GatewayConfig;
  #version = 1;
  readonly #registry = new TargetRegistry();
  #targets = new Map<string, RunningTarget>();
  #http: FastifyInstance | undefined;
  #admin: FastifyInstance | undefined;
  #watcher: FSWatcher | undefined;
  #ready = false;
  #draining = false;
  #stopped: Promise<void> | undefined;
  readonly reloads = { ok: 0, refused: 0 };

  private constructor(config: GatewayConfig, options: GatewayOptions) {
    this.#config = config;
    this.logger = options.logger;
    for (const factory of [...DEFAULT_TARGET_TYPES, ...(options.targetTypes ?? [])]) this.#registry.register(factory);
    this.bus = new LocalBus();
    this.deadletter = new DeadLetterStore(config.deadletter.path, config.deadletter.maxFileSize);
    this.dispatcher = new Dispatcher(this.#buildSnapshot(config), { bus: this.bus, deadletter: this.deadletter, logger: this.logger });
  }

  static async start(config: GatewayConfig, options: GatewayOptions): Promise<Gateway> {
    const gateway = new Gateway(config, options);
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
    return this.#ready && !this.#draining;
  }

  get draining(): boolean {
    return this.#draining;
  }

  config(): GatewayConfig {
    return this.#config;
  }

  async #start(options: GatewayOptions): Promise<void> {
    const { listeners } = this.#config;
    if (listeners.http) {
      // Fastify's own body limit is lifted: the HTTP adapter enforces limits.maxPayloadSize itself.
      this.#http = Fastify({ logger: false, bodyLimit: 2 ** 31 - 1, forceCloseConnections: 'idle', trustProxy: false });
      // One WebSocket server serves every WS path (/ws, /mqtt), so its options are set once here.
      // Frames carry JSON or MQTT framing around the payload: allow that much beyond the payload limit.
      await this.#http.register(fastifyWebsocket, {
        options: { maxPayload: this.#config.limits.maxPayloadSize + 64 * 1024, perMessageDeflate: false },
      });
    }
    const ctx: AdapterContext = {
      dispatcher: this.dispatcher,
      bus: this.bus,
      logger: this.logger,
      config: () => this.#config,
      http: this.#http,
    };
    for (const factory of options.adapters) this.adapters.push(factory(ctx));
    for (const adapter of this.adapters) await adapter.register?.();
    if (this.#http && listeners.http) {
      await this.#listen('http', this.#http, listeners.http.host, listeners.http.port);
    }
    for (const adapter of this.adapters) {
      await adapter.start();
      const address = adapter.address?.();
      if (address) this.logger.info({ listener: adapter.protocol, address: `${address.address}:${address.port}` }, 'listener up');
    }
    if (listeners.admin) {
      const admin = await startAdminServer(this);
      this.#admin = admin;
      await this.#listen('admin', admin, listeners.admin.host, listeners.admin.port);
    }
    if (options.watchConfig && this.#config.file) {
      this.#watcher = watch(this.#config.file, { ignoreInitial: true, awaitWriteFinish: { stabilityThreshold: 100, pollInterval: 50 } });
      this.#watcher.on('change', () => void this.reload('file change'));
      this.#watcher.on('add', () => void this.reload('file change'));
    }
    this.#ready = true;
    this.logger.info({ version: this.#version, routes: this.#config.routes.length, targets: Object.keys(this.#config.targets).length }, 'gateway ready');
  }

  async #listen(name: ListenerName, app: FastifyInstance, host: string, port: number): Promise<void> {
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
    return this.adapters.find((a) => a.protocol === name)?.address?.();
  }

  /** Targets whose config did not change keep running (and their connections); others are replaced. */
  #buildSnapshot(config: GatewayConfig): RoutingSnapshot {
    const next = new Map<string, RunningTarget>();
    for (const [name, targetConfig] of Object.entries(config.targets)) {
      const fingerprint = JSON.stringify(targetConfig);
      const current = this.#targets.get(name);
      next.set(name, current && current.config === fingerprint ? current : { config: fingerprint, lane: this.#createLane(name, targetConfig) });
    }
    const retired = [...this.#targets.entries()].filter(([name, running]) => next.get(name) !== running).map(([, running]) => running.lane);
    this.#targets = next;
    void this.#retire(retired);
    return {
      table: compileRouteTable(config.routes, config.defaultRoute, this.#version),
      lanes: new Map([...next].map(([name, running]) => [name, running.lane])),
      requestTimeoutMs: config.requests.timeout,
    };
  }

  #createLane(name: string, config: TargetConfig): TargetLane {
    const factory = this.#registry.get(config.type);
    if (!factory) throw new Error(`targets.${name}.type: no target type ${config.type} in this build (have: ${this.#registry.types.join(', ')})`);
    const target = factory.create(name, config, { logger: this.logger.child({ target: name }) });
    return new TargetLane(target, {
      concurrency: config.concurrency ?? 64,
      maxQueue: config.queue?.maxSize ?? 10_000,
      timeoutMs: config.timeout ?? 5000,
    });
  }

  /**
   * A replaced target finishes what it has; a dispatch that read the old snapshot just before
   * the swap may still hand it a message, hence the grace period before waiting for idle.
   */
  async #retire(lanes: TargetLane[]): Promise<void> {
    if (lanes.length === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 1000).unref());
    await Promise.all(lanes.map(async (lane) => {
      await lane.idle();
      await lane.target.close();
    }));
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
      this.logger.error({ trigger, version: this.#version, errors: issues.map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`) }, 'reload refused; the running table stays');
      return { ok: false, version: this.#version, issues };
    }
    if (JSON.stringify(config.listeners) !== JSON.stringify(this.#config.listeners)) {
      this.logger.warn({ trigger }, 'listeners changed: they apply after a restart');
    }
    let snapshot: RoutingSnapshot;
    this.#version++;
    try {
      snapshot = this.#buildSnapshot(config);
    } catch (err) {
      this.#version--;
      this.reloads.refused++;
      const issue = { file, line: 0, column: 0, path: '', message: (err as Error).message };
      this.logger.error({ trigger, error: issue.message }, 'reload refused; the running table stays');
      return { ok: false, version: this.#version, issues: [issue] };
    }
    const levelChanged = config.log.level !== this.#config.log.level;
    this.#config = config;
    this.dispatcher.swap(snapshot);
    if (levelChanged && process.env.LOG_LEVEL === undefined) this.logger.level = config.log.level;
    this.reloads.ok++;
    this.logger.info({ trigger, version: this.#version, routes: config.routes.length }, 'reload ok');
    return { ok: true, version: this.#version, issues: [] };
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
    this.#draining = true;
    const deadline = Date.now() + this.#config.shutdown.drainTimeout;
    this.logger.info({ drainTimeoutMs: this.#config.shutdown.drainTimeout }, 'draining');
    await this.#watcher?.close();
    await Promise.all(this.adapters.map((adapter) => adapter.stop(deadline)));
    await this.#http?.close();
    const lanes = [...this.#targets.values()].map((t) => t.lane);
    const remaining = Math.max(0, deadline - Date.now());
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(lanes.map((lane) => lane.idle())),
      new Promise((resolve) => { timer = setTimeout(resolve, remaining); }),
    ]);
    clearTimeout(timer);
    const shutdown = new GatewayError('overloaded', 'the gateway stopped before this message was delivered', { shutdown: true });
    for (const lane of lanes) lane.close(shutdown);
    await this.dispatcher.settled();
    await Promise.all(lanes.map((lane) => lane.target.close().catch(() => undefined)));
    await this.deadletter.close();
    await this.bus.close();
    await this.#admin?.close();
    this.logger.info('stopped');
  }
}
