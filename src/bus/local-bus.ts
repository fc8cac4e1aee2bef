import type { Message } from '../message.js';
import { TopicTrie } from '../topic/trie.js';
import { emptied } from '../arrays.js';
import { TAKEN, type Bus, type BusHandler, type BusOrigin, type BusSubscription, type SubscribeOptions } from './bus.js';

interface Entry {
  readonly pattern: string;
  readonly handler: BusHandler;
  /** reports a rejection of the handler's promise: made once per subscription, not per delivery */
  readonly failed: (err: unknown) => void;
  /**
   * The last promise the handler returned, and that promise with its rejection reported: a
   * handler that takes a turn's deliveries together (the MQTT broker) returns one promise for
   * all of them, which then costs one reaction per turn instead of one per message.
   */
  lastTaking: Promise<unknown> | undefined;
  lastTaken: Promise<void> | undefined;
}

const EVERY_KEY = '';
const DONE: Promise<void> = Promise.resolve();
const nothing = (): void => undefined;

/**
 * The in-process bus: one topic trie of subscriptions (the router's trie), matched once per
 * publish. Deliveries happen inside `publish`, so publishing costs one trie walk and one call
 * per subscriber, and no promise beyond the one returned, unless a subscriber returns its own.
 */
export class LocalBus implements Bus {
  readonly #subscriptions = new TopicTrie<Entry>();
  readonly #responders = new TopicTrie<Entry>();
  /** subscribeAll's entries: an array copied on change, so a publish walks it without an iterator object */
  #everything: readonly Entry[] = [];
  readonly #onError: (err: unknown, pattern: string) => void;
  /** matched entries of the publishes under way; a handler that publishes nests one level */
  readonly #scratch: Entry[][] = [];
  #depth = 0;
  #rotation = 0;
  #closed = false;

  /** `onError` hears of a handler that threw; the other subscribers still get the message. */
  constructor(onError: (err: unknown, pattern: string) => void) {
    this.#onError = onError;
  }

  get subscriptionCount(): number {
    return this.#subscriptions.size;
  }

  /** `origin` is the bus across nodes' (RedisBus), which delivers through this one. */
  publish(message: Message, origin?: BusOrigin): Promise<void> {
    if (this.#closed) return Promise.reject(new Error('the bus is closed'));
    const hits = this.#scratch[this.#depth] ??= [];
    this.#depth++;
    let taking: Promise<void> | undefined;
    let more: Promise<void>[] | undefined;
    try {
      this.#subscriptions.match(message.key, this.#collect);
      const everything = this.#everything;
      for (let i = 0; i < everything.length; i++) hits.push(everything[i]!);
      for (let i = 0; i < hits.length; i++) {
        const pending = this.#call(hits[i]!, message, origin);
        if (pending === undefined) continue;
        if (taking === undefined) taking = pending;
        else (more ??= []).push(pending);
      }
    } finally {
      emptied(hits);
      this.#depth--;
    }
    if (taking === undefined) return TAKEN;
    if (more === undefined) return taking;
    more.push(taking);
    return Promise.all(more).then(nothing);
  }

  /** Adds a matched entry to the hits of the publish under way (the innermost, when they nest). */
  readonly #collect = (entry: Entry): void => {
    this.#scratch[this.#depth - 1]!.push(entry);
  };

  #entry(pattern: string, handler: BusHandler): Entry {
    return { pattern, handler, failed: (err) => this.#onError(err, pattern), lastTaking: undefined, lastTaken: undefined };
  }

  /** Hands over one delivery; a promise when the subscriber takes it asynchronously, never rejected. */
  #call(entry: Entry, message: Message, origin?: BusOrigin): Promise<void> | undefined {
    try {
      const taking = entry.handler(message, origin);
      if (!(taking instanceof Promise)) return undefined;
      if (taking !== entry.lastTaking) {
        entry.lastTaking = taking;
        entry.lastTaken = taking.then(nothing, entry.failed);
      }
      return entry.lastTaken;
    } catch (err) {
      this.#onError(err, entry.pattern);
      return undefined;
    }
  }

  subscribe(pattern: string, handler: BusHandler, options: SubscribeOptions = {}): Promise<BusSubscription> {
    if (this.#closed) return Promise.reject(new Error('the bus is closed'));
    const entry = this.#entry(pattern, handler);
    const publishes = !(options.responder && options.requestsOnly);
    if (publishes) this.#subscriptions.add(pattern, entry);
    if (options.responder) this.#responders.add(pattern, entry);
    let open = true;
    return Promise.resolve({
      pattern,
      close: () => {
        if (open) {
          open = false;
          if (publishes) this.#subscriptions.remove(pattern, entry);
          if (options.responder) this.#responders.remove(pattern, entry);
        }
        return DONE;
      },
    });
  }

  subscribeAll(handler: BusHandler): Promise<BusSubscription> {
    if (this.#closed) return Promise.reject(new Error('the bus is closed'));
    const entry = this.#entry(EVERY_KEY, handler);
    this.#everything = [...this.#everything, entry];
    return Promise.resolve({
      pattern: EVERY_KEY,
      close: () => {
        this.#everything = this.#everything.filter((e) => e !== entry);
        return DONE;
      },
    });
  }

  deliverToOne(message: Message): Promise<boolean> {
    const candidates: Entry[] = [];
    this.#responders.match(message.key, (entry) => {
      candidates.push(entry);
    });
    if (candidates.length === 0) return Promise.resolve(false);
    const taking = this.#call(candidates[this.#rotation++ % candidates.length]!, message);
    return taking === undefined ? Promise.resolve(true) : taking.then(() => true);
  }

  close(): Promise<void> {
    this.#closed = true;
    return DONE;
  }
}
