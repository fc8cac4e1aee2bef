import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import {
  Metadata, Server, ServerCredentials,
  type handleUnaryCall, type sendUnaryData, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream, type StatusObject,
} from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import {
  GatewayError, groupProblem, newMessageId, onExpiry, patternProblem, ReplyGrants, settledBy, shuttingDown, toGatewayError,
  type Adapter, type AdapterContext, type AdapterStats, type BoundListener, type ClientCertificate, type ConnectionInfo, type Identity, type ListenerTimeouts, type Message, type ProtocolRegistration,
} from '../../src/index.js';
import { forbidden, identify } from './auth.js';
import { IdleConnections } from './idle.js';
import { directWritesOf, gatewayInterceptor } from './interceptor.js';
import { grpcSection, type GrpcSettings } from './config.js';
import { asciiMetadata, callContext, deadlinePassed, messageFromProto, msUntil, pastDeadlineStatus, replyOf, statusOf, type CallContext } from './mapping.js';
import { decoded, loadGatewayProto, type AckReplyOut, type AckRequestIn, type MessageIn, type PublishAckOut, type ReplyOut, type SubscribeRequestIn } from './proto.js';
import { PublishStreamSession, type PublishAckAnswer } from './publish-stream.js';
import { SubscriberStream, type DeliveryEncoder, type SubscriberCounters } from './subscriber.js';

const SERVICE = 'junction.v1.Gateway';
/** Methods whose handlers write to the call under grpc-js's Duplex (interceptor.ts) */
const DIRECT_WRITE_METHODS: ReadonlySet<string> = new Set([`/${SERVICE}/PublishStream`]);

/** grpc-js server options from the `grpc:` config section and the listener's timeouts. */
export function serverOptions(config: GrpcSettings, timeouts: ListenerTimeouts): Record<string, number> {
  return {
    // grpc-js starts the clock when the connection opens, so one that never sends its preface is closed too.
    'grpc.max_connection_idle_ms': timeouts.idle,
    'grpc.max_receive_message_length': config.maxReceiveMessageSize,
    'grpc.keepalive_time_ms': config.keepalive.time,
    'grpc.keepalive_timeout_ms': config.keepalive.timeout,
    'grpc.max_concurrent_streams': config.maxConcurrentStreams,
    // Channelz keeps per-call bookkeeping nobody reads here, and has leaked before (grpc-node #2068).
    'grpc.enable_channelz': 0,
  };
}

/**
 * `junction.v1.Gateway` on `listeners.grpc` (proto/junction/v1/gateway.proto), with the standard
 * health service (SERVING; NOT_SERVING while draining) and server reflection.
 */
export class GrpcAdapter implements Adapter {
  readonly #ctx: AdapterContext<GrpcSettings>;
  readonly #subscribers = new Set<SubscriberStream>();
  readonly #publishStreams = new Set<PublishStreamSession>();
  /** who opened each long-lived call, for /admin/connections */
  readonly #callers = new WeakMap<SubscriberStream | PublishStreamSession, ConnectionInfo>();
  #callSequence = 0;
  /** unary calls whose dispatch has not settled */
  readonly #unaryCalls = new Set<Promise<void>>();
  /** docs/grpc.md says what each counts; pastDeadline: calls refused because their deadline passed before they were read */
  readonly #counters: SubscriberCounters & { pastDeadline: number } = { slowConsumers: { shed: 0, disconnected: 0 }, expired: 0, peakBytes: 0, pastDeadline: 0 };
  #server: Server | undefined;
  /** set with the service in start(): Subscribe streams write each message's one encoding */
  #encodeDelivery: DeliveryEncoder | undefined;
  #health: HealthImplementation | undefined;
  #listener: BoundListener | undefined;
  /** client certificates of open mutual-TLS connections, by the peer address grpc-js reports for their calls */
  readonly #certificates = new Map<string, ClientCertificate>();
  /** answers gRPC responders may publish: each arrives in a separate Publish call, so the grants are the adapter's, by principal */
  readonly #replyGrants = new ReplyGrants();
  /** group subscriptions by their id (the `junction-subscription` header), for Ack */
  readonly #groupStreams = new Map<string, { subscriber: SubscriberStream; principal: string | undefined }>();
  #stopping = false;
  #stopped: Promise<void> | undefined;

  constructor(ctx: AdapterContext<GrpcSettings>) {
    this.#ctx = ctx;
  }

  stats(): AdapterStats {
    const { peakBytes, slowConsumers, ...counters } = this.#counters;
    return { counters, gauges: { peakBytes, subscribers: this.#subscribers.size, publishStreams: this.#publishStreams.size }, slowConsumers: { ...slowConsumers } };
  }

  address(): AddressInfo | undefined {
    return this.#listener?.address();
  }

  /**
   * Open Subscribe and PublishStream calls. grpc-js does not expose its HTTP/2 connections, and
   * for gRPC clients the long-lived calls are what a connection is elsewhere.
   */
  connections(): number {
    return this.#subscribers.size + this.#publishStreams.size;
  }

  listConnections(limit: number): ConnectionInfo[] {
    return [...this.#subscribers, ...this.#publishStreams].slice(0, limit).flatMap((call) => this.#callers.get(call) ?? []);
  }

  #describe(call: SubscriberStream | PublishStreamSession, kind: 'subscribe' | 'publish-stream', peer: string, identity: Identity): void {
    this.#callers.set(call, {
      protocol: 'grpc', id: `grpc-${kind}-${(++this.#callSequence).toString(36)}`, remoteAddress: peer, since: Date.now(),
      subscriptions: kind === 'subscribe' ? 1 : 0, ...(identity.principal !== undefined ? { principal: identity.principal } : {}),
    });
  }

  async start(): Promise<void> {
    const listener = this.#ctx.listener();
    if (!listener || this.#server) return;
    const { service, reflection, encodeDelivery } = loadGatewayProto();
    this.#encodeDelivery = encodeDelivery;
    const idle = new IdleConnections(listener.timeouts.idle, () => this.#listener?.timedOut('idle'));
    const server = new Server({ ...serverOptions(this.#ctx.settings(), listener.timeouts), interceptors: [gatewayInterceptor(idle, DIRECT_WRITE_METHODS)] });
    server.addService(service, {
      Publish: this.#publish,
      PublishStream: (call: ServerDuplexStream<MessageIn, PublishAckAnswer>) => {
        this.#publishStream(call).catch((err: unknown) => call.emit('error', this.#statusFor(err)));
      },
      Subscribe: (call: ServerWritableStream<SubscribeRequestIn, Buffer>) => {
        this.#subscribe(call).catch((err: unknown) => call.emit('error', this.#statusFor(err)));
      },
      Request: this.#request,
      Ack: this.#ack,
    });
    this.#health = new HealthImplementation({ '': 'SERVING', [SERVICE]: 'SERVING' });
    this.#health.addToServer(server);
    new ReflectionService(reflection).addToServer(server);
    // The gateway's listener accepts (admission, then TLS with ALPN h2 when configured) and
    // hands each connection to grpc-js, which speaks HTTP/2 on it: grpc-js's own TLS would hide
    // whether a client certificate verified.
    const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
    try {
      this.#listener = await this.#ctx.listen(({ socket, certificate }) => {
        // As grpc-js reports it for the connection's calls (call.getPeer()).
        const peer = `${socket.remoteAddress}:${socket.remotePort}`;
        if (certificate) {
          this.#certificates.set(peer, certificate);
          socket.once('close', () => this.#certificates.delete(peer));
        }
        idle.accepted(peer, socket);
        injector.injectConnection(socket);
      }, { alpn: ['h2'] });
    } catch (err) {
      server.forceShutdown();
      throw err;
    }
    this.#server = server;
  }

  /**
   * Draining: health turns NOT_SERVING, new calls get UNAVAILABLE, subscriptions end with
   * UNAVAILABLE (clients resubscribe elsewhere), publish streams stop reading and end once what
   * they read is acked; then the server shuts down, forcibly at the deadline.
   */
  stop(deadline: number): Promise<void> {
    this.#stopped ??= this.#stop(deadline);
    return this.#stopped;
  }

  async #stop(deadline: number): Promise<void> {
    this.#stopping = true;
    const server = this.#server;
    if (!server) return;
    this.#health?.setStatus('', 'NOT_SERVING');
    this.#health?.setStatus(SERVICE, 'NOT_SERVING');
    const draining = statusOf(shuttingDown());
    for (const subscriber of this.#subscribers) subscriber.end(draining);
    await settledBy(Promise.all([
      ...[...this.#publishStreams].map(async (session) => {
        await session.stopReading();
        session.end(draining);
      }),
      ...this.#unaryCalls,
    ]), deadline);
    for (const session of this.#publishStreams) session.end(draining);
    // tryShutdown waits for every call, health Watch streams included: the deadline bounds it.
    const closed = this.#listener?.close();
    await settledBy(new Promise<void>((resolve) => server.tryShutdown(() => resolve())), deadline);
    server.forceShutdown();
    await closed;
  }

  /** A refusal as the status that ends the call, counted as the sender sees it. */
  #reject(err: unknown): StatusObject {
    const error = toGatewayError(err);
    if (error.code === 'internal') this.#ctx.logger.error({ err }, 'gRPC call failed');
    this.#ctx.refused(error.code);
    return statusOf(error);
  }

  /** The status refusing a call when the gateway is draining or the call's deadline has passed. */
  #refused(call: Pick<ServerUnaryCall<unknown, unknown>, 'getDeadline'>): StatusObject | undefined {
    if (this.#stopping) return this.#reject(shuttingDown());
    if (deadlinePassed(call.getDeadline())) {
      this.#counters.pastDeadline++;
      return pastDeadlineStatus();
    }
    return undefined;
  }

  #message(input: MessageIn, call: CallContext): Message {
    return messageFromProto(input, call, this.#ctx.maxPayloadSize(), input.id !== '' ? input.id : newMessageId());
  }

  /**
   * Who the caller is (UNAUTHENTICATED otherwise), then the call's context. Checking credentials
   * can take a while, so the deadline is checked again after it: a late call is not routed.
   */
  async #admit(call: ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>): Promise<{ identity: Identity; context: CallContext }> {
    const peer = call.getPeer();
    const identity = await identify(call.metadata, this.#ctx.access(), addressOf(peer), this.#certificates.get(peer));
    if (deadlinePassed(call.getDeadline())) {
      this.#counters.pastDeadline++;
      throw new PastDeadline();
    }
    return { identity, context: callContext(call.metadata, peer, identity.principal) };
  }

  /** Answers a unary call with what `work` returns, or with its refusal. */
  #unary<Res>(call: ServerUnaryCall<MessageIn, Res>, callback: sendUnaryData<Res>, work: (identity: Identity, context: CallContext) => Promise<Res>): void {
    const refused = this.#refused(call);
    if (refused) return callback(refused);
    this.#trackUnary(this.#admit(call).then(({ identity, context }) => work(identity, context)).then(
      (response) => callback(null, response),
      (err: unknown) => callback(this.#statusFor(err)),
    ));
  }

  #statusFor(err: unknown): StatusObject {
    return err instanceof PastDeadline ? pastDeadlineStatus() : this.#reject(err);
  }

  /** Whether `identity` may publish `message`: an ACL grant, or the answer to a request it was handed. */
  #mayPublish(identity: Identity, message: Message): boolean {
    return this.#replyGrants.take(message.key, message.correlationId, identity.principal)
      || this.#ctx.access().canSend(identity, message);
  }

  readonly #publish: handleUnaryCall<MessageIn, PublishAckOut> = (call, callback) => {
    this.#unary(call, callback, async (identity, context) => {
      const message = this.#message(call.request, context);
      if (!this.#mayPublish(identity, message)) throw forbidden('publish to', message.key);
      const result = await this.#ctx.dispatch(message);
      return { id: result.id, sequence: 0, expired: result.expired ?? false };
    });
  };

  readonly #request: handleUnaryCall<MessageIn, ReplyOut> = (call, callback) => {
    this.#unary(call, callback, async (identity, context) => {
      const message = this.#message(call.request, context);
      if (!this.#ctx.access().canSend(identity, message)) throw forbidden('send requests to', message.key);
      // The caller's deadline bounds the wait, so a reply never arrives after the caller gave up.
      const timeoutMs = msUntil(call.getDeadline());
      const result = await this.#ctx.dispatch(message, { expectReply: true, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
      return replyOf(result.id, result.reply);
    });
  };

  #trackUnary(work: Promise<void>): void {
    this.#unaryCalls.add(work);
    void work.finally(() => this.#unaryCalls.delete(work));
  }

  async #publishStream(call: ServerDuplexStream<MessageIn, PublishAckAnswer>): Promise<void> {
    const refused = this.#refused(call);
    if (refused) {
      call.emit('error', refused);
      return;
    }
    const writes = directWritesOf(call.metadata);
    if (writes === undefined) throw new Error('PublishStream without its call under the Duplex: grpc-js no longer hands handlers the metadata its interceptors passed on');
    // Nothing is read until the caller is known: grpc-js holds the first messages meanwhile.
    const { identity, context } = await this.#admit(call);
    if (this.#stopping || call.cancelled) {
      if (!call.cancelled) call.emit('error', this.#reject(shuttingDown()));
      return;
    }
    const session = new PublishStreamSession(call, {
      dispatch: this.#ctx.dispatch,
      writes,
      call: context,
      window: this.#ctx.settings().publishWindow,
      maxPayloadSize: () => this.#ctx.maxPayloadSize(),
      authorize: (message) => (this.#mayPublish(identity, message) ? undefined : forbidden('publish to', message.key)),
      rejected: (code) => this.#ctx.refused(code),
    });
    this.#publishStreams.add(session);
    this.#describe(session, 'publish-stream', call.getPeer(), identity);
    // A stream does not outlive the credential it was opened with (a JWT's exp).
    const cancelExpiry = onExpiry(identity, () => session.end(this.#reject(new GatewayError('unauthenticated', 'the credential expired'))));
    const closed = () => {
      cancelExpiry();
      this.#publishStreams.delete(session);
    };
    call.on('close', closed);
    call.on('cancelled', closed);
  }

  async #subscribe(call: ServerWritableStream<SubscribeRequestIn, Buffer>): Promise<void> {
    const refused = this.#refused(call);
    if (refused) {
      call.emit('error', refused);
      return;
    }
    const { pattern, responder, group } = decoded(call.request, 'junction.v1.SubscribeRequest');
    const problem = patternProblem(pattern);
    if (problem) throw new GatewayError('bad_request', problem, { field: 'pattern' });
    const groupIssue = group === '' ? undefined : groupProblem(group);
    if (groupIssue) throw new GatewayError('bad_request', groupIssue, { field: 'group' });
    const { identity } = await this.#admit(call);
    if (!this.#ctx.access().canSubscribe(identity, pattern)) throw forbidden('subscribe to', pattern);
    if (responder && !this.#ctx.access().canRespond(identity, pattern)) throw forbidden('answer requests on', pattern);
    if (this.#stopping) throw shuttingDown();
    const { subscriberBuffer, drainTimeout } = this.#ctx.settings();
    const subscriber = new SubscriberStream(call, { buffer: subscriberBuffer, drainTimeout }, this.#counters, this.#encodeDelivery!, () => this.#subscribers.delete(subscriber));
    this.#subscribers.add(subscriber);
    this.#describe(subscriber, 'subscribe', call.getPeer(), identity);
    const cancelExpiry = onExpiry(identity, () => subscriber.end(this.#reject(new GatewayError('unauthenticated', 'the credential expired'))));
    call.on('cancelled', () => subscriber.close());
    call.on('close', () => subscriber.close());
    call.on('close', cancelExpiry);
    call.on('cancelled', cancelExpiry);
    if (group !== '') {
      await this.#joinGroup(call, subscriber, group, pattern, identity);
      return;
    }
    const deliver = responder
      ? (message: Message) => {
        // A responder is handed requests; its answer to one needs no ACL grant for the inbox key.
        this.#replyGrants.grant(message, identity.principal);
        subscriber.push(message);
      }
      : (message: Message) => subscriber.push(message);
    try {
      subscriber.subscription = await this.#ctx.subscribe(pattern, deliver, { responder });
    } catch (err) {
      subscriber.end(this.#reject(err));
      return;
    }
    // The client may have gone, or the gateway started draining, while the bus subscribed.
    if (subscriber.closed) {
      void subscriber.subscription.close();
      return;
    }
    if (call.cancelled) {
      subscriber.close();
      return;
    }
    const headers = new Metadata();
    headers.set('junction-subscribed', asciiMetadata(pattern));
    call.sendMetadata(headers);
    subscriber.start();
  }

  /** The stream as a member of a group; acknowledged through `Ack` under a subscription id of its own. */
  async #joinGroup(call: ServerWritableStream<SubscribeRequestIn, Buffer>, subscriber: SubscriberStream, group: string, pattern: string, identity: Identity): Promise<void> {
    let membership;
    try {
      membership = await this.#ctx.joinGroup(group, pattern, subscriber);
    } catch (err) {
      subscriber.end(this.#reject(err));
      return;
    }
    subscriber.membership = membership;
    if (subscriber.closed || call.cancelled) {
      subscriber.close();
      membership.leave();
      return;
    }
    const id = randomUUID();
    this.#groupStreams.set(id, { subscriber, principal: identity.principal });
    call.on('close', () => this.#groupStreams.delete(id));
    call.on('cancelled', () => this.#groupStreams.delete(id));
    const headers = new Metadata();
    headers.set('junction-subscribed', asciiMetadata(pattern));
    headers.set('junction-subscription', id);
    call.sendMetadata(headers);
    subscriber.start();
  }

  readonly #ack: handleUnaryCall<AckRequestIn, AckReplyOut> = (call, callback) => {
    const refused = this.#refused(call);
    if (refused) return callback(refused);
    this.#trackUnary(this.#admit(call).then(({ identity }) => {
      const request = decoded(call.request, 'junction.v1.AckRequest');
      const stream = this.#groupStreams.get(request.subscription);
      // Another principal's subscription is as unknown as one that does not exist.
      if (!stream || stream.principal !== identity.principal) {
        throw new GatewayError('no_route', `no group subscription ${request.subscription} of this caller`, { field: 'subscription' });
      }
      return { acked: stream.subscriber.acknowledge(request.ids) };
    }).then(
      (reply) => callback(null, reply),
      (err: unknown) => callback(this.#statusFor(err)),
    ));
  };
}

/** The remote address in grpc-js's peer string `ADDRESS:PORT` (IPv6 addresses unbracketed). */
function addressOf(peer: string): string {
  const colon = peer.lastIndexOf(':');
  return colon > 0 ? peer.slice(0, colon) : peer;
}

/** A call whose deadline passed while the gateway checked its credentials. */
class PastDeadline extends Error {}


export const grpcProtocol: ProtocolRegistration<GrpcSettings> = {
  protocol: 'grpc',
  section: grpcSection,
  listener: true,
  create: (ctx) => new GrpcAdapter(ctx),
};
