import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { GatewayError } from '../errors.js';
import type { Message } from '../message.js';
import { filterMatches } from '../topic/rules.js';
import { decodeFrame, decodeMessage, encodeFrame, encodeMessage, type Frame } from '../cluster/wire.js';
import { WriteBatch } from '../cluster/write-batch.js';
import type { Bus, BusHandler, BusOrigin, BusSubscription, SubscribeOptions } from './bus.js';
import { LocalBus } from './local-bus.js';

/** Frame kinds on the bus channel and on a node's own channel. */
const PUBLISHED = 'P';
const PUBLISHED_DURABLE = 'Q';
const REQUEST = 'R';
/** A note for every other node (RedisBusOptions.onBroadcast), not a message. */
const NOTE = 'N';

/**
 * How many QoS ≥ 1 messages the fan-out stream keeps (approximately: MAXLEN ~): a node whose
 * Pub/Sub connection was down catches up on what it missed from there, up to this many.
 */
export const FANOUT_STREAM_LENGTH = 100_000;
/** Catch-up reads the stream in pages of this many entries, at most CATCH_UP_PAGES of them. */
const CATCH_UP_PAGE = 1000;
const CATCH_UP_PAGES = FANOUT_STREAM_LENGTH / CATCH_UP_PAGE + 1;

/**
 * Appends a QoS ≥ 1 message to the fan-out stream and publishes it with its stream id, in one
 * step: every node gets it at once over Pub/Sub, and a node that missed it reads it from the
 * stream by id. Its BusOrigin travels with it. KEYS: stream, channel; ARGV: origin node,
 * publisher, sequence, encoded message, MAXLEN.
 */
const PUBLISH_DURABLE_SCRIPT = `
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[5], '*', 'o', ARGV[1], 'p', ARGV[2], 's', ARGV[3], 'm', ARGV[4])
redis.call('PUBLISH', KEYS[2], '${PUBLISHED_DURABLE}' .. ARGV[1] .. ' ' .. id .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return id`;

export interface RedisBusOptions {
  /** commands; its offline queue is off, so a command fails at once while Redis is unreachable */
  command: Redis;
  /** subscriber mode; ioredis subscribes again after a reconnect */
  subscriber: Redis;
  nodeId: string;
  /** of every key and channel (cluster.keyPrefix) */
  prefix: string;
  /** whether a node's heartbeat is current: requests go to live nodes only */
  live: (node: string) => boolean;
  onError: (err: unknown, pattern: string) => void;
  /** a frame for this node that is not the bus's own (inbox answers, MQTT session takeover) */
  onDirect?: (frame: Frame) => void;
  /** a note another node sent every node (`broadcast`): its body */
  onBroadcast?: (body: Buffer, from: string) => void;
  /** a remote send failed (QoS 0 to other nodes, a request): the caller's promise says so too */
  onSendError?: (err: unknown) => void;
}

/** Stream ids compare as two integers, milliseconds then sequence. */
function after(a: string, b: string): boolean {
  const [am, as] = a.split('-').map(Number) as [number, number];
  const [bm, bs] = b.split('-').map(Number) as [number, number];
  return am > bm || (am === bm && as > bs);
}

/**
 * The bus across nodes on one Redis. Every node matches deliveries with its own trie (a
 * LocalBus): a publish is delivered to local subscribers at once, as embedded, and sent to the
 * other nodes on one broadcast channel, which each node subscribes to once (no pattern
 * subscription per filter: PUBLISH costs grow with patterns). QoS 0 rides Pub/Sub alone
 * (at-most-once across nodes). QoS ≥ 1 is appended to a stream and published with its stream
 * id in one script: a node whose subscriber connection dropped reads what it missed from the
 * stream when it is back, and drops what it already had by id.
 *
 * Requests (`deliverToOne`) go to a local responder when there is one, else to one live node
 * that registered a matching responder, on that node's own channel.
 */
export class RedisBus implements Bus {
  readonly #local: LocalBus;
  readonly #options: RedisBusOptions;
  readonly #channel: string;
  readonly #nodeChannel: string;
  readonly #stream: string;
  readonly #responders: string;
  readonly #retained: string;
  /** local responder patterns and how many subscriptions hold each */
  readonly #patterns = new Map<string, number>();
  /** the last fan-out stream entry this node has */
  #lastId = '0-0';
  /** while catching up after a reconnect, what Pub/Sub brings waits here, in order */
  #held: { broadcast: boolean; bytes: Buffer }[] | undefined;
  /** the connection dropped and came back again during a catch-up: one more is due */
  #catchUpAgain = false;
  /** publishes of one turn of the event loop leave in one write */
  readonly #batch: WriteBatch;
  #rotation = 0;
  #closed = false;
  #subscribed = false;
  /** BusOrigin.publisher of this process's messages: a new one each start, so counts never go back */
  readonly #publisher: string;
  #sequence = 0;

  constructor(options: RedisBusOptions) {
    this.#options = options;
    this.#local = new LocalBus(options.onError);
    const { prefix, nodeId } = options;
    this.#channel = `${prefix}bus`;
    this.#nodeChannel = `${prefix}node:${nodeId}`;
    this.#stream = `${prefix}bus:stream`;
    this.#responders = `${prefix}responders`;
    this.#retained = `${prefix}retained`;
    this.#publisher = `${nodeId}.${randomBytes(4).toString('hex')}`;
    this.#batch = new WriteBatch(options.command);
    options.command.defineCommand('junctionPublishDurable', { numberOfKeys: 2, lua: PUBLISH_DURABLE_SCRIPT });
  }

  /** Subscribes this node's channels and drops responder registrations a previous run left. */
  async open(): Promise<void> {
    const { command, subscriber, nodeId } = this.#options;
    const last = await command.xrevrange(this.#stream, '+', '-', 'COUNT', 1);
    if (last[0]) this.#lastId = last[0][0];
    const fields = await command.hkeys(this.#responders);
    const stale = fields.filter((field) => field.startsWith(`${nodeId} `));
    if (stale.length > 0) await command.hdel(this.#responders, ...stale);
    subscriber.on('messageBuffer', this.#onMessage);
    subscriber.on('ready', this.#onReconnect);
    await subscriber.subscribe(this.#channel, this.#nodeChannel);
    this.#subscribed = true;
  }

  get subscriptionCount(): number {
    return this.#local.subscriptionCount;
  }

  publish(message: Message): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('the bus is closed'));
    const { command, nodeId } = this.#options;
    this.#batch.hold();
    if (message.qos > 0) {
      const sequence = ++this.#sequence;
      void this.#local.publish(message, { publisher: this.#publisher, sequence });
      const bytes = encodeMessage(message);
      if (message.retain) this.#retain(message, bytes);
      return (command as RedisWithScripts).junctionPublishDurable(this.#stream, this.#channel, nodeId, this.#publisher, sequence, bytes, FANOUT_STREAM_LENGTH).then(() => undefined, (err: unknown) => {
        throw unreachable('the message could not be handed to the other nodes', err);
      });
    }
    void this.#local.publish(message);
    const bytes = encodeMessage(message);
    if (message.retain) this.#retain(message, bytes);
    // At-most-once across nodes: a QoS 0 message the other nodes cannot get is still delivered here.
    return command.publish(this.#channel, encodeFrame(PUBLISHED, nodeId, bytes)).then(() => undefined, (err: unknown) => {
      this.#options.onSendError?.(err);
    });
  }

  /**
   * The last retained message of each key, kept in Redis besides every node's broker, so a node
   * that starts later has them too (restoreRetained). An empty payload clears the key, as in MQTT.
   */
  #retain(message: Message, bytes: Buffer): void {
    const { command } = this.#options;
    const write = message.payload.length === 0 ? command.hdel(this.#retained, message.key) : command.hset(this.#retained, message.key, bytes);
    write.catch((err: unknown) => this.#options.onSendError?.(err));
  }

  /**
   * Hands this node's subscribers (the MQTT broker) the retained messages the cluster keeps, at
   * most `limit` of them: for a node that starts after they were published.
   */
  async restoreRetained(limit: number): Promise<number> {
    let cursor = '0';
    let restored = 0;
    // Each round reads the next page of the hash; the count bounds the rounds.
    do {
      const [next, entries] = await this.#options.command.hscanBuffer(this.#retained, cursor, 'COUNT', 500);
      cursor = next.toString();
      for (let i = 1; i < entries.length && restored < limit; i += 2, restored++) void this.#local.publish(decodeMessage(entries[i]!));
    } while (cursor !== '0' && restored < limit);
    return restored;
  }

  async subscribe(pattern: string, handler: BusHandler, options: SubscribeOptions = {}): Promise<BusSubscription> {
    const subscription = await this.#local.subscribe(pattern, handler, options);
    if (!options.responder) return subscription;
    // Without Redis the responder serves this node at once; the others learn of it on reconnection.
    await this.#register(pattern, 1).catch((err: unknown) => this.#options.onSendError?.(err));
    let open = true;
    return {
      pattern,
      close: async () => {
        if (!open) return;
        open = false;
        await subscription.close();
        await this.#register(pattern, -1).catch((err: unknown) => this.#options.onSendError?.(err));
      },
    };
  }

  /** Keeps this node's responder patterns in Redis, where other nodes look for a responder. */
  async #register(pattern: string, change: 1 | -1): Promise<void> {
    const count = (this.#patterns.get(pattern) ?? 0) + change;
    const field = `${this.#options.nodeId} ${pattern}`;
    if (count > 0) {
      this.#patterns.set(pattern, count);
      if (count === 1) await this.#options.command.hset(this.#responders, field, '1');
    } else {
      this.#patterns.delete(pattern);
      await this.#options.command.hdel(this.#responders, field);
    }
  }

  subscribeAll(handler: BusHandler): Promise<BusSubscription> {
    return this.#local.subscribeAll(handler);
  }

  async deliverToOne(message: Message): Promise<boolean> {
    if (await this.#local.deliverToOne(message)) return true;
    const { command, nodeId, live } = this.#options;
    const nodes = new Set<string>();
    const fields = await command.hkeys(this.#responders).catch((err: unknown) => {
      throw unreachable('no responder on this node, and the other nodes cannot be asked', err);
    });
    for (const field of fields) {
      const space = field.indexOf(' ');
      const node = field.slice(0, space);
      if (node !== nodeId && live(node) && filterMatches(field.slice(space + 1), message.key)) nodes.add(node);
    }
    if (nodes.size === 0) return false;
    const chosen = [...nodes][this.#rotation++ % nodes.size]!;
    await this.send(chosen, REQUEST, encodeMessage(message));
    return true;
  }

  /** A note to every other node on the bus channel (at-most-once, as Pub/Sub is). */
  async broadcast(body: Buffer): Promise<void> {
    await this.#options.command.publish(this.#channel, encodeFrame(NOTE, this.#options.nodeId, body)).catch((err: unknown) => {
      throw unreachable('the other nodes cannot be told', err);
    });
  }

  /** A frame to one node's own channel (at-most-once, as Pub/Sub is). */
  async send(node: string, kind: string, body: Buffer): Promise<void> {
    await this.#options.command.publish(`${this.#options.prefix}node:${node}`, encodeFrame(kind, this.#options.nodeId, body)).catch((err: unknown) => {
      throw unreachable(`node ${node} cannot be reached`, err);
    });
  }

  readonly #onMessage = (channel: Buffer, bytes: Buffer): void => {
    if (this.#closed) return;
    const broadcast = channel.length === this.#channel.length && channel.toString() === this.#channel;
    if (this.#held) this.#held.push({ broadcast, bytes });
    else this.#receive(bytes, broadcast);
  };

  #receive(bytes: Buffer, broadcast: boolean): void {
    const frame = decodeFrame(bytes);
    if (!broadcast) {
      if (frame.kind === REQUEST) void this.#local.deliverToOne(decodeMessage(frame.body));
      else this.#options.onDirect?.(frame);
      return;
    }
    const own = frame.from === this.#options.nodeId;
    if (frame.kind !== PUBLISHED_DURABLE) {
      if (own) return;
      if (frame.kind === NOTE) this.#options.onBroadcast?.(frame.body, frame.from);
      else void this.#local.publish(decodeMessage(frame.body));
      return;
    }
    // <stream id> <publisher> <sequence> <message>
    const body = frame.body;
    const idEnd = body.indexOf(0x20);
    const id = body.toString('latin1', 0, idEnd);
    if (!after(id, this.#lastId)) return;
    this.#lastId = id;
    if (own) return;
    const publisherEnd = body.indexOf(0x20, idEnd + 1);
    const sequenceEnd = body.indexOf(0x20, publisherEnd + 1);
    const origin: BusOrigin = { publisher: body.toString('latin1', idEnd + 1, publisherEnd), sequence: Number(body.toString('latin1', publisherEnd + 1, sequenceEnd)) };
    void this.#local.publish(decodeMessage(body.subarray(sequenceEnd + 1)), origin);
  }

  /**
   * The subscriber connection is back: Pub/Sub lost what was published meanwhile. QoS ≥ 1
   * messages are read from the stream after the last one this node had; Pub/Sub deliveries wait
   * until then, so each subscription still sees one publisher's messages in order.
   */
  readonly #onReconnect = (): void => {
    if (!this.#subscribed || this.#closed) return;
    if (this.#held) {
      this.#catchUpAgain = true;
      return;
    }
    this.#held = [];
    void this.#catchUp().catch((err: unknown) => this.#options.onSendError?.(err)).finally(() => {
      const held = this.#held ?? [];
      this.#held = undefined;
      for (const { broadcast, bytes } of held) this.#receive(bytes, broadcast);
      if (this.#catchUpAgain) {
        this.#catchUpAgain = false;
        this.#onReconnect();
      }
    });
  };

  async #catchUp(): Promise<void> {
    const { command, subscriber, nodeId } = this.#options;
    // Its reply comes after ioredis's own resubscription on that connection: from then on
    // Pub/Sub brings everything, and the stream has everything before.
    await subscriber.subscribe(this.#channel, this.#nodeChannel);
    if (command.status !== 'ready') await new Promise((resolve) => command.once('ready', resolve));
    // A Redis that restarted without its data forgot who answers requests here.
    if (this.#patterns.size > 0) await command.hset(this.#responders, Object.fromEntries([...this.#patterns.keys()].map((pattern) => [`${nodeId} ${pattern}`, '1'])));
    for (let page = 0; page < CATCH_UP_PAGES && !this.#closed; page++) {
      const entries = await command.xrangeBuffer(this.#stream, `(${this.#lastId}`, '+', 'COUNT', CATCH_UP_PAGE);
      // fields: o <node> p <publisher> s <sequence> m <message>
      for (const [id, fields] of entries) {
        this.#lastId = id.toString();
        if (fields[1]!.toString() === nodeId) continue;
        void this.#local.publish(decodeMessage(fields[7]!), { publisher: fields[3]!.toString(), sequence: Number(fields[5]!.toString()) });
      }
      if (entries.length < CATCH_UP_PAGE) return;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#local.close();
    const { command, subscriber, nodeId } = this.#options;
    subscriber.off('messageBuffer', this.#onMessage);
    subscriber.off('ready', this.#onReconnect);
    const fields = [...this.#patterns.keys()].map((pattern) => `${nodeId} ${pattern}`);
    this.#patterns.clear();
    if (fields.length > 0) await command.hdel(this.#responders, ...fields).catch(() => undefined);
  }
}

/** What a sender is told when Redis did not take its message: retry later, as for a full queue. */
function unreachable(what: string, err: unknown): GatewayError {
  return new GatewayError('overloaded', `Redis is unreachable: ${what} (${(err as Error).message})`, { retryAfterMs: 1000 });
}

interface RedisWithScripts extends Redis {
  junctionPublishDurable(stream: string, channel: string, origin: string, publisher: string, sequence: number, message: Buffer, maxLength: number): Promise<string>;
}
