import type { Closable, ConnectionContext } from './driver.js';

/**
 * A load connection's life, whatever its protocol: opening settles once (open, or failed with its
 * reason, within a timeout), and a close after it opened is a drop reported to the run, unless
 * close() asked for it. Subclasses say what opening waits for and how the transport is cut.
 */
export abstract class Link implements Closable {
  #state: 'opening' | 'open' | 'closing' = 'opening';
  #opening: { resolve(): void; reject(error: Error): void; timer: NodeJS.Timeout } | undefined;

  constructor(readonly ctx: ConnectionContext) {}

  /** Waits for ready() or fail(); past `timeoutMs` it fails with `late`. */
  protected opening(timeoutMs: number, late: string, resolve: () => void, reject: (error: Error) => void): void {
    const timer = setTimeout(() => this.fail(late), timeoutMs);
    this.#opening = { resolve, reject, timer };
  }

  protected get isOpen(): boolean {
    return this.#state === 'open';
  }

  /** Settles the opening; no effect once settled. */
  protected ready(): void {
    const opening = this.#opening;
    if (!opening) return;
    this.#opening = undefined;
    clearTimeout(opening.timer);
    this.#state = 'open';
    this.opened();
    opening.resolve();
  }

  /** Once open, before opening settles; the default is nothing. */
  protected opened(): void {}

  /** Fails the opening and cuts the transport; no effect once open. */
  protected fail(reason: string): void {
    const opening = this.#opening;
    if (!opening) return;
    this.#opening = undefined;
    clearTimeout(opening.timer);
    this.#state = 'closing';
    opening.reject(new Error(reason));
    this.cut();
  }

  /** Drops the transport at once. */
  protected abstract cut(): void;

  /** Every send not yet done fails with `reason`: the connection is gone. */
  protected abandon(_reason: string): void {}

  /** The transport closed: a failed opening (`whileOpening`), else a drop unless close() was called. */
  protected closed(reason: string, whileOpening = reason): void {
    if (this.#opening) return this.fail(whileOpening);
    const dropped = this.#state === 'open';
    this.#state = 'closing';
    this.abandon(reason);
    if (dropped) this.ctx.onDrop(reason);
  }

  /** What close() calls first: a close from now on is no drop. */
  protected closing(): void {
    this.#state = 'closing';
  }

  abstract close(): Promise<void>;
}
