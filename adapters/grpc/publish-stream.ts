import type { ServerDuplexStream, StatusObject } from '@grpc/grpc-js';
import { newMessageId, toGatewayError, type AdapterContext, type BufferLimits, type ErrorCode, type GatewayError, type Message } from '../../src/index.js';
import type { DirectWrites } from './interceptor.js';
import { acceptedAckBytes, errorOf, messageFromProto, type CallContext } from './mapping.js';
import type { ErrorOut, MessageIn, PublishAckOut } from './proto.js';

/** An ack as written: accepted ones already encoded, refusals as objects for the encoder */
export type PublishAckAnswer = PublishAckOut | Buffer;

export interface PublishStreamDeps {
  dispatch: AdapterContext['dispatch'];
  /** the call under grpc-js's Duplex, which acks are written to (interceptor.ts) */
  writes: DirectWrites;
  call: CallContext;
  window: BufferLimits;
  maxPayloadSize: () => number;
  /** why the caller may not publish this message (`forbidden`), or undefined when it may */
  authorize: (message: Message) => GatewayError | undefined;
  /** counts a refused message, as the sender sees it */
  rejected: (code: ErrorCode) => void;
}

/**
 * One PublishStream call. Each message is dispatched as it arrives and acked when the dispatch
 * settles, with an error in the ack when it was refused. Reading stops (the call is paused, so
 * HTTP/2 flow control holds the client) while the window of unacked messages is full, acks the
 * client has not read included; memory per stream stays within the window.
 */
export class PublishStreamSession {
  readonly #stream: ServerDuplexStream<MessageIn, PublishAckAnswer>;
  readonly #deps: PublishStreamDeps;
  #sequence = 0;
  #inFlight = 0;
  #inFlightBytes = 0;
  #paused = false;
  #unsentAcks = 0;
  #halfClosed = false;
  /** the gateway is stopping: reading stays paused */
  #draining = false;
  #closed = false;
  #idleWaiters: (() => void)[] = [];

  constructor(stream: ServerDuplexStream<MessageIn, PublishAckAnswer>, deps: PublishStreamDeps) {
    this.#stream = stream;
    this.#deps = deps;
    stream.on('data', (input: MessageIn) => this.#receive(input));
    stream.on('end', () => {
      this.#halfClosed = true;
      this.#maybeFinish();
    });
    stream.on('cancelled', () => this.#close());
  }

  /** Stops reading; resolves once every message read so far is acked. */
  stopReading(): Promise<void> {
    this.#draining = true;
    this.#stream.pause();
    this.#paused = true;
    if (this.#inFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Ends the call with a status (for shutdown), whatever is still in flight. */
  end(status: StatusObject): void {
    if (this.#closed) return;
    this.#close();
    this.#stream.emit('error', status);
  }

  #receive(input: MessageIn): void {
    if (this.#closed) return;
    const sequence = ++this.#sequence;
    const id = input.id !== '' ? input.id : newMessageId();
    let message: Message;
    try {
      message = messageFromProto(input, this.#deps.call, this.#deps.maxPayloadSize(), id);
      const refusal = this.#deps.authorize(message);
      if (refusal) throw refusal;
    } catch (err) {
      this.#ack({ id, sequence, error: this.#refusal(err), expired: false });
      return;
    }
    const size = message.payload.length;
    this.#inFlight++;
    this.#inFlightBytes += size;
    this.#updateFlow();
    this.#deps.dispatch(message).then(
      (result) => this.#settle(size, acceptedAckBytes(result.id, sequence, result.expired ?? false)),
      (err: unknown) => this.#settle(size, { id, sequence, error: this.#refusal(err), expired: false }),
    );
  }

  #refusal(err: unknown): ErrorOut {
    const error: GatewayError = toGatewayError(err);
    this.#deps.rejected(error.code);
    return errorOf(error);
  }

  #settle(size: number, ack: PublishAckAnswer): void {
    this.#inFlight--;
    this.#inFlightBytes -= size;
    this.#ack(ack);
    if (this.#inFlight === 0) for (const wake of this.#idleWaiters.splice(0)) wake();
    this.#updateFlow();
    this.#maybeFinish();
  }

  /**
   * Acks are counted until HTTP/2 has taken them (the write callback); those it has not, because
   * the client's HTTP/2 window is closed, count against the window, so a client that stops
   * reading its acks is stopped too. They bypass the Duplex (interceptor.ts), so the acks of a
   * turn leave in one socket write rather than one write each.
   */
  #ack(ack: PublishAckAnswer): void {
    if (this.#closed) return;
    this.#unsentAcks++;
    this.#deps.writes.sendMessage(ack, this.#ackSent);
  }

  readonly #ackSent = (): void => {
    this.#unsentAcks--;
    this.#updateFlow();
  };

  /**
   * Pauses at a full window; resumes once the backlog is down to half of it, not one below, so a
   * busy stream is not paused and resumed for every message.
   */
  #updateFlow(): void {
    if (this.#closed || this.#draining) return;
    const { messages, bytes } = this.#deps.window;
    const backlog = this.#inFlight + this.#unsentAcks;
    if (!this.#paused && (backlog >= messages || this.#inFlightBytes >= bytes)) {
      this.#paused = true;
      this.#stream.pause();
    } else if (this.#paused && backlog <= messages / 2 && this.#inFlightBytes <= bytes / 2) {
      this.#paused = false;
      this.#stream.resume();
    }
  }

  /** The client half-closed and every message has its ack: the call ends with OK. */
  #maybeFinish(): void {
    if (this.#closed || !this.#halfClosed || this.#inFlight > 0) return;
    this.#close();
    this.#stream.end();
  }

  #close(): void {
    this.#closed = true;
    for (const wake of this.#idleWaiters.splice(0)) wake();
  }
}
