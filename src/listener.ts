import type { Server as HttpServer } from 'node:http';
import net, { type AddressInfo, type Server, type Socket } from 'node:net';
import tls, { type TLSSocket } from 'node:tls';
import type { Admission, ListenerLimits } from './admission.js';
import type { ListenerTimeouts } from './config/schema.js';
import { ListenerError, type ListenerName } from './errors.js';
import type { Logger } from './log.js';
import type { ClientCertificate, ListenerTls } from './tls/listener-tls.js';

/** A connection an adapter's own listener accepted: admitted, and with TLS, past the handshake. */
export interface AcceptedConnection {
  socket: Socket;
  remoteAddress: string | undefined;
  /** the client's certificate, on a mutual-TLS listener when it sent one */
  certificate: ClientCertificate | undefined;
}

export interface ListenOptions {
  /** TLS ALPN protocols the listener speaks (gRPC: h2); none for MQTT */
  alpn?: string[];
}

/** A bound listener of an adapter. */
export interface BoundListener {
  readonly server: Server;
  address(): AddressInfo;
  /** counts a connection the adapter's protocol closed on one of the listener's timeouts */
  timedOut(timeout: CountedTimeout): void;
  /** stops accepting; resolves once every connection it accepted has closed */
  close(): Promise<void>;
}

export interface ListenerDeps {
  name: ListenerName;
  host: string;
  port: number;
  tls: ListenerTls | undefined;
  admission: Admission;
  limits: () => ListenerLimits;
  timeouts: TimeoutCounts;
  logger: Logger;
}

/**
 * Binds a listener the way every listener of the gateway is bound: admission at accept, then
 * TLS when `listeners.<name>.tls` is set (its certificate renewable in place), then the
 * adapter's `accept`. A port that cannot be bound is a ListenerError naming the key.
 */
export async function bindListener(deps: ListenerDeps, accept: (connection: AcceptedConnection) => void, options: ListenOptions = {}): Promise<BoundListener> {
  const { name, host, port } = deps;
  const listenerTls = deps.tls;
  let server: Server;
  if (listenerTls) {
    server = tls.createServer({ ...listenerTls.serverOptions(), ...(options.alpn ? { ALPNProtocols: options.alpn } : {}) }, (socket: TLSSocket) => {
      accept({ socket, remoteAddress: socket.remoteAddress, certificate: listenerTls.clientCertificate(socket) });
    });
    listenerTls.attach(server as tls.Server, deps.logger);
  } else {
    server = net.createServer({ noDelay: true }, (socket) => accept({ socket, remoteAddress: socket.remoteAddress, certificate: undefined }));
  }
  deps.admission.watch(name, server, deps.limits);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(new ListenerError(name, `${host}:${port}`, err)));
    server.listen(port, host, () => resolve());
  });
  server.removeAllListeners('error');
  server.on('error', (err) => deps.logger.error({ err, listener: name }, 'listener error'));
  return {
    server,
    address: () => server.address() as AddressInfo,
    timedOut: (timeout) => deps.timeouts.add(name, timeout),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

/** Node's HTTP server options of a listener's timeouts: Fastify takes the first two itself, the rest go to the server. */
export interface HttpTimeoutOptions {
  keepAliveTimeout: number;
  requestTimeout: number;
  server: { headersTimeout: number; connectionsCheckingInterval: number };
}

/** How often Node looks for requests past their headers or request timeout (its default, 30 s, would add up to that much). */
const HTTP_TIMEOUT_CHECK_MS = 1000;

/** An HTTP listener's `timeouts` as Node's server options (Node refuses headers longer than the request). */
export function httpTimeouts(timeouts: ListenerTimeouts): HttpTimeoutOptions {
  return {
    keepAliveTimeout: timeouts.keepAlive,
    requestTimeout: timeouts.request,
    server: {
      headersTimeout: Math.min(timeouts.headers, timeouts.request),
      connectionsCheckingInterval: Math.min(HTTP_TIMEOUT_CHECK_MS, timeouts.headers),
    },
  };
}

/**
 * The `listeners.<name>.timeouts` whose closes are counted in junction_request_timeouts_total: a
 * 408 is `request` whether the head or the body was late (Node does not tell them apart); TLS
 * handshake timeouts are counted with the handshake failures.
 */
export type CountedTimeout = 'request' | 'keepAlive' | 'idle';

/** Connections each listener closed because one of its timeouts ran out, by listener and timeout. */
export class TimeoutCounts {
  readonly #counts: Partial<Record<ListenerName, Partial<Record<CountedTimeout, number>>>> = {};

  add(listener: ListenerName, timeout: CountedTimeout): void {
    const counts = (this.#counts[listener] ??= {});
    counts[timeout] = (counts[timeout] ?? 0) + 1;
  }

  snapshot(): Partial<Record<ListenerName, Partial<Record<CountedTimeout, number>>>> {
    return Object.fromEntries(Object.entries(this.#counts).map(([listener, counts]) => [listener, { ...counts }]));
  }

  /** Counts what an HTTP listener's own timeouts close: requests answered 408, and idle kept-alive connections. */
  watchHttp(listener: ListenerName, server: HttpServer): void {
    // Beside Fastify's own handler, which answers 408.
    server.on('clientError', (err: NodeJS.ErrnoException) => {
      if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') this.add(listener, 'request');
    });
    // These servers set no socket timeout of their own (Fastify's connectionTimeout is 0), so a
    // socket times out only while kept alive between requests, and Node then closes it.
    server.on(server instanceof tls.Server ? 'secureConnection' : 'connection', (socket: Socket) => {
      socket.once('timeout', () => this.add(listener, 'keepAlive'));
    });
  }
}
