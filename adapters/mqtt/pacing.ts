import { realClock, type Clock } from '../../src/index.js';

/**
 * How long a subscriber's full socket may hold the publishers of what it receives: one that keeps
 * up drains within milliseconds, so past this it is behind, and its own slow-consumer policy
 * (QoS 0 dropped past mqtt.maxOutboundBuffer, disconnected after mqtt.drainTimeout) takes over
 * instead of slowing everybody else down to it. Short, because while it runs every subscriber of
 * those publishers waits too: one stuck client costs the others at most this once per stall.
 */
export const PACING_PATIENCE_MS = 500;

/** What pacing needs of a subscriber's connection (GuardedConnection). */
export interface PacedConnection {
  /** a write found the socket full and 'drain' has not come yet */
  readonly needsDrain: boolean;
  readonly destroyed: boolean;
  once(event: 'drain' | 'close', listener: () => void): unknown;
  off(event: 'drain' | 'close', listener: () => void): unknown;
}

export interface PacingOptions {
  clock?: Clock;
  patienceMs?: number;
  /**
   * Runs `check` once the deliveries handed over so far are written: aedes writes each one in a
   * setImmediate of its own, and the first of a turn is queued before the check. Later ones of the
   * same turn may be written just after it; the next turn's check sees what they filled.
   */
  afterWrites?: (check: () => void) => void;
  /** a subscriber's socket was full once its deliveries were written: their publishers wait for it */
  onPaced?: () => void;
  /** a subscriber stayed full past the patience and stops pacing until it drains */
  onBehind?: () => void;
}

/** Deliveries handed over in this turn (to one connection, or to all), taken together. */
interface Turn {
  readonly taken: Promise<void>;
  readonly take: () => void;
}

function turn(): Turn {
  let take = nothing;
  const taken = new Promise<void>((resolve) => {
    take = resolve;
  });
  return { taken, take };
}

/**
 * Paces publishers to the MQTT subscribers that read what they publish, as bare aedes does: a
 * delivery is taken once it is written to the subscriber's socket and, when that write found the
 * socket full, once the socket drained. The publish waits for that, and with it the publisher's
 * acknowledgement and its next read. Without this the gateway reads on (one poll of a socket reads
 * up to 32 chunks of 64 KiB, all routed before aedes writes any of them), and what the subscriber
 * cannot take yet piles up in its buffer until QoS 0 deliveries are dropped.
 *
 * Deliveries handed over in one turn of the event loop are checked together, once they are
 * written: one promise per subscriber and turn, not per message. A subscriber that has not
 * drained within the patience is behind, not keeping up: it paces nobody until it drains again.
 */
export class SubscriberPacing {
  readonly #clock: Clock;
  readonly #patienceMs: number;
  readonly #afterWrites: (check: () => void) => void;
  readonly #onPaced: () => void;
  readonly #onBehind: () => void;
  #turn = new Map<PacedConnection, Turn>();
  /** this turn's deliveries to every connection, for a message that went to several */
  #everyone: Turn | undefined;
  /** one wait per full socket, shared by every turn that found it full */
  readonly #drains = new WeakMap<PacedConnection, Promise<void>>();
  readonly #behind = new WeakSet<PacedConnection>();

  constructor(options: PacingOptions = {}) {
    this.#clock = options.clock ?? realClock;
    this.#patienceMs = options.patienceMs ?? PACING_PATIENCE_MS;
    this.#afterWrites = options.afterWrites ?? setImmediate;
    this.#onPaced = options.onPaced ?? nothing;
    this.#onBehind = options.onBehind ?? nothing;
  }

  /** When a delivery just handed to `connection` is taken; undefined for one behind or closed, which paces nobody. */
  taken(connection: PacedConnection): Promise<void> | undefined {
    if (connection.destroyed || this.#behind.has(connection)) return undefined;
    let mine = this.#turn.get(connection);
    if (mine === undefined) {
      if (this.#turn.size === 0) this.#afterWrites(this.#check);
      mine = turn();
      this.#turn.set(connection, mine);
    }
    return mine.taken;
  }

  /**
   * When a delivery just handed to each of `connections` is taken by all of them. Rather than
   * a promise per message and subscriber, it waits for everything handed over in this turn, so a
   * fan-out costs one promise per turn; it may wait for a subscriber it did not go to, within the patience.
   */
  takenByAll(connections: readonly PacedConnection[]): Promise<void> | undefined {
    let pacing = false;
    for (const connection of connections) if (this.taken(connection) !== undefined) pacing = true;
    if (!pacing) return undefined;
    this.#everyone ??= turn();
    return this.#everyone.taken;
  }

  readonly #check = (): void => {
    const connections = this.#turn;
    const everyone = this.#everyone;
    this.#turn = new Map();
    this.#everyone = undefined;
    let waits: Promise<void>[] | undefined;
    for (const [connection, { take }] of connections) {
      if (!connection.needsDrain || connection.destroyed || this.#behind.has(connection)) {
        take();
        continue;
      }
      this.#onPaced();
      const drained = this.#drained(connection);
      drained.then(take, take);
      if (everyone) (waits ??= []).push(drained);
    }
    if (!everyone) return;
    if (waits === undefined) everyone.take();
    else Promise.all(waits).then(everyone.take, everyone.take);
  };

  #drained(connection: PacedConnection): Promise<void> {
    let wait = this.#drains.get(connection);
    if (wait === undefined) {
      wait = this.#wait(connection);
      this.#drains.set(connection, wait);
    }
    return wait;
  }

  #wait(connection: PacedConnection): Promise<void> {
    return new Promise((resolve) => {
      const settle = (behind: boolean): void => {
        this.#clock.clearTimeout(timer);
        connection.off('drain', drained);
        connection.off('close', drained);
        this.#drains.delete(connection);
        if (behind) {
          this.#behind.add(connection);
          this.#onBehind();
          connection.once('drain', () => this.#behind.delete(connection));
        }
        resolve();
      };
      const drained = (): void => settle(false);
      const timer = this.#clock.setTimeout(() => settle(!connection.destroyed), this.#patienceMs);
      // A shutdown does not wait for a subscriber to drain.
      timer.unref();
      connection.once('drain', drained);
      connection.once('close', drained);
    });
  }
}

function nothing(): void {}
