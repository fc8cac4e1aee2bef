import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import {
  GatewayError, groupProblem, isExpired, onExpiry, patternProblem, sendProblem, shuttingDown, toGatewayError, tokenFromAuthorization, writeProblem,
  type GroupDelivery, type GroupMember, type GroupMembership,
  type Adapter, type AdapterContext, type AdapterStats, type BusSubscription, type Credentials, type ConnectionInfo, type Identity, type Message, type MessageSource, type ProtocolRegistration,
  type SlowConsumerCounts,
} from '../../src/index.js';
import { sseSection, type SseSettings } from './config.js';
import { badPercentEncoding, keyFromUrl, messageFromRequest, ssePayload } from './mapping.js';

const MESSAGES = '/v1/messages/';
const REQUESTS = '/v1/requests/';
const SUBSCRIBE = '/v1/subscribe/';
/** The API's paths and the one method each takes, for 404 and 405 answers. */
const ENDPOINTS = [
  { prefix: MESSAGES, method: 'POST', names: 'key' },
  { prefix: REQUESTS, method: 'POST', names: 'key' },
  { prefix: SUBSCRIBE, method: 'GET', names: 'pattern' },
] as const;
const SSE_HEARTBEAT_MS = 15_000;
const JSON_UTF8 = 'application/json; charset=utf-8';

/** 202 with the id of the message a publish made, `{"id":…}`. */
function accepted(response: ServerResponse, id: string): void {
  const body = `{"id":${JSON.stringify(id)}}`;
  response.writeHead(202, ['content-type', JSON_UTF8, 'content-length', String(Buffer.byteLength(body))]);
  response.end(body);
}

/** the payload of a request without a body */
const EMPTY_BODY = Buffer.alloc(0);
/** what a request without an Authorization header presents: one object for all of them */
const NO_CREDENTIALS: Readonly<Credentials> = {};

/**
 * The HTTP API on the shared HTTP listener: publish (`POST /v1/messages/<key>`), request/reply
 * (`POST /v1/requests/<key>`) and Server-Sent Events (`GET /v1/subscribe/<pattern>`).
 * Every error is RFC 9457 problem+json.
 */
export class HttpAdapter implements Adapter {
  readonly #ctx: AdapterContext<SseSettings>;
  readonly #streams = new Set<SseStream>();
  #stopping = false;
  /** qos 0 deliveries dropped for SSE streams over sse.maxOutboundBuffer; streams closed as slow consumers */
  readonly #slowConsumers: SlowConsumerCounts = { shed: 0, disconnected: 0 };
  /** SSE deliveries that had expired by the time they came to be written, never written */
  #sseExpired = 0;
  /** requests whose client went away before their body was read: nobody to answer, nothing refused */
  #aborted = 0;
  #streamSequence = 0;

  constructor(ctx: AdapterContext<SseSettings>) {
    this.#ctx = ctx;
  }

  stats(): AdapterStats {
    return { counters: { sseExpired: this.#sseExpired, aborted: this.#aborted }, slowConsumers: { ...this.#slowConsumers } };
  }

  register(): void {
    const http = this.#ctx.http;
    if (!http) return;
    http.register((scope, _opts, done) => this.#routes(scope, done));
    http.answerDirectly('POST', MESSAGES, (request, response) => this.#publish(request, response));
    for (const { prefix, names } of ENDPOINTS) {
      http.malformedPath(prefix, (request, reply) => {
        const err = badPercentEncoding(names);
        this.#ctx.refused(err.code);
        sendProblem(reply, err, request.url);
      });
    }
  }

  #routes(app: FastifyInstance, done: () => void): void {
    // Payloads are bytes, never parsed: one parser for every content type, enforcing the
    // current payload limit (read per request so a reload applies at once).
    app.removeAllContentTypeParsers();
    // Admission is where the parser starts, before the body is read: an overloaded gateway
    // refuses at once rather than buffer it. Only the dispatching routes (POST) take a body here,
    // and no hook runs on them.
    // The body is read from the request itself (collectBody), which is the stream fastify passes.
    app.addContentTypeParser('*', (request, _payload, parsed) => {
      if (!request.is404) {
        try {
          this.#ctx.admitWork();
        } catch (err) {
          parsed(err as Error);
          return;
        }
      }
      collectBody(request.raw, this.#ctx.maxPayloadSize(), parsed);
    });
    app.setErrorHandler((err, request, reply) => {
      const refusal = this.#refusal(err);
      if (refusal) sendProblem(reply, refusal, request.url);
    });
    app.setNotFoundHandler((request, reply) => {
      const path = request.url.split('?')[0]!;
      const endpoint = ENDPOINTS.find((e) => path.startsWith(e.prefix));
      let err: GatewayError;
      if (endpoint) {
        reply.header('allow', endpoint.method);
        err = new GatewayError('method_not_allowed', `${endpoint.prefix}<…> takes ${endpoint.method}, not ${request.method}`);
      } else {
        err = new GatewayError('not_found', `no such endpoint: ${request.method} ${path}; use ${ENDPOINTS.map((e) => `${e.method} ${e.prefix}<${e.names}>`).join(', ')}`);
      }
      this.#ctx.refused(err.code);
      sendProblem(reply, err, request.url);
    });
    app.post(`${REQUESTS}*`, (request, reply) => this.#request(request, reply));
    app.get(`${SUBSCRIBE}*`, (request, reply) => this.#subscribe(request, reply));
    done();
  }

  /**
   * What a request refused with `err` is answered with, counted; undefined when its client left
   * before its body arrived (nobody to answer, nothing refused).
   */
  #refusal(err: unknown): GatewayError | undefined {
    if (err instanceof RequestAborted) {
      this.#aborted++;
      return undefined;
    }
    const gatewayError = err instanceof GatewayError ? err : fastifyError(err);
    if (gatewayError.code === 'internal') this.#ctx.logger.error({ err }, 'HTTP request failed');
    this.#ctx.refused(gatewayError.code);
    return gatewayError;
  }

  /**
   * Credentials per request: `Authorization: Bearer` with an API key, a JWT or
   * `username:password`, or `Basic`; on a mutual-TLS listener the client certificate when the
   * request has no Authorization; none means anonymous when allowed. The shared auth layer
   * decides (docs/security.md), at once unless a secret needs verifying.
   */
  #identity(request: IncomingMessage, address: string | undefined): Identity | Promise<Identity> {
    const header = request.headers.authorization;
    return this.#ctx.access().identify(
      header === undefined ? NO_CREDENTIALS : { token: tokenFromAuthorization(header) },
      { listener: 'http', address, certificate: this.#ctx.http?.clientCertificate(request.socket) },
    );
  }

  /** The request as a Message its sender may send: at once when its identity is known, else once verified. */
  #message(request: IncomingMessage, key: string, body: Buffer, action: 'publish' | 'request'): Message | Promise<Message> {
    const address = request.socket.remoteAddress;
    const identity = this.#identity(request, address);
    return identity instanceof Promise
      ? identity.then((known) => this.#allowedMessage(request, key, body, address, known, action))
      : this.#allowedMessage(request, key, body, address, identity, action);
  }

  #allowedMessage(request: IncomingMessage, key: string, body: Buffer, address: string | undefined, identity: Identity, action: 'publish' | 'request'): Message {
    const source: MessageSource = { protocol: 'http' };
    // Set, not spread in: a conditional spread costs an object per request even when empty.
    if (address !== undefined) source.remoteAddress = address;
    if (identity.principal !== undefined) source.principal = identity.principal;
    const message = messageFromRequest(key, body, request.headers, source);
    if (!this.#ctx.access().canSend(identity, message)) {
      throw new GatewayError('forbidden', `not allowed to ${action === 'publish' ? 'publish to' : 'send requests to'} ${message.key}${message.replyTo !== undefined ? ` with x-reply-to ${message.replyTo}` : ''}`);
    }
    return message;
  }

  /**
   * `POST /v1/messages/<key>`, answered on Node's request and response (HttpMount.answerDirectly):
   * fastify's per-request work was a large share of a publish's cost, and none of it is needed here.
   * The checks come in the order a route would make them: the path, admission before the body is
   * read, the body's size, then who may send what. With a known identity the request is checked,
   * routed and answered without a promise when every target took the message at once.
   */
  #publish(request: IncomingMessage, response: ServerResponse): void {
    try {
      if (this.#stopping) throw shuttingDown();
      const key = keyFromUrl(request.url!, MESSAGES, 'key');
      this.#ctx.admitWork();
      collectBody(request, this.#ctx.maxPayloadSize(), (err, body) => {
        if (err) this.#refuseDirectly(request, response, err);
        else this.#publishBody(request, response, key, body!);
      });
    } catch (err) {
      this.#refuseDirectly(request, response, err);
    }
  }

  #publishBody(request: IncomingMessage, response: ServerResponse, key: string, body: Buffer): void {
    try {
      const message = this.#message(request, key, body, 'publish');
      if (message instanceof Promise) message.then((known) => this.#accept(request, response, known)).catch((err: unknown) => this.#refuseDirectly(request, response, err));
      else this.#accept(request, response, message);
    } catch (err) {
      this.#refuseDirectly(request, response, err);
    }
  }

  /** Answers 202 with the message's id once it is accepted; throws a refusal made at once. */
  #accept(request: IncomingMessage, response: ServerResponse, message: Message): void {
    const pending = this.#ctx.accept(message);
    if (pending === undefined) accepted(response, message.id);
    else pending.then(() => accepted(response, message.id), (err: unknown) => this.#refuseDirectly(request, response, err));
  }

  #refuseDirectly(request: IncomingMessage, response: ServerResponse, err: unknown): void {
    const refusal = this.#refusal(err);
    if (refusal && !response.headersSent) writeProblem(response, refusal, request.url);
  }

  async #request(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (this.#stopping) throw shuttingDown();
    // A request with no body never reaches the parser, which admits the others.
    if (request.body === undefined) this.#ctx.admitWork();
    const key = keyFromUrl(request.url, REQUESTS, 'key');
    const message = await this.#message(request.raw, key, Buffer.isBuffer(request.body) ? request.body : EMPTY_BODY, 'request');
    const timeoutHeader = request.headers['x-timeout-ms'];
    let timeoutMs: number | undefined;
    if (typeof timeoutHeader === 'string') {
      timeoutMs = Number(timeoutHeader);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new GatewayError('bad_request', 'x-timeout-ms must be a positive integer', { field: 'x-timeout-ms' });
    }
    const result = await this.#ctx.dispatch(message, { expectReply: true, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
    const answer = result.reply ?? { payload: EMPTY_BODY };
    reply.header('x-message-id', result.id);
    for (const [name, value] of Object.entries(answer.headers ?? {})) reply.header(name, value);
    reply.code(answer.status !== undefined && answer.status < 400 ? answer.status : 200);
    reply.type(answer.contentType ?? 'application/octet-stream').send(answer.payload);
  }

  async #subscribe(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    if (this.#stopping) throw shuttingDown();
    const pattern = keyFromUrl(request.url, SUBSCRIBE, 'pattern');
    const problem = patternProblem(pattern);
    if (problem) throw new GatewayError('bad_request', problem, { field: 'pattern' });
    const group = (request.query as Record<string, unknown> | undefined)?.group;
    if (group !== undefined) {
      const groupIssue = typeof group === 'string' ? groupProblem(group) : 'group must be given once';
      if (groupIssue) throw new GatewayError('bad_request', groupIssue, { field: 'group' });
    }
    const identity = await this.#identity(request.raw, request.ip);
    if (!this.#ctx.access().canSubscribe(identity, pattern)) throw new GatewayError('forbidden', `not allowed to subscribe to ${pattern}`);
    const caller: ConnectionInfo = {
      protocol: 'http', id: `sse-${(++this.#streamSequence).toString(36)}`, remoteAddress: request.ip, since: Date.now(), subscriptions: 1,
      ...(identity.principal !== undefined ? { principal: identity.principal } : {}),
    };
    const stream = new SseStream(reply, caller, {
      settings: () => this.#ctx.settings(),
      shed: () => this.#slowConsumers.shed++,
      slow: (why) => {
        this.#slowConsumers.disconnected++;
        this.#ctx.logger.info({ pattern, remoteAddress: request.ip, why }, 'slow SSE consumer closed');
      },
      expired: () => this.#sseExpired++,
    });
    this.#streams.add(stream);
    stream.onClose(() => this.#streams.delete(stream));
    // A stream does not outlive the credential it was opened with (a JWT's exp).
    stream.onClose(onExpiry(identity, () => void stream.end()));
    try {
      if (typeof group === 'string') await stream.attach({ membership: await this.#ctx.joinGroup(group, pattern, stream) });
      else await stream.attach({ subscription: await this.#ctx.subscribe(pattern, (message) => stream.send(message)) });
    } catch (err) {
      stream.end();
      throw toGatewayError(err);
    }
    reply.hijack();
    stream.open();
  }

  async start(): Promise<void> {
    this.#stopping = false;
  }

  async stop(_deadline: number): Promise<void> {
    this.#stopping = true;
    await Promise.all([...this.#streams].map((stream) => stream.end()));
  }

  connections(): number {
    return this.#streams.size;
  }

  listConnections(limit: number): ConnectionInfo[] {
    return [...this.#streams].slice(0, limit).map((stream) => stream.caller);
  }
}

/** What an SSE stream reports to the adapter, and the settings it reads. */
interface SseHost {
  settings(): SseSettings;
  /** a qos 0 delivery was dropped: the stream is over sse.maxOutboundBuffer */
  shed(): void;
  /** the stream is being closed as a slow consumer */
  slow(why: string): void;
  expired(): void;
}

/**
 * One Server-Sent Events response: an `event: message` per delivery, a comment as heartbeat. As a
 * group member (`?group=`) it takes a delivery only while its connection keeps up, and a delivery
 * counts as handled once written: SSE has no way to acknowledge, so a group's messages reach SSE
 * members at most once. A stream behind by more than sse.maxOutboundBuffer loses its qos 0
 * deliveries; one that cannot take a qos 1 delivery, or stays full for sse.drainTimeout, is cut.
 */
class SseStream implements GroupMember {
  #subscription: BusSubscription | undefined;
  #membership: GroupMembership | undefined;
  #groupWaiting = false;
  readonly #reply: FastifyReply;
  readonly #host: SseHost;
  #heartbeat: NodeJS.Timeout | undefined;
  /** runs while the connection is full: cut at sse.drainTimeout unless it drains first */
  #drainTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #closeHandlers: (() => void)[] = [];

  constructor(reply: FastifyReply, readonly caller: ConnectionInfo, host: SseHost) {
    this.#reply = reply;
    this.#host = host;
    reply.raw.on('close', this.#gone);
    // A response queued behind another on a pipelined connection hears nothing when the
    // connection closes: the socket does.
    reply.request.raw.socket.once('close', this.#gone);
  }

  readonly #gone = (): void => void this.end();

  /** What it delivers for; released at once when its client left while it was being subscribed. */
  async attach(source: { subscription?: BusSubscription; membership?: GroupMembership }): Promise<void> {
    this.#subscription = source.subscription;
    this.#membership = source.membership;
    // A client that left while it was being authenticated closed before there was anyone to tell.
    if (this.#reply.request.raw.socket.destroyed) await this.end();
    else if (this.#closed) await this.#release();
  }

  async #release(): Promise<void> {
    const subscription = this.#subscription;
    this.#membership?.leave();
    this.#subscription = undefined;
    this.#membership = undefined;
    await subscription?.close();
  }

  onClose(handler: () => void): void {
    this.#closeHandlers.push(handler);
  }

  open(): void {
    if (this.#closed) return;
    const raw = this.#reply.raw;
    raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    raw.write(': subscribed\n\n');
    this.#heartbeat = setInterval(() => raw.write(': ping\n\n'), SSE_HEARTBEAT_MS);
    this.#heartbeat.unref();
    if (this.#groupWaiting) {
      this.#groupWaiting = false;
      this.#membership?.ready();
    }
  }

  offer(delivery: GroupDelivery): boolean {
    if (this.#closed) return false;
    const raw = this.#reply.raw;
    // Not open yet (the response head is not sent): told when it is.
    if (this.#heartbeat === undefined) {
      this.#groupWaiting = true;
      return false;
    }
    if (raw.writableNeedDrain) {
      if (!this.#groupWaiting) raw.once('drain', () => {
        this.#groupWaiting = false;
        this.#membership?.ready();
      });
      this.#groupWaiting = true;
      return false;
    }
    this.send(delivery.message);
    delivery.settle();
    return true;
  }

  send(message: Message): void {
    if (this.#closed) return;
    if (isExpired(message)) {
      this.#host.expired();
      return;
    }
    const raw = this.#reply.raw;
    const { maxOutboundBuffer } = this.#host.settings();
    if (raw.writableLength > maxOutboundBuffer) {
      if (message.qos === 0) this.#host.shed();
      else this.#cut(`a qos 1 delivery found ${raw.writableLength} bytes unsent (sse.maxOutboundBuffer)`);
      return;
    }
    const data = {
      id: message.id,
      key: message.key,
      ...ssePayload(message.payload),
      ...(message.contentType !== undefined ? { contentType: message.contentType } : {}),
      headers: message.headers,
      priority: message.priority,
      traceparent: message.traceparent,
      ...(message.replyTo !== undefined ? { replyTo: message.replyTo } : {}),
      ...(message.correlationId !== undefined ? { correlationId: message.correlationId } : {}),
    };
    if (!raw.write(`event: message\nid: ${message.id}\ndata: ${JSON.stringify(data)}\n\n`)) this.#watchDrain();
  }

  #watchDrain(): void {
    if (this.#drainTimer !== undefined) return;
    const { drainTimeout } = this.#host.settings();
    this.#drainTimer = setTimeout(() => this.#cut(`nothing could be sent for ${drainTimeout} ms (sse.drainTimeout)`), drainTimeout);
    this.#drainTimer.unref();
    this.#reply.raw.once('drain', () => {
      clearTimeout(this.#drainTimer);
      this.#drainTimer = undefined;
    });
  }

  /** A slow consumer's connection is destroyed, not ended: an end would wait behind what it does not read. */
  #cut(why: string): void {
    if (this.#closed) return;
    this.#host.slow(why);
    void this.end();
    this.#reply.raw.destroy();
  }

  async end(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#drainTimer);
    for (const handler of this.#closeHandlers) handler();
    this.#reply.request.raw.socket.off('close', this.#gone);
    if (!this.#reply.raw.destroyed) this.#reply.raw.end();
    await this.#release();
  }
}

/**
 * Reads a request's body up to `limit` bytes and calls `done` once, without a promise; a body that
 * came in one chunk (most of them) is that chunk, not a copy of it.
 */
function collectBody(request: IncomingMessage, limit: number, done: (err: Error | null, body?: Buffer) => void): void {
  const declared = Number(request.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    request.resume();
    done(tooLarge(limit));
    return;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  let settled = false;
  // Once only, as the promise this replaced: an error can follow the refusal of a body too large.
  const settle = (err: Error | null, buffer?: Buffer) => {
    if (settled) return;
    settled = true;
    done(err, buffer);
  };
  request.on('data', (chunk: Buffer) => {
    size += chunk.length;
    if (size > limit) {
      request.removeAllListeners('data');
      request.resume();
      settle(tooLarge(limit));
      return;
    }
    chunks.push(chunk);
  });
  request.on('end', () => settle(null, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
  request.on('error', (err: NodeJS.ErrnoException) => settle(request.destroyed ? new RequestAborted() : err));
}

/** The client closed its connection before the request's body arrived (Node's `aborted` error). */
class RequestAborted extends Error {
  constructor() {
    super('the client closed the connection before the request body arrived');
  }
}

function tooLarge(limit: number): GatewayError {
  return new GatewayError('too_large', `payload exceeds the limit of ${limit} bytes (limits.maxPayloadSize)`);
}

/** Fastify's own errors (bad content-length, body parsing) in our vocabulary. */
function fastifyError(err: unknown): GatewayError {
  const statusCode = (err as { statusCode?: unknown } | null)?.statusCode;
  const message = err instanceof Error ? err.message : String(err);
  if (statusCode === 413) return new GatewayError('too_large', message);
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) return new GatewayError('bad_request', message);
  return toGatewayError(err);
}

export const httpProtocol: ProtocolRegistration<SseSettings> = {
  protocol: 'http',
  section: sseSection,
  create: (ctx) => new HttpAdapter(ctx),
};
