import { hostname } from 'node:os';
import { Redis } from 'ioredis';
import { RedisBus } from '../bus/redis-bus.js';
import type { ClusterSettings } from '../config/schema.js';
import { SetupError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Message } from '../message.js';
import type { SharedSessions } from '../adapter.js';
import { decodeMessage, encodeMessage, type Frame } from './wire.js';

/** How often a node renews its heartbeat key, and how long the key outlives the last renewal. */
export const HEARTBEAT_MS = 1000;
export const NODE_TTL_MS = 5000;
/** How long a start waits for Redis before it gives up and says so. */
const CONNECT_TIMEOUT_MS = 5000;
/** Reconnection back-off: 100 ms more per attempt, at most this. */
const MAX_RECONNECT_DELAY_MS = 2000;

/** Frame kinds on a node's own channel besides the bus's requests. */
const ANSWER = 'A';
const RELOAD = 'L';
const CLAIM = 'T';
const CLAIMED = 'S';
/** How long a node claiming a client id waits for the node that had it to end that connection. */
const CLAIM_TIMEOUT_MS = 3000;

/** What a node says of itself in its heartbeat, shown by /admin/cluster and the dashboard. */
export interface NodeReport {
  pid: number;
  host: string;
  version: string;
  configVersion: number;
  /** digest of the config in force: nodes that agree show the same */
  configHash: string;
  ready: boolean;
  connections: Record<string, number>;
  startedAt: number;
}

export interface NodeInfo extends NodeReport {
  id: string;
  /** this very process */
  self: boolean;
}

export interface ClusterHooks {
  /** the heartbeat's content, read at each beat */
  report(): Omit<NodeReport, 'pid' | 'host' | 'startedAt'>;
  /** an answer for one of this node's inboxes, sent by the node its responder is on */
  answer(message: Message): void;
  /** another node reloaded its config: read this node's file again */
  reload(from: string): void;
}

/**
 * This node's name: `cluster.nodeId`, else the host name, made a valid id; a worker of
 * `--workers N` appends its number.
 */
export function nodeIdOf(settings: ClusterSettings, worker: number | undefined): string {
  const base = settings.nodeId ?? hostname().replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 60);
  return worker === undefined ? base : `${base}-${worker}`;
}

/**
 * One node of a cluster on one Redis (docs/scale-out.md): its two connections (commands, with no
 * offline queue so a command fails at once while Redis is away; and Pub/Sub), the bus across
 * nodes, the heartbeat that tells the nodes of each other, and whether Redis is reachable, which
 * readiness and QoS 1 acceptance follow. Loaded only when the config has a `cluster` section.
 */
export class Cluster {
  readonly nodeId: string;
  readonly bus: RedisBus;
  readonly #settings: ClusterSettings;
  readonly #logger: Logger;
  readonly #command: Redis;
  readonly #subscriber: Redis;
  readonly #startedAt = Date.now();
  #hooks: ClusterHooks | undefined;
  /** live nodes by id, from the last heartbeat round */
  #nodes = new Map<string, NodeReport>();
  #available = true;
  #timer: NodeJS.Timeout | undefined;
  /** each protocol's way of ending a connection another node claims */
  readonly #claimHandlers = new Map<string, (clientId: string) => Promise<void>>();
  /** claims waiting for the node that had the client id, by claim id */
  readonly #claims = new Map<string, () => void>();
  /** each protocol's handler of the notes other nodes broadcast (SharedSessions) */
  readonly #noteHandlers = new Map<string, (note: Buffer) => void>();
  readonly #reconnectHandlers: (() => void)[] = [];
  #claimCount = 0;
  /** connected once: from then on connection events are transitions worth a log line */
  #opened = false;
  #closed = false;

  private constructor(settings: ClusterSettings, nodeId: string, logger: Logger) {
    this.#settings = settings;
    this.nodeId = nodeId;
    this.#logger = logger.child({ node: nodeId });
    const retryStrategy = (times: number) => Math.min(times * 100, MAX_RECONNECT_DELAY_MS);
    const common = { lazyConnect: true, retryStrategy, connectTimeout: CONNECT_TIMEOUT_MS, maxRetriesPerRequest: 0, connectionName: `junction:${nodeId}` };
    this.#command = new Redis(settings.redis, { ...common, enableOfflineQueue: false });
    this.#subscriber = new Redis(settings.redis, common);
    for (const connection of [this.#command, this.#subscriber]) {
      // ioredis reports each failed attempt here; the transition log below says it once.
      connection.on('error', () => undefined);
      connection.on('ready', () => this.#update());
      connection.on('close', () => this.#update());
    }
    this.bus = new RedisBus({
      command: this.#command,
      subscriber: this.#subscriber,
      nodeId,
      prefix: settings.keyPrefix,
      live: (node) => this.#nodes.has(node),
      onError: (err, pattern) => this.#logger.error({ err, pattern }, 'a bus subscriber failed on a delivery'),
      onDirect: (frame) => this.#direct(frame),
      onBroadcast: (body) => this.#note(body),
    });
  }

  /** Connects, claims the node id among the live nodes and joins the bus; SetupError when it cannot. */
  static async open(settings: ClusterSettings, logger: Logger, worker?: number): Promise<Cluster> {
    const cluster = new Cluster(settings, nodeIdOf(settings, worker), logger);
    try {
      await Promise.all([cluster.#command.connect(), cluster.#subscriber.connect()]);
    } catch (err) {
      cluster.#disconnect();
      throw new SetupError('cluster.redis', `Redis at ${redacted(settings.redis)} cannot be reached: ${(err as Error).message}`);
    }
    try {
      await cluster.#claim();
      await cluster.bus.open();
      await cluster.#beat();
    } catch (err) {
      cluster.#disconnect();
      throw err;
    }
    cluster.#opened = true;
    cluster.#timer = setInterval(() => void cluster.#beat().catch(() => undefined), HEARTBEAT_MS);
    cluster.#timer.unref();
    return cluster;
  }

  /** The gateway's side: what the heartbeat reports and what answers and reloads reach. */
  attach(hooks: ClusterHooks): void {
    this.#hooks = hooks;
  }

  /** Redis reachable on both connections: readiness, and QoS 1 acceptance, follow it. */
  get available(): boolean {
    return this.#available;
  }

  #key(name: string): string {
    return `${this.#settings.keyPrefix}${name}`;
  }

  /**
   * The heartbeat key is the claim: a live node holding it means another process runs with this
   * id. A node killed a moment ago leaves its key until it expires, so the claim waits that long.
   */
  async #claim(): Promise<void> {
    const deadline = Date.now() + NODE_TTL_MS + HEARTBEAT_MS;
    for (;;) {
      if (await this.#command.set(this.#key(`node:${this.nodeId}`), JSON.stringify(this.#report()), 'PX', NODE_TTL_MS, 'NX')) return;
      if (Date.now() > deadline) throw new SetupError('cluster.nodeId', `node ${this.nodeId} is live already on this Redis; give each process its own cluster.nodeId`);
      await new Promise((resolve) => setTimeout(resolve, HEARTBEAT_MS / 4));
    }
  }

  #report(): NodeReport {
    const report = this.#hooks?.report() ?? { version: '', configVersion: 0, configHash: '', ready: false, connections: {} };
    return { ...report, pid: process.pid, host: hostname(), startedAt: this.#startedAt };
  }

  /** Renews this node's key and reads the others'; forgets the nodes whose key expired. */
  async #beat(): Promise<void> {
    if (this.#closed) return;
    const nodesKey = this.#key('nodes');
    await this.#command.multi()
      .set(this.#key(`node:${this.nodeId}`), JSON.stringify(this.#report()), 'PX', NODE_TTL_MS)
      .sadd(nodesKey, this.nodeId)
      .exec();
    const ids = await this.#command.smembers(nodesKey);
    const reports = ids.length > 0 ? await this.#command.mget(ids.map((id) => this.#key(`node:${id}`))) : [];
    const nodes = new Map<string, NodeReport>();
    const gone: string[] = [];
    ids.forEach((id, i) => {
      const report = reports[i];
      if (report) nodes.set(id, JSON.parse(report) as NodeReport);
      else gone.push(id);
    });
    this.#nodes = nodes;
    if (gone.length > 0) await this.#forget(gone);
  }

  /** Nodes whose heartbeat expired: out of the node set, their responder registrations dropped. */
  async #forget(ids: string[]): Promise<void> {
    const responders = this.#key('responders');
    const fields = (await this.#command.hkeys(responders)).filter((field) => ids.includes(field.slice(0, field.indexOf(' '))));
    const forget = this.#command.multi().srem(this.#key('nodes'), ...ids);
    if (fields.length > 0) forget.hdel(responders, ...fields);
    await forget.exec();
    this.#logger.warn({ nodes: ids }, 'nodes left the cluster (heartbeat expired)');
  }

  /** The live nodes as of the last heartbeat, this one first. */
  nodes(): NodeInfo[] {
    const self: NodeInfo = { ...this.#report(), id: this.nodeId, self: true };
    const others = [...this.#nodes].filter(([id]) => id !== this.nodeId).map(([id, report]) => ({ ...report, id, self: false }));
    return [self, ...others.sort((a, b) => a.id.localeCompare(b.id))];
  }

  /** Sends an answer to the node whose inbox it is for (at-most-once: the requester times out otherwise). */
  answer(node: string, message: Message): Promise<void> {
    return this.bus.send(node, ANSWER, encodeMessage(message));
  }

  /**
   * Sessions shared by the nodes (adapter.ts SharedSessions): `Psession:<protocol>:<clientId>`
   * names the node holding a client id. A claim writes this node there and asks the previous
   * holder, when it is alive, to end that client's connection.
   */
  sessionsOf(protocol: string): SharedSessions {
    return {
      claim: (clientId, ttlMs) => this.#claimSession(protocol, clientId, ttlMs),
      onClaim: (end) => {
        this.#claimHandlers.set(protocol, end);
      },
      redis: this.#command,
      keyPrefix: this.#key(`${protocol}:`),
      broadcast: (note) => this.bus.broadcast(Buffer.concat([Buffer.from(`${protocol}\n`), note])),
      onNote: (handler) => {
        this.#noteHandlers.set(protocol, handler);
      },
      onReconnect: (handler) => {
        this.#reconnectHandlers.push(handler);
      },
    };
  }

  async #claimSession(protocol: string, clientId: string, ttlMs: number): Promise<void> {
    const previous = await this.#command.set(this.#key(`session:${protocol}:${clientId}`), this.nodeId, 'PX', ttlMs, 'GET');
    if (previous === null || previous === this.nodeId || !this.#nodes.has(previous)) return;
    const id = `${this.nodeId}:${++this.#claimCount}`;
    const ended = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#claims.delete(id);
        this.#logger.warn({ clientId, from: previous }, 'the node that had this client id did not end its connection in time: both may be connected a moment');
        resolve();
      }, CLAIM_TIMEOUT_MS);
      this.#claims.set(id, () => {
        clearTimeout(timer);
        this.#claims.delete(id);
        resolve();
      });
    });
    await this.bus.send(previous, CLAIM, Buffer.from(JSON.stringify({ id, protocol, clientId })));
    return ended;
  }

  async #endClaimed(from: string, body: Buffer): Promise<void> {
    const { id, protocol, clientId } = JSON.parse(body.toString()) as { id: string; protocol: string; clientId: string };
    try {
      await this.#claimHandlers.get(protocol)?.(clientId);
    } catch (err) {
      this.#logger.error({ err, clientId, to: from }, 'a connection another node claimed could not be ended');
    }
    await this.bus.send(from, CLAIMED, Buffer.from(id));
  }

  /** `<protocol>\n<note>`, broadcast by another node's SharedSessions. */
  #note(body: Buffer): void {
    const newline = body.indexOf(0x0a);
    this.#noteHandlers.get(body.toString('latin1', 0, newline))?.(body.subarray(newline + 1));
  }

  /** Tells the other live nodes to read their config file again. */
  async announceReload(): Promise<void> {
    const others = [...this.#nodes.keys()].filter((id) => id !== this.nodeId);
    await Promise.all(others.map((id) => this.bus.send(id, RELOAD, Buffer.alloc(0))));
  }

  #direct(frame: Frame): void {
    switch (frame.kind) {
      case ANSWER:
        this.#hooks?.answer(decodeMessage(frame.body));
        break;
      case RELOAD:
        this.#hooks?.reload(frame.from);
        break;
      case CLAIM:
        void this.#endClaimed(frame.from, frame.body).catch((err: unknown) => this.#logger.warn({ err }, 'a claim could not be answered'));
        break;
      case CLAIMED:
        this.#claims.get(frame.body.toString('latin1'))?.();
        break;
    }
  }

  /** One log line per transition, whichever connection moved. */
  #update(): void {
    if (!this.#opened || this.#closed) return;
    const available = this.#command.status === 'ready' && this.#subscriber.status === 'ready';
    if (available === this.#available) return;
    this.#available = available;
    if (available) {
      this.#logger.info('Redis reachable again: ready, QoS 1 accepted');
      for (const handler of this.#reconnectHandlers) handler();
    } else this.#logger.error({ redis: redacted(this.#settings.redis) }, 'Redis unreachable: not ready, QoS 1 refused with overloaded, QoS 0 delivered on this node only');
  }

  #disconnect(): void {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#command.disconnect();
    this.#subscriber.disconnect();
  }

  /** Leaves the cluster: the heartbeat key goes at once, so the others forget this node now. */
  async close(): Promise<void> {
    if (this.#closed) return;
    await this.bus.close();
    clearInterval(this.#timer);
    this.#closed = true;
    await this.#command.multi().del(this.#key(`node:${this.nodeId}`)).srem(this.#key('nodes'), this.nodeId).exec().catch(() => undefined);
    this.#disconnect();
  }
}

/** A Redis URL without its password, for logs and messages. */
function redacted(url: string): string {
  return url.replace(/\/\/([^@/]*)@/, '//***@');
}
