import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import type { Redis } from 'ioredis';
import type { Client, PublishPacket, Subscription } from 'aedes';

const require = createRequire(import.meta.url);

/** aedes-packet (a dependency of aedes): the packet class aedes and its persistences hand around. */
type PacketClass = new (original: object) => StoredPacket;
const Packet = require('aedes-packet') as PacketClass;

/** aedes-persistence's memory store, where retained messages and wills stay (docs/scale-out.md). */
interface NodeLocalStore {
  setup(broker: unknown): Promise<void>;
  storeRetained(packet: PublishPacket): Promise<void>;
  createRetainedStream(pattern: string): Readable;
  createRetainedStreamCombi(patterns: string[]): Readable;
  putWill(client: Pick<Client, 'id'>, packet: PublishPacket): Promise<unknown>;
  getWill(client: Pick<Client, 'id'>): Promise<unknown>;
  delWill(client: Pick<Client, 'id'>): Promise<unknown>;
  streamWill(brokers?: Record<string, number>): Readable;
  incomingStorePacket(client: Pick<Client, 'id'>, packet: StoredPacket): Promise<void>;
  incomingGetPacket(client: Pick<Client, 'id'>, packet: { messageId?: number }): Promise<StoredPacket>;
  incomingDelPacket(client: Pick<Client, 'id'>, packet: { messageId?: number }): Promise<void>;
  cleanIncoming(client: Pick<Client, 'id'>): Promise<void>;
  destroy(): Promise<void>;
}
const MemoryPersistence = require('aedes-persistence/asyncPersistence.js') as new () => NodeLocalStore;

/** The trie aedes-persistence's stores match subscriptions with (qlobber, a dependency of aedes-persistence). */
interface SubscriptionTrie {
  add(topic: string, subscription: TopicSubscription): void;
  remove(topic: string, subscription: { clientId: string; topic: string }): void;
  match(topic: string): TopicSubscription[];
  readonly subscriptionsCount: number;
}
const QlobberSub = require('qlobber/aedes/qlobber-sub') as new (options: object) => SubscriptionTrie;
const TRIE_OPTIONS = { wildcard_one: '+', wildcard_some: '#', separator: '/' };

/** A subscription as aedes hands it to a persistence and gets it back (MQTT 5 fields included). */
interface SubscriptionRecord {
  qos: number;
  rh?: number;
  rap?: boolean;
  nl?: boolean;
  subscriptionIdentifier?: number;
}
type ClientSubscription = SubscriptionRecord & { topic: string };
/** A persistent subscription matched by topic: what aedes queues a message for. */
type TopicSubscription = SubscriptionRecord & { clientId: string; topic: string };

/** An outgoing or incoming packet as aedes keeps it: a publish, or the pubrel that replaces it. */
interface StoredPacket {
  cmd: string;
  messageId?: number;
  topic?: string;
  payload?: Buffer | string;
  brokerId?: string;
  brokerCounter?: number;
  /** mqtt-packet's, left out of what is stored */
  length?: number;
}

export interface RedisSessionStoreOptions {
  /** commands that fail at once while Redis is away (the cluster's: no offline queue) */
  redis: Redis;
  /** of every key the store writes: cluster.keyPrefix and the protocol */
  keyPrefix: string;
  /** messages one session's queue holds at most (mqtt.maxQueuedPerSession); more are not queued */
  maxQueued: number;
  /** how long a session outlives its client's last connection (mqtt.sessionExpiry) */
  sessionExpiryMs: number;
  /** tells the other nodes that a client's subscriptions changed (`noteReceived` on each) */
  broadcast(note: Buffer): Promise<void>;
  /** a write that no client waits on failed (a queue for the sessions offline, a broadcast) */
  onError(err: Error): void;
  /** messages not queued because their session's queue was full */
  onQueueFull(sessions: number): void;
}

/**
 * Queues a publish, once, for each session given: a message every node's broker queues (the bus
 * hands each node every message) is kept once, by its (brokerId, brokerCounter), which the bus's
 * origin makes the same on every node. A message already acknowledged (in the done set) is not
 * queued again. KEYS: per session, its subscriptions, queue, packets, done set; ARGV: packet
 * key, packet, max queued, default life (ms). Answers per session: 0 queued, 1 already there,
 * 2 queue full; negated when the session has no subscriptions left.
 */
const ENQUEUE = `
local key, packet, max, life = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local answers = {}
for i = 1, #KEYS, 4 do
  local subs, queue, packets, done = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  local ttl = redis.call('PTTL', subs)
  local answer
  if redis.call('HEXISTS', packets, 'k:' .. key) == 1 or redis.call('ZSCORE', done, key) then
    answer = 1
  elseif redis.call('ZCARD', queue) >= max then
    answer = 2
  else
    local last = redis.call('ZRANGE', queue, -1, -1, 'WITHSCORES')
    local order = 1
    if last[2] then order = tonumber(last[2]) + 1 end
    redis.call('ZADD', queue, order, key)
    redis.call('HSET', packets, 'k:' .. key, packet)
    local expiry = ttl
    if expiry < 0 then expiry = life end
    redis.call('PEXPIRE', queue, expiry)
    redis.call('PEXPIRE', packets, expiry)
    answer = 0
  end
  if ttl == -2 then answer = -answer - 1 end
  answers[#answers + 1] = answer
end
return answers`;

/**
 * Gives a queued publish its message id, found by its key; or puts a packet in the place of the
 * one with its message id (a pubrel after the PUBREC). KEYS: packets; ARGV: publish key ('' for
 * none), message id, packet ('' for a publish). Answers 1, or 0 when there is no such packet.
 */
const UPDATE = `
local packets, key, id = KEYS[1], ARGV[1], ARGV[2]
if key ~= '' and redis.call('HEXISTS', packets, 'k:' .. key) == 1 then
  local old = redis.call('HGET', packets, 'm:' .. key)
  if old and old ~= id then redis.call('HDEL', packets, 'i:' .. old) end
  redis.call('HSET', packets, 'm:' .. key, id, 'i:' .. id, key)
  return 1
end
local found = redis.call('HGET', packets, 'i:' .. id)
if not found or ARGV[3] == '' then return 0 end
redis.call('HSET', packets, 'k:' .. found, ARGV[3])
return 1`;

/**
 * Takes the packet with this message id out of the queue (its PUBACK or PUBCOMP came) and
 * remembers its key among the last `max` done, so a node that queues it late does not queue it
 * again. KEYS: packets, queue, done; ARGV: message id, max, life (ms). Answers the packet, or nil.
 */
const CLEAR = `
local packets, queue, done = KEYS[1], KEYS[2], KEYS[3]
local key = redis.call('HGET', packets, 'i:' .. ARGV[1])
if not key then return nil end
local packet = redis.call('HGET', packets, 'k:' .. key)
redis.call('HDEL', packets, 'k:' .. key, 'm:' .. key, 'i:' .. ARGV[1])
local order = redis.call('ZSCORE', queue, key)
if order then
  redis.call('ZREM', queue, key)
  redis.call('ZADD', done, order, key)
  redis.call('ZREMRANGEBYRANK', done, 0, -tonumber(ARGV[2]) - 1)
  redis.call('PEXPIRE', done, ARGV[3])
end
return packet`;

/**
 * The next page of a queue, in order: order, packet, message id ('' for none) for each entry
 * after `after`. KEYS: packets, queue; ARGV: after, page size.
 */
const PAGE = `
local entries = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local page = {}
for i = 1, #entries, 2 do
  page[#page + 1] = entries[i + 1]
  page[#page + 1] = redis.call('HGET', KEYS[1], 'k:' .. entries[i]) or ''
  page[#page + 1] = redis.call('HGET', KEYS[1], 'm:' .. entries[i]) or ''
end
return page`;

/** Removes subscriptions; a session left with none leaves the index. KEYS: subscriptions, index; ARGV: client id, topics. */
const UNSUBSCRIBE = `
redis.call('HDEL', KEYS[1], unpack(ARGV, 2))
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], ARGV[1]) end
return 0`;

/**
 * A session's life starts again (its client connected or left): each of its keys expires
 * `life` ms from now. KEYS: the session's keys, subscriptions first, then the index; ARGV:
 * life, expiry time (ms since the epoch), client id.
 */
const TOUCH = `
for i = 1, #KEYS - 1 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('ZADD', KEYS[#KEYS], ARGV[2], ARGV[3]) end
return 0`;

/** Sessions read per round trip when the subscription trie is loaded. */
const LOAD_PAGE = 500;
/** Queued packets read per round trip when a queue is streamed to its client. */
const STREAM_PAGE = 100;

interface Scripts {
  mqttEnqueue(...args: (string | number | Buffer)[]): Promise<number[]>;
  mqttUpdate(...args: (string | number | Buffer)[]): Promise<number>;
  mqttClearBuffer(...args: (string | number | Buffer)[]): Promise<Buffer | null>;
  mqttPageBuffer(...args: (string | number | Buffer)[]): Promise<Buffer[]>;
  mqttUnsubscribe(...args: string[]): Promise<number>;
  mqttTouch(...args: (string | number)[]): Promise<number>;
}

const DONE: Promise<void> = Promise.resolve();
const nothing = (): void => undefined;

/**
 * An aedes-persistence (11, promise API) whose sessions live in Redis, shared by every node of
 * a cluster (docs/scale-out.md): each client's subscriptions, its queue of outgoing QoS ≥ 1
 * packets and its incoming QoS 2 packets, so a client resumes its session on any node, including
 * after the node it was on died. Retained messages and wills stay in this node's memory store:
 * retained messages reach every node through the bus; a will belongs to its node's connection.
 *
 * Every node matches messages against every persistent subscription of the cluster (a trie kept
 * in step with the others through notes) and queues each for the sessions it matches; the
 * queue keeps one copy per message. Keys (after the prefix): `sessions` (client id → expiry),
 * and per client `subs:`, `out:` (order), `pkt:` (packets and their message ids), `done:`,
 * `in:`.
 */
export class RedisSessionStore {
  readonly #options: RedisSessionStoreOptions;
  readonly #redis: Redis & Scripts;
  readonly #local = new MemoryPersistence();
  #trie = new QlobberSub(TRIE_OPTIONS);
  /** the persistent (QoS ≥ 1) subscriptions in the trie, by client: what to take out when they change */
  #matched = new Map<string, Map<string, TopicSubscription>>();
  /** clients whose subscriptions changed while the trie was being loaded: read again once it is */
  #changedWhileLoading: Set<string> | undefined;
  /** settles once the last queueing did: the broker sends messages on in the order it got them */
  #enqueued: Promise<void> = DONE;
  #destroyed = false;
  #broker: unknown;

  constructor(options: RedisSessionStoreOptions) {
    this.#options = options;
    const redis = options.redis;
    redis.defineCommand('mqttEnqueue', { lua: ENQUEUE });
    redis.defineCommand('mqttUpdate', { numberOfKeys: 1, lua: UPDATE });
    redis.defineCommand('mqttClear', { numberOfKeys: 3, lua: CLEAR });
    redis.defineCommand('mqttPage', { numberOfKeys: 2, lua: PAGE });
    redis.defineCommand('mqttUnsubscribe', { numberOfKeys: 2, lua: UNSUBSCRIBE });
    redis.defineCommand('mqttTouch', { lua: TOUCH });
    this.#redis = redis as Redis & Scripts;
  }

  #key(kind: string, clientId?: string): string {
    return clientId === undefined ? `${this.#options.keyPrefix}${kind}` : `${this.#options.keyPrefix}${kind}:${clientId}`;
  }

  /** A session's keys, its subscriptions first (TOUCH reads them in this order). */
  #sessionKeys(clientId: string): string[] {
    return ['subs', 'out', 'pkt', 'done', 'in'].map((kind) => this.#key(kind, clientId));
  }

  /** the broker given to setup (aedes-persistence's API: its abstract suite reads it) */
  get broker(): unknown {
    return this.#broker;
  }

  async setup(broker: unknown): Promise<void> {
    this.#broker = broker;
    await this.#local.setup(broker);
    await this.resync();
  }

  /**
   * Loads the trie from Redis again, from scratch: at start, and after Redis was unreachable
   * (the notes sent meanwhile were lost).
   */
  async resync(): Promise<void> {
    const index = this.#key('sessions');
    const changed = new Set<string>();
    this.#changedWhileLoading = changed;
    try {
      await this.#load(index);
    } finally {
      this.#changedWhileLoading = undefined;
    }
    for (const clientId of changed) this.noteReceived(Buffer.from(clientId));
  }

  async #load(index: string): Promise<void> {
    await this.#redis.zremrangebyscore(index, '-inf', Date.now());
    const trie = new QlobberSub(TRIE_OPTIONS);
    const matched = new Map<string, Map<string, TopicSubscription>>();
    // Each round reads the next page of the index; its size bounds the rounds.
    for (let offset = 0; ; offset += LOAD_PAGE) {
      const ids = await this.#redis.zrange(index, offset, offset + LOAD_PAGE - 1);
      const pipeline = this.#redis.pipeline();
      for (const id of ids) pipeline.hgetall(this.#key('subs', id));
      const replies = (await pipeline.exec()) ?? [];
      ids.forEach((id, i) => {
        const [err, stored] = replies[i]!;
        if (!err) fill(trie, matched, id, parseSubscriptions(stored as Record<string, string>));
      });
      if (ids.length < LOAD_PAGE) break;
    }
    this.#trie = trie;
    this.#matched = matched;
  }

  /** Another node changed a client's subscriptions: they are read again. */
  readonly noteReceived = (note: Buffer): void => {
    const clientId = note.toString();
    this.#redis.hgetall(this.#key('subs', clientId)).then((stored) => {
      this.#replace(clientId, parseSubscriptions(stored));
    }, (err: Error) => this.#options.onError(err));
  };

  #replace(clientId: string, subscriptions: ClientSubscription[]): void {
    this.#changedWhileLoading?.add(clientId);
    this.#forget(clientId);
    fill(this.#trie, this.#matched, clientId, subscriptions);
  }

  #forget(clientId: string): void {
    this.#changedWhileLoading?.add(clientId);
    const old = this.#matched.get(clientId);
    if (!old) return;
    for (const topic of old.keys()) this.#trie.remove(topic, { clientId, topic });
    this.#matched.delete(clientId);
  }

  #changed(clientId: string): void {
    this.#options.broadcast(Buffer.from(clientId)).catch((err: Error) => this.#options.onError(err));
  }

  /** The session's life starts again: at its client's connection and when it leaves. */
  async touch(clientId: string): Promise<void> {
    const life = this.#options.sessionExpiryMs;
    const keys = [...this.#sessionKeys(clientId), this.#key('sessions')];
    await this.#redis.mqttTouch(keys.length, ...keys, life, Date.now() + life, clientId);
  }

  // -------------------------------------------------------------------------------------------
  // Retained messages and wills: this node's memory

  storeRetained(packet: PublishPacket): Promise<void> {
    return this.#local.storeRetained(packet);
  }

  createRetainedStream(pattern: string): Readable {
    return this.#local.createRetainedStream(pattern);
  }

  createRetainedStreamCombi(patterns: string[]): Readable {
    return this.#local.createRetainedStreamCombi(patterns);
  }

  putWill(client: Pick<Client, 'id'>, packet: PublishPacket): Promise<unknown> {
    return this.#local.putWill(client, packet);
  }

  getWill(client: Pick<Client, 'id'>): Promise<unknown> {
    return this.#local.getWill(client);
  }

  delWill(client: Pick<Client, 'id'>): Promise<unknown> {
    return this.#local.delWill(client);
  }

  streamWill(brokers?: Record<string, number>): Readable {
    return this.#local.streamWill(brokers);
  }

  // -------------------------------------------------------------------------------------------
  // Subscriptions

  async addSubscriptions(client: Pick<Client, 'id'>, subscriptions: Subscription[]): Promise<void> {
    // The last of a topic in one call wins, as in the memory store.
    const records = new Map<string, SubscriptionRecord>();
    for (const { topic, ...record } of subscriptions as ClientSubscription[]) records.set(topic, record);
    if (records.size === 0) return;
    const life = this.#options.sessionExpiryMs;
    const subs = this.#key('subs', client.id);
    await this.#redis.multi()
      .hset(subs, Object.fromEntries([...records].map(([topic, record]) => [topic, JSON.stringify(record)])))
      .pexpire(subs, life)
      .zadd(this.#key('sessions'), Date.now() + life, client.id)
      .exec();
    const current = new Map(this.#matched.get(client.id) ?? []);
    for (const [topic, record] of records) {
      if (record.qos > 0) current.set(topic, { clientId: client.id, topic, ...record });
      else current.delete(topic);
    }
    this.#replace(client.id, [...current.values()]);
    this.#changed(client.id);
  }

  async removeSubscriptions(client: Pick<Client, 'id'>, topics: string[]): Promise<void> {
    if (topics.length > 0) await this.#redis.mqttUnsubscribe(this.#key('subs', client.id), this.#key('sessions'), client.id, ...topics);
    this.#changedWhileLoading?.add(client.id);
    const current = this.#matched.get(client.id);
    if (current) {
      for (const topic of topics) {
        if (current.delete(topic)) this.#trie.remove(topic, { clientId: client.id, topic });
      }
      if (current.size === 0) this.#matched.delete(client.id);
    }
    this.#changed(client.id);
  }

  /**
   * aedes reads them when a client resumes its session: the trie takes them too, so the node
   * serving the client queues for it whatever notes it missed.
   */
  async subscriptionsByClient(client: Pick<Client, 'id'>): Promise<ClientSubscription[]> {
    const subscriptions = parseSubscriptions(await this.#redis.hgetall(this.#key('subs', client.id)));
    this.#replace(client.id, subscriptions);
    return subscriptions;
  }

  subscriptionsByTopic(topic: string): Promise<TopicSubscription[]> {
    return Promise.resolve(this.#trie.match(topic));
  }

  /** Ends the session: a clean session starts from nothing [MQTT-3.1.2-6]. */
  async cleanSubscriptions(client: Pick<Client, 'id'>): Promise<void> {
    const [subs, out, pkt, done] = this.#sessionKeys(client.id);
    await this.#redis.multi().del(subs!, out!, pkt!, done!).zrem(this.#key('sessions'), client.id).exec();
    const had = this.#matched.has(client.id);
    this.#forget(client.id);
    if (had) this.#changed(client.id);
  }

  async countOffline(): Promise<{ subsCount: number; clientsCount: number }> {
    const index = this.#key('sessions');
    const [, clients] = (await this.#redis.multi().zremrangebyscore(index, '-inf', Date.now()).zcard(index).exec())!;
    return { subsCount: this.#trie.subscriptionsCount, clientsCount: clients![1] as number };
  }

  /** The clients whose session subscribes `topic` itself (aedes-persistence's API; aedes does not call it). */
  getClientList(topic: string): Readable {
    const redis = this.#redis;
    const index = this.#key('sessions');
    const subs = (id: string) => this.#key('subs', id);
    return Readable.from((async function* listed() {
      const ids = await redis.zrange(index, 0, -1);
      const pipeline = redis.pipeline();
      for (const id of ids) pipeline.hexists(subs(id), topic);
      const replies = (await pipeline.exec()) ?? [];
      for (let i = 0; i < ids.length; i++) if (replies[i]![1] === 1) yield ids[i]!;
    })());
  }

  // -------------------------------------------------------------------------------------------
  // Outgoing packets

  outgoingEnqueue(subscription: { clientId: string }, packet: PublishPacket): Promise<void> {
    return this.outgoingEnqueueCombi([subscription], packet);
  }

  /**
   * Queues a message for the sessions whose subscriptions it matched. Resolves in call order:
   * the broker then sends messages on to its online clients in the order the bus gave them,
   * whichever needed a write to Redis. A write that fails is reported, not thrown: the clients
   * online here still get the message.
   */
  outgoingEnqueueCombi(subscriptions: { clientId: string }[], packet: PublishPacket): Promise<void> {
    if (subscriptions.length === 0) return this.#enqueued;
    const keys: string[] = [];
    for (const { clientId } of subscriptions) keys.push(this.#key('subs', clientId), this.#key('out', clientId), this.#key('pkt', clientId), this.#key('done', clientId));
    const { maxQueued, sessionExpiryMs } = this.#options;
    const written = this.#redis.mqttEnqueue(keys.length, ...keys, packetKey(packet as StoredPacket), encodePacket(packet as StoredPacket), maxQueued, sessionExpiryMs)
      .then((answers) => this.#enqueuedFor(subscriptions, answers), (err: Error) => this.#options.onError(err));
    const queued = this.#enqueued.then(() => written);
    this.#enqueued = queued;
    return queued;
  }

  #enqueuedFor(subscriptions: { clientId: string }[], answers: number[]): void {
    let full = 0;
    answers.forEach((answer, i) => {
      if (answer < 0) {
        // The session expired (or ended on a node whose note was lost): its trie entries go.
        this.#forget(subscriptions[i]!.clientId);
        answer = -answer - 1;
      }
      if (answer === 2) full++;
    });
    if (full > 0) this.#options.onQueueFull(full);
  }

  async outgoingUpdate(client: Pick<Client, 'id'>, packet: StoredPacket): Promise<void> {
    // A publish is found by its key; another packet (a pubrel) takes the place of the one with its message id.
    const publish = packet.cmd === 'publish';
    const updated = await this.#redis.mqttUpdate(this.#key('pkt', client.id), publish ? packetKey(packet) : '', String(packet.messageId), publish ? '' : encodePacket(packet));
    if (updated === 0) throw new Error('no such packet');
  }

  /** aedes calls it at every PUBACK and PUBCOMP, a clean session's too, which has nothing queued. */
  async outgoingClearMessageId(client: SessionClient, packet: { messageId?: number }): Promise<StoredPacket | undefined> {
    if (packet?.messageId === undefined || isClean(client)) return undefined;
    const stored = await this.#redis.mqttClearBuffer(this.#key('pkt', client.id), this.#key('out', client.id), this.#key('done', client.id), String(packet.messageId), this.#options.maxQueued, this.#options.sessionExpiryMs);
    if (!stored) return undefined;
    return decodePacket(stored, packet.messageId);
  }

  /** The session's queue in order, read a page at a time, as it is when each page is read. */
  outgoingStream(client: Pick<Client, 'id'>): Readable {
    const redis = this.#redis;
    const packets = this.#key('pkt', client.id);
    const queue = this.#key('out', client.id);
    return Readable.from((async function* queued() {
      let after = '0';
      // Each round reads the next page after the last order seen; the queue's bound bounds the rounds.
      for (;;) {
        const page = await redis.mqttPageBuffer(packets, queue, after, STREAM_PAGE);
        for (let i = 0; i < page.length; i += 3) {
          after = page[i]!.toString();
          const stored = page[i + 1]!;
          if (stored.length === 0) continue;
          const messageId = page[i + 2]!.length > 0 ? Number(page[i + 2]!.toString()) : undefined;
          yield decodePacket(stored, messageId);
        }
        if (page.length < STREAM_PAGE * 3) return;
      }
    })());
  }

  // -------------------------------------------------------------------------------------------
  // Incoming QoS 2 packets, between PUBLISH and PUBREL: a clean session's in this node's memory,
  // since it ends with its connection; a persistent session's in Redis

  async incomingStorePacket(client: SessionClient, packet: StoredPacket): Promise<void> {
    if (isClean(client)) return this.#local.incomingStorePacket(client, packet);
    const incoming = this.#key('in', client.id);
    await this.#redis.multi().hset(incoming, String(packet.messageId), encodePacket(packet)).pexpire(incoming, this.#options.sessionExpiryMs).exec();
  }

  async incomingGetPacket(client: SessionClient, packet: { messageId?: number }): Promise<StoredPacket> {
    if (isClean(client)) return this.#local.incomingGetPacket(client, packet);
    const stored = await this.#redis.hgetBuffer(this.#key('in', client.id), String(packet.messageId));
    if (!stored) throw new Error('no such packet');
    return decodePacket(stored, packet.messageId);
  }

  async incomingDelPacket(client: SessionClient, packet: { messageId?: number }): Promise<void> {
    if (isClean(client)) return this.#local.incomingDelPacket(client, packet);
    if (await this.#redis.hdel(this.#key('in', client.id), String(packet.messageId)) === 0) throw new Error('no such packet');
  }

  /** At a clean session's start and end: a persistent session it replaces had its packets in Redis. */
  async cleanIncoming(client: SessionClient): Promise<void> {
    await this.#local.cleanIncoming(client);
    await this.#redis.del(this.#key('in', client.id));
  }

  /** Leaves Redis as it is (the sessions are the cluster's) and the connection to its owner. */
  async destroy(): Promise<void> {
    if (this.#destroyed) throw new Error('destroyed called twice!');
    this.#destroyed = true;
    await this.#enqueued.then(nothing);
    await this.#local.destroy();
  }
}

/** aedes's Client, or the bare `{ id }` aedes and the abstract suite also pass. */
type SessionClient = Pick<Client, 'id'> & { clean?: boolean };

/** A clean session [MQTT-3.1.2-6] ends with its connection: nothing of it goes to Redis. */
function isClean(client: SessionClient): boolean {
  return client.clean === true;
}

function fill(trie: SubscriptionTrie, matched: Map<string, Map<string, TopicSubscription>>, clientId: string, subscriptions: ClientSubscription[]): void {
  let mine: Map<string, TopicSubscription> | undefined;
  for (const { topic, ...record } of subscriptions) {
    if (record.qos === 0) continue;
    const subscription: TopicSubscription = { clientId, topic, ...record };
    trie.add(topic, subscription);
    (mine ??= new Map()).set(topic, subscription);
  }
  if (mine) matched.set(clientId, mine);
}

function parseSubscriptions(stored: Record<string, string>): ClientSubscription[] {
  return Object.entries(stored).map(([topic, record]) => ({ topic, ...JSON.parse(record) as SubscriptionRecord }));
}

/** A queued packet's identity: the same on every node for one bus message (see BusOrigin). */
function packetKey(packet: StoredPacket): string {
  return `${packet.brokerId} ${packet.brokerCounter}`;
}

/** A packet as Redis keeps it: a 4-byte length, the fields but the payload as JSON, the payload bytes. */
function encodePacket(packet: StoredPacket): Buffer {
  const { payload, length: _length, ...fields } = packet;
  const head = Buffer.from(JSON.stringify(typeof payload === 'string' ? { ...fields, text: true } : fields));
  const body = payload === undefined ? Buffer.alloc(0) : typeof payload === 'string' ? Buffer.from(payload) : payload;
  const out = Buffer.allocUnsafe(4 + head.length + body.length);
  out.writeUInt32LE(head.length, 0);
  head.copy(out, 4);
  body.copy(out, 4 + head.length);
  return out;
}

/** The packet as aedes stored it, with the message id it has now. */
function decodePacket(bytes: Buffer, messageId: number | undefined): StoredPacket {
  const headLength = bytes.readUInt32LE(0);
  const { text, ...fields } = JSON.parse(bytes.toString('utf8', 4, 4 + headLength), revive) as StoredPacket & { text?: true };
  if (fields.cmd !== 'publish') return { ...fields, messageId };
  const body = bytes.subarray(4 + headLength);
  const packet = new Packet({ ...fields, payload: text ? body.toString() : Buffer.from(body) });
  packet.messageId = messageId;
  return packet;
}

/** Buffers in a packet's fields (MQTT 5 properties: correlation data) come back as Buffers. */
function revive(_key: string, value: unknown): unknown {
  const candidate = value as { type?: unknown; data?: unknown } | null;
  return candidate && candidate.type === 'Buffer' && Array.isArray(candidate.data) ? Buffer.from(candidate.data as number[]) : value;
}
