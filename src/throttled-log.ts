import type { Logger } from './log.js';

/**
 * A failure that can repeat once per message (a full disk under every write): counted each time,
 * logged at most once per interval with how many happened since the last line, so the log says
 * it is going on without one line per message.
 */
export class ThrottledLog {
  total = 0;
  #unlogged = 0;
  #loggedAt = -Infinity;

  constructor(
    readonly logger: Logger,
    readonly message: string,
    readonly intervalMs = 10_000,
  ) {}

  report(err: unknown, fields: Record<string, unknown> = {}): void {
    this.total++;
    this.#unlogged++;
    const now = Date.now();
    if (now - this.#loggedAt < this.intervalMs) return;
    this.logger.error({ ...fields, err, failures: this.#unlogged }, this.message);
    this.#unlogged = 0;
    this.#loggedAt = now;
  }
}
