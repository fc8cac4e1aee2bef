import type { Redis } from 'ioredis';

/**
 * Holds back a connection's writes until the current turn of the event loop is over, so that the
 * commands issued meanwhile (the publishes of every request read in one poll of the sockets)
 * leave in one write and reach Redis in one read. A PUBLISH costs Redis about a microsecond; the
 * system calls around it, one write here and one read there per command, cost tens
 * (docs/scale-out.md, "Cost"). Commands keep their order and their own replies; nothing waits
 * longer than the rest of the turn.
 */
export class WriteBatch {
  readonly #redis: Redis;
  #held: Redis['stream'] | undefined;

  constructor(redis: Redis) {
    this.#redis = redis;
  }

  /** Call before issuing commands: from the first call of a turn, writes wait for its end. */
  hold(): void {
    if (this.#held) return;
    const socket = this.#redis.stream;
    // Not connected: commands are refused at once (no offline queue), there is nothing to hold.
    if (!socket?.writable) return;
    socket.cork();
    this.#held = socket;
    setImmediate(this.#release);
  }

  readonly #release = (): void => {
    const socket = this.#held;
    this.#held = undefined;
    socket?.uncork();
  };
}
