import type { Socket } from 'node:net';

/**
 * grpc-js restarts its idle clock when a call's HTTP/2 stream closes, which can come a tick before
 * or after the interceptor sees the call end: a close this much short of the timeout still counts.
 */
const CLOCK_SKEW_MS = 100;

/** A connection's calls in progress, and since when it has had none (ms since the epoch). */
interface Activity {
  calls: number;
  idleSince: number;
}

/**
 * Tells which closed connections grpc-js closed for being idle (`listeners.grpc.timeouts.idle`,
 * `grpc.max_connection_idle_ms`), which it does without a word. The adapter's server interceptor
 * (interceptor.ts) sees every call (health and reflection too) and the peer address of its
 * connection; a connection that closes after being without a call for the whole idle timeout was
 * closed by grpc-js, which closes such a connection at that mark, before its client could.
 */
export class IdleConnections {
  readonly #connections = new Map<string, Activity>();
  readonly #idleMs: number;
  readonly #closedIdle: () => void;

  constructor(idleMs: number, closedIdle: () => void) {
    this.#idleMs = idleMs;
    this.#closedIdle = closedIdle;
  }

  /**
   * Follows a connection from its acceptance (grpc-js's idle clock starts there too) to its close;
   * `peer` is its address as its calls' getPeer() reports it.
   */
  accepted(peer: string, socket: Socket): void {
    const activity: Activity = { calls: 0, idleSince: Date.now() };
    this.#connections.set(peer, activity);
    socket.once('close', () => {
      this.#connections.delete(peer);
      if (activity.calls === 0 && Date.now() - activity.idleSince >= this.#idleMs - CLOCK_SKEW_MS) this.#closedIdle();
    });
  }

  /** A call began on the connection of `peer`: returns what to call once when it ends, if that connection is followed. */
  callStarted(peer: string): (() => void) | undefined {
    const activity = this.#connections.get(peer);
    if (activity === undefined) return undefined;
    activity.calls++;
    return () => {
      if (--activity.calls === 0) activity.idleSince = Date.now();
    };
  }
}
