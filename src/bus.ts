import mqemitter from 'mqemitter';
import type { Message } from './message.js';
import { patternProblem } from './message.js';

/** What travels on the bus: the fields aedes reads from an mqemitter packet, plus the Message. */
export interface BusPacket {
  cmd: 'publish';
  topic: string;
  payload: Buffer;
  qos: 0 | 1 | 2;
  retain: boolean;
  message: Message;
}

export type BusHandler = (message: Message) => void;

/**
 * Publishes in LocalBus's place. The embedded MQTT broker is one: it stores retained messages,
 * queues them for offline persistent sessions and numbers them (brokerId, brokerCounter) before
 * they reach the emitter, so messages from every protocol get the broker's semantics.
 */
export interface BusPublisher {
  publish(packet: BusPacket): Promise<void>;
  /** The Message behind a packet that reached the emitter without one (aedes copies packets field by field). */
  messageOf(packet: mqemitter.Message): Message | undefined;
}

/** A bus an embedded broker can run on: the broker shares its emitter and publishes for it. */
export interface BrokerBus extends Bus {
  readonly emitter: mqemitter.MQEmitter;
  /** `undefined` gives publishing back to the bus. */
  usePublisher(publisher: BusPublisher | undefined): void;
}

export function isBrokerBus(bus: Bus): bus is BrokerBus {
  return typeof (bus as Partial<BrokerBus>).usePublisher === 'function' && (bus as Partial<BrokerBus>).emitter !== undefined;
}

export interface BusSubscription {
  readonly pattern: string;
  close(): Promise<void>;
}

/**
 * Fan-out of published messages to subscribers of every protocol. The default is in-process
 * (mqemitter, the emitter aedes itself runs on); cluster mode swaps in mqemitter-redis.
 */
export interface SubscribeOptions {
  /** the subscriber can answer requests (WS, gRPC and MQTT can; SSE cannot) */
  responder?: boolean;
}

export interface Bus {
  publish(message: Message): Promise<void>;
  subscribe(pattern: string, handler: BusHandler, options?: SubscribeOptions): Promise<BusSubscription>;
  /**
   * Hands a request to one responder subscribed to its key (round robin), not to all of them.
   * Resolves false when there is none.
   */
  deliverToOne(message: Message): Promise<boolean>;
  /** how many local subscriptions there are, for metrics */
  readonly subscriptionCount: number;
  close(): Promise<void>;
}

/** [MQTT-4.7.2-1]: a filter starting with a wildcard must not match topics that start with `$`. */
function wildcardFirst(pattern: string): boolean {
  return pattern.startsWith('+') || pattern.startsWith('#');
}

/** Whether a topic filter matches a key, with MQTT's rules. */
export function filterMatches(pattern: string, key: string): boolean {
  if (wildcardFirst(pattern) && key.startsWith('$')) return false;
  const filter = pattern.split('/');
  const levels = key.split('/');
  for (let i = 0; i < filter.length; i++) {
    const f = filter[i]!;
    if (f === '#') return true;
    if (i >= levels.length) return false;
    if (f !== '+' && f !== levels[i]) return false;
  }
  return filter.length === levels.length;
}

interface Responder {
  pattern: string;
  handler: BusHandler;
}

export class LocalBus implements BrokerBus {
  readonly emitter: mqemitter.MQEmitter;
  #publisher: BusPublisher | undefined;
  #subscriptions = 0;
  readonly #responders: Responder[] = [];
  #nextResponder = 0;

  constructor(emitter?: mqemitter.MQEmitter) {
    // matchEmptyLevels makes `+` match the empty level in `a//b`, as MQTT requires.
    this.emitter = emitter ?? mqemitter({ concurrency: 0, matchEmptyLevels: true });
  }

  get subscriptionCount(): number {
    return this.#subscriptions;
  }

  usePublisher(publisher: BusPublisher | undefined): void {
    this.#publisher = publisher;
  }

  publish(message: Message): Promise<void> {
    const packet: BusPacket = {
      cmd: 'publish',
      topic: message.key,
      payload: message.payload,
      qos: message.qos,
      retain: message.retain === true,
      message,
    };
    if (this.#publisher) return this.#publisher.publish(packet);
    return new Promise((resolve, reject) => {
      this.emitter.emit(packet, (err) => (err ? reject(err) : resolve()));
    });
  }

  deliverToOne(message: Message): Promise<boolean> {
    const candidates = this.#responders.filter((r) => filterMatches(r.pattern, message.key));
    if (candidates.length === 0) return Promise.resolve(false);
    const chosen = candidates[this.#nextResponder++ % candidates.length]!;
    chosen.handler(message);
    return Promise.resolve(true);
  }

  subscribe(pattern: string, handler: BusHandler, options: SubscribeOptions = {}): Promise<BusSubscription> {
    const problem = patternProblem(pattern);
    if (problem) return Promise.reject(new Error(problem));
    const responder: Responder | undefined = options.responder ? { pattern, handler } : undefined;
    if (responder) this.#responders.push(responder);
    const skipDollar = wildcardFirst(pattern);
    const listener = (packet: mqemitter.Message, done: () => void) => {
      // Packets without a Message (the broker's own $SYS traffic) are for MQTT clients only.
      const message = (packet as Partial<BusPacket>).message ?? this.#publisher?.messageOf(packet);
      if (message && !(skipDollar && message.key.startsWith('$'))) handler(message);
      done();
    };
    return new Promise((resolve) => {
      this.emitter.on(pattern, listener, () => {
        this.#subscriptions++;
        let closed = false;
        resolve({
          pattern,
          close: () => new Promise<void>((done) => {
            if (closed) return done();
            closed = true;
            this.#subscriptions--;
            if (responder) this.#responders.splice(this.#responders.indexOf(responder), 1);
            this.emitter.removeListener(pattern, listener, () => done());
          }),
        });
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.emitter.close(() => resolve()));
  }
}
