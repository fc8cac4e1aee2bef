import { ServerInterceptingCall, type Metadata, type ServerInterceptingCallInterface, type ServerInterceptor } from '@grpc/grpc-js';
import type { IdleConnections } from './idle.js';

type CallListener = Parameters<ServerInterceptingCallInterface['start']>[0];
type CallStatus = Parameters<ServerInterceptingCallInterface['sendStatus']>[0];

/** A call's answers written as HTTP/2 takes them, without grpc-js's Duplex stream in between. */
export interface DirectWrites {
  /** `written` runs once HTTP/2 has taken the message (not when the call was cancelled first) */
  sendMessage(message: unknown, written: () => void): void;
}

/**
 * The calls under the handlers of direct-write methods, by the metadata those handlers get:
 * grpc-js hands a handler the metadata its interceptors passed on, and nothing else of theirs.
 */
const directCalls = new WeakMap<Metadata, DirectWrites>();

/**
 * Where a direct-write method's handler writes, for the call whose metadata is `metadata`.
 * grpc-js's Duplex hands HTTP/2 one message at a time, the next once the previous one has left,
 * which costs a turn of the event loop and a socket write per message; written to the call below
 * it, the messages of a turn queue in the HTTP/2 stream and leave in one write.
 */
export function directWritesOf(metadata: Metadata): DirectWrites | undefined {
  return directCalls.get(metadata);
}

/**
 * The adapter's one server interceptor; grpc-js runs every call through it, health and
 * reflection included. It reports each call's end to the idle tracking, and makes the calls of
 * `directMethods` (full paths, `/package.Service/Method`) writable through {@link directWritesOf}.
 */
export function gatewayInterceptor(idle: IdleConnections, directMethods: ReadonlySet<string>): ServerInterceptor {
  return (method, call) => new GatewayCall(call, idle.callStarted(call.getPeer()), directMethods.has(method.path));
}

/**
 * A call that reports its end once: the status the server sends, or the client cancelling it.
 * grpc-js's ServerInterceptingCall with a responder makes a closure for every message each way
 * (a PublishStream's messages and acks included); this one passes messages straight through.
 */
class GatewayCall extends ServerInterceptingCall {
  readonly #call: ServerInterceptingCallInterface;
  #ended: (() => void) | undefined;
  readonly #direct: boolean;

  constructor(call: ServerInterceptingCallInterface, ended: (() => void) | undefined, direct: boolean) {
    super(call);
    this.#call = call;
    this.#ended = ended;
    this.#direct = direct;
  }

  #end(): void {
    const ended = this.#ended;
    this.#ended = undefined;
    ended?.();
  }

  override start(listener: CallListener): void {
    this.#call.start({
      onReceiveMetadata: (metadata) => {
        if (this.#direct) directCalls.set(metadata, this.#call);
        listener.onReceiveMetadata(metadata);
      },
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
