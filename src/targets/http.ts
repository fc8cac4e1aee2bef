import { Type, type StaticDecode } from '@sinclair/typebox';
import { Pool, errors as undiciErrors } from 'undici';
import { Default, type TargetSettings } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Message } from '../message.js';
import type { DeliveryContext, Target, TargetDeps, TargetReply, TargetType } from './target.js';

/** An http target's own keys, beside the protection keys every target has. */
const Fields = Type.Object({
  url: Type.String({ pattern: '^https?://', expected: 'an http:// or https:// URL', description: 'URL the message is sent to' }),
  method: Default(Type.Union([Type.Literal('POST'), Type.Literal('PUT'), Type.Literal('PATCH')]), 'POST'),
  headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'extra request headers, e.g. authorization: "Bearer ${TOKEN}"' })),
  connections: Default(Type.Integer({ minimum: 1, description: 'keep-alive connections in the pool' }), 64),
});

export type HttpTargetConfig = TargetSettings & StaticDecode<typeof Fields>;

/** Message headers that must not be forwarded: hop-by-hop (RFC 9110 §7.6.1) or set by us. */
const NOT_FORWARDED = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer',
  'host', 'content-length', 'content-type', 'traceparent', 'expect',
]);

/** Headers a reply may carry back to the requester. */
const REPLY_HEADERS = ['content-type', 'cache-control', 'etag', 'last-modified', 'location'];

export class HttpTarget implements Target {
  readonly type = 'http';
  readonly name: string;
  readonly #pool: Pool;
  readonly #path: string;
  readonly #config: HttpTargetConfig;

  constructor(name: string, config: HttpTargetConfig, _deps: TargetDeps) {
    this.name = name;
    this.#config = config;
    const url = new URL(config.url);
    this.#path = `${url.pathname}${url.search}`;
    this.#pool = new Pool(url.origin, {
      connections: config.connections,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      connectTimeout: config.timeout,
    });
  }

  async deliver(message: Message, ctx: DeliveryContext): Promise<TargetReply> {
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries(message.headers)) {
      if (!NOT_FORWARDED.has(name)) headers[name] = value;
    }
    Object.assign(headers, this.#config.headers);
    headers['content-type'] = message.contentType ?? 'application/octet-stream';
    headers.traceparent = ctx.traceparent;
    headers['x-junction-id'] = message.id;
    headers['x-junction-key'] = encodeURIComponent(message.key);
    headers['x-priority'] = String(message.priority);
    if (message.replyTo !== undefined) headers['x-reply-to'] = encodeURIComponent(message.replyTo);
    if (message.correlationId !== undefined) headers['x-correlation-id'] = message.correlationId;

    const timeout = AbortSignal.timeout(ctx.timeoutMs);
    const signal = ctx.signal ? AbortSignal.any([ctx.signal, timeout]) : timeout;
    let response;
    try {
      response = await this.#pool.request({
        path: this.#path,
        method: this.#config.method,
        headers,
        body: message.payload,
        signal,
      });
    } catch (err) {
      throw this.#failure(err, timeout.aborted);
    }
    let body: Buffer;
    try {
      body = Buffer.from(await response.body.arrayBuffer());
    } catch (err) {
      throw this.#failure(err, timeout.aborted);
    }
    const status = response.statusCode;
    if (status >= 500) {
      throw new GatewayError('upstream_unavailable', `target ${this.name} answered ${status}`, { retryable: true, upstreamStatus: status });
    }
    const reply: TargetReply = { payload: body, status, headers: {} };
    for (const name of REPLY_HEADERS) {
      const value = response.headers[name];
      if (typeof value === 'string') reply.headers![name] = value;
    }
    if (reply.headers!['content-type'] !== undefined) reply.contentType = reply.headers!['content-type'];
    if (status >= 400) {
      // A 4xx is the downstream refusing this message: retrying the same one cannot help.
      throw new GatewayError('upstream_unavailable', `target ${this.name} answered ${status}`, { retryable: false, upstreamStatus: status });
    }
    return reply;
  }

  #failure(err: unknown, timedOut: boolean): GatewayError {
    if (timedOut || err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError || err instanceof undiciErrors.ConnectTimeoutError) {
      return new GatewayError('upstream_timeout', `target ${this.name} did not answer in time`, { retryable: true });
    }
    const reason = err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : String(err);
    return new GatewayError('upstream_unavailable', `target ${this.name} is unreachable: ${reason}`, { retryable: true });
  }

  async close(): Promise<void> {
    await this.#pool.close();
  }
}

export const httpTargetType: TargetType<HttpTargetConfig> = {
  type: 'http',
  fields: Fields.properties,
  create: (name, config, deps) => new HttpTarget(name, config, deps),
};
