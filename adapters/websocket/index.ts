import type { IncomingMessage, ServerResponse } from 'node:http';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { WebSocket } from 'ws';
import {
  CLOSE_CODES, GatewayError, sendProblem, settledBy, shuttingDown, SHUTTING_DOWN, toGatewayError, withTimeout, tokenFromAuthorization, TOKEN_QUERY_PARAMETER, TOKEN_SUBPROTOCOL_PREFIX,
  type Adapter, type AdapterContext, type AdapterStats, type ConnectionInfo, type Identity, type ProtocolRegistration, type SlowConsumerCounts,
} from '../../src/index.js';
import { webSocketSection, type WebSocketSettings } from './config.js';
import { Connection, type ConnectionHost, type WebSocketCounters } from './connection.js';

export const WS_PATH = '/ws';
/** The heartbeat timer never ticks slower than this, so idle and drain limits are checked in time. */
const MAX_TICK_MS = 1000;
const MIN_TICK_MS = 10;

/**
 * The JSON frame protocol at `/ws` on the HTTP listener (docs/websocket.md). Credentials are
 * checked before the upgrade (401 / 429 / 503 on the handshake); a heartbeat
 * pings sockets it has not heard from, terminates those that missed the previous ping, and
 * closes idle and stalled ones.
 */
export class WebSocketAdapter implements Adapter, ConnectionHost {
  readonly ctx: AdapterContext<WebSocketSettings>;
  readonly counters: WebSocketCounters = { reaped: 0, idleClosed: 0, handshakesRefused: 0, expired: 0 };
  readonly slowConsumers: SlowConsumerCounts = { shed: 0, disconnected: 0 };
  /** largest outbound backlog (queue plus socket buffer) one socket reached, in bytes */
  peakOutboundBytes = 0;
  readonly #connections = new Set<Connection>();
  readonly #identities = new WeakMap<IncomingMessage, { identity: Identity; response: ServerResponse }>();
  #timer: NodeJS.Timeout | undefined;
  #lastPingRound = Date.now();
  #registered = false;
  #stopping = false;

  constructor(ctx: AdapterContext<WebSocketSettings>) {
    this.ctx = ctx;
  }

  stats(): AdapterStats {
    return { counters: { ...this.counters }, gauges: { peakOutboundBytes: this.peakOutboundBytes }, slowConsumers: { ...this.slowConsumers } };
  }

  register(): void {
    const http = this.ctx.http;
    const settings = this.ctx.settings();
    if (!http || !settings.enabled) return;
    this.#registered = true;
    http.webSocket({ maxPayload: settings.maxFrameSize, perMessageDeflate: settings.perMessageDeflate }, (app, _options, done) => {
      app.get(WS_PATH, {
        websocket: true,
        preValidation: (request: FastifyRequest, reply: FastifyReply) => this.#admit(request, reply),
      }, (socket: WebSocket, request: FastifyRequest) => this.#open(socket, request));
      done();
    });
  }

  async start(): Promise<void> {
    this.#stopping = false;
    if (this.#registered && this.#timer === undefined) this.#schedule();
  }

  connections(): number {
    return this.#connections.size;
  }

  listConnections(limit: number): ConnectionInfo[] {
    return [...this.#connections].slice(0, limit).map((c) => ({
      protocol: 'ws', id: c.id, remoteAddress: c.remoteAddress, since: c.since, subscriptions: c.subscriptionCount,
      ...(c.principal !== undefined ? { principal: c.principal } : {}),
    }));
  }

  forget(connection: Connection): void {
    this.#connections.delete(connection);
  }

  /**
   * Before the upgrade: credentials (scrypt or bcrypt on the thread pool, bounded by
   * handshakeTimeout). How many sockets may be open, in all and per address, is the HTTP
   * listener's admission (listeners.http.maxConnections, maxConnectionsPerIp), decided at accept.
   */
  async #admit(request: FastifyRequest, reply: FastifyReply): Promise<void> {
    const config = this.ctx.settings();
    if (this.#stopping) return this.#refuseHandshake(reply, shuttingDown());
    try {
      const peer = { listener: 'http', address: request.ip, certificate: this.ctx.http?.clientCertificate(request.raw.socket) };
      const identity = await withTimeout(this.ctx.access().authenticate({ token: tokenOf(request) }, peer), config.handshakeTimeout,
        () => new GatewayError('overloaded', 'credentials could not be checked within websocket.handshakeTimeout', { retryAfterMs: 1000 }));
      this.#identities.set(request.raw, { identity, response: reply.raw });
    } catch (err) {
      const error = toGatewayError(err);
      if (error.code === 'unauthenticated') reply.header('www-authenticate', 'Bearer realm="junction"');
      this.#refuseHandshake(reply, error);
    }
  }

  /** Every refused handshake goes through here: counted, then answered as HTTP problem+json. */
  #refuseHandshake(reply: FastifyReply, error: GatewayError): void {
    this.counters.handshakesRefused++;
    this.ctx.refused(error.code);
    sendProblem(reply, error, WS_PATH);
  }

  /** one listener for every socket's errors rather than a closure per socket */
  readonly #socketError = (err: Error): void => this.ctx.logger.debug({ err: err.message }, 'WebSocket error');

  #open(socket: WebSocket, request: FastifyRequest): void {
    // @fastify/websocket's error listener terminates the socket at once, which cuts off the close
    // frame ws sends for an oversize frame (1009) or invalid UTF-8 (1007), and its closure keeps
    // the upgrade request alive as long as the socket: this adapter handles its sockets' errors.
    socket.removeAllListeners('error');
    socket.on('error', this.#socketError);
    const admitted = this.#identities.get(request.raw);
    if (admitted === undefined || this.#stopping) {
      socket.close(CLOSE_CODES.goingAway, SHUTTING_DOWN);
      return;
    }
    this.#identities.delete(request.raw);
    // The plugin answered the upgrade through a ServerResponse attached to the TCP socket; left
    // attached, it (and the request it holds) would live as long as the WebSocket.
    admitted.response.detachSocket(request.raw.socket);
    // The upgrade's socket is the one ws reads and writes: Node hands the same to the 'upgrade' event and the request.
    const connection = new Connection(socket, request.raw.socket, this, admitted.identity, request.ip);
    this.#connections.add(connection);
  }

  #schedule(): void {
    const { pingInterval, idleTimeout, drainTimeout } = this.ctx.settings();
    const periods = [pingInterval, idleTimeout, drainTimeout].filter((ms) => ms > 0);
    const tick = Math.min(MAX_TICK_MS, Math.max(MIN_TICK_MS, Math.min(...periods) / 2));
    this.#timer = setTimeout(() => {
      this.#heartbeat();
      if (!this.#stopping) this.#schedule();
    }, tick);
    this.#timer.unref();
  }

  /**
   * One pass over the sockets. Every pingInterval: a socket still owing a pong is terminated,
   * one not heard from in the interval is pinged. Every tick: a socket whose queued frames
   * have not moved for drainTimeout is a slow consumer (1013); one with no subscription that
   * sent nothing for idleTimeout is closed (4408).
   */
  #heartbeat(): void {
    const now = Date.now();
    const { pingInterval, idleTimeout, drainTimeout } = this.ctx.settings();
    const pingRound = pingInterval > 0 && now - this.#lastPingRound >= pingInterval;
    if (pingRound) this.#lastPingRound = now;
    for (const connection of this.#connections) {
      if (connection.closed) continue;
      const stalled = connection.stalledSince;
      if (stalled > 0 && now - stalled >= drainTimeout) {
        connection.close(CLOSE_CODES.tryAgainLater, `slow consumer: nothing could be sent for ${drainTimeout} ms (websocket.drainTimeout)`);
        continue;
      }
      if (idleTimeout > 0 && connection.subscriptionCount === 0 && connection.inflight === 0 && now - connection.lastFrame >= idleTimeout) {
        this.counters.idleClosed++;
        connection.close(CLOSE_CODES.idle, `idle for ${idleTimeout} ms (websocket.idleTimeout)`);
        continue;
      }
      // A socket the gateway is not reading cannot show its pongs; a stalled one is handled above.
      if (!pingRound || connection.paused || stalled > 0) continue;
      if (connection.awaitingPong) {
        this.counters.reaped++;
        connection.terminate();
      } else if (now - connection.lastHeard >= pingInterval) {
        connection.awaitingPong = true;
        connection.socket.ping();
      }
    }
  }

  /**
   * Draining: new handshakes get 503; sockets stop being read, operations in flight answer
   * until the deadline, then every socket is closed with 1001 (clients reconnect elsewhere)
   * and the ones still open at the deadline are terminated.
   */
  async stop(deadline: number): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    const connections = [...this.#connections];
    await settledBy(Promise.all(connections.map((c) => c.drain())), deadline);
    const closed = connections.map((c) => new Promise<void>((resolve) => {
      if (c.socket.readyState === c.socket.CLOSED) return resolve();
      c.socket.once('close', () => resolve());
      c.close(CLOSE_CODES.goingAway, SHUTTING_DOWN);
    }));
    await settledBy(Promise.all(closed), deadline);
    for (const c of connections) if (c.socket.readyState !== c.socket.CLOSED) c.terminate();
  }
}

/**
 * The client's token, from (first found) the Authorization header (`Bearer TOKEN`, or `Basic`
 * with username:password), a `junction.token.<base64url>` subprotocol, or `?access_token=`.
 */
export function tokenOf(request: FastifyRequest): string | undefined {
  const authorization = request.headers.authorization;
  if (authorization !== undefined) return tokenFromAuthorization(authorization);
  const protocols = request.headers['sec-websocket-protocol'];
  if (protocols !== undefined) {
    const offered = protocols.split(',').map((p) => p.trim()).find((p) => p.startsWith(TOKEN_SUBPROTOCOL_PREFIX));
    if (offered !== undefined) return Buffer.from(offered.slice(TOKEN_SUBPROTOCOL_PREFIX.length), 'base64url').toString('utf8');
  }
  const query = request.query as Record<string, unknown> | undefined;
  const fromQuery = query?.[TOKEN_QUERY_PARAMETER];
  return typeof fromQuery === 'string' ? fromQuery : undefined;
}

export const webSocketProtocol: ProtocolRegistration<WebSocketSettings> = {
  protocol: 'ws',
  section: webSocketSection,
  create: (ctx) => new WebSocketAdapter(ctx),
};
