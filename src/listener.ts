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
