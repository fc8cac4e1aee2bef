import type { Socket } from 'node:net';
import { ServerInterceptingCall, type ServerInterceptingCallInterface, type ServerInterceptor } from '@grpc/grpc-js';

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
 * `grpc.max_connection_idle_ms`), which it does without a word. A server interceptor sees every
 * call (health and reflection too) and the peer address of its connection; a connection that
 * closes after being without a call for the whole idle timeout was closed by it, since grpc-js
 * closes such a connection at that mark, before its client could.
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

  readonly interceptor: ServerInterceptor = (_method, call) => {
    const activity = this.#connections.get(call.getPeer());
    if (activity === undefined) return new ServerInterceptingCall(call);
    activity.calls++;
    return new TrackedCall(call, () => {
      if (--activity.calls === 0) activity.idleSince = Date.now();
    });
  };
}

type CallListener = Parameters<ServerInterceptingCallInterface['start']>[0];
type CallStatus = Parameters<ServerInterceptingCallInterface['sendStatus']>[0];

/**
 * A call that reports its end once: the status the server sends, or the client cancelling it.
 * grpc-js's ServerInterceptingCall with a responder makes a closure for every message each way
 * (a PublishStream's messages and acks included); this one passes messages straight through.
 */
class TrackedCall extends ServerInterceptingCall {
  readonly #call: ServerInterceptingCallInterface;
  #ended: (() => void) | undefined;

  constructor(call: ServerInterceptingCallInterface, ended: () => void) {
    super(call);
    this.#call = call;
    this.#ended = ended;
  }

  #end(): void {
    const ended = this.#ended;
    this.#ended = undefined;
    ended?.();
  }

  override start(listener: CallListener): void {
    this.#call.start({
      onReceiveMetadata: (metadata) => listener.onReceiveMetadata(metadata),
      onReceiveMessage: (message) => listener.onReceiveMessage(message),
      onReceiveHalfClose: () => listener.onReceiveHalfClose(),
      onCancel: () => {
        this.#end();
        listener.onCancel();
      },
    });
  }

  override sendMessage(message: unknown, callback: () => void): void {
    this.#call.sendMessage(message, callback);
  }

  override sendStatus(status: CallStatus): void {
    this.#end();
    this.#call.sendStatus(status);
  }
}
