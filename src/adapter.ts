import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Bus } from './bus.js';
import type { GatewayConfig } from './config/types.js';
import type { Dispatcher } from './delivery/dispatcher.js';
import type { Logger } from './log.js';
import type { ErrorCode } from './errors.js';
import type { Protocol } from './message.js';

/** The core as an adapter sees it: its only way in is `dispatcher.dispatch(message)`. */
export interface AdapterContext {
  readonly dispatcher: Dispatcher;
  readonly bus: Bus;
  readonly logger: Logger;
  /** the configuration in force now; it changes on reload */
  config(): GatewayConfig;
  /** the shared HTTP listener, for adapters that mount paths on it (HTTP API, /ws, /mqtt) */
  readonly http: FastifyInstance | undefined;
  /**
   * Counts a refusal as the sender sees it (`junction_rejections_total`): every error an adapter
   * answers with, whether it came from its own checks or from `dispatch`.
   */
  countRejection(protocol: Protocol, code: ErrorCode): void;
}

/** One open client connection, for /admin/connections. */
export interface ConnectionInfo {
  protocol: Protocol;
  id: string;
  remoteAddress?: string;
  principal?: string;
  /** ms since epoch */
  since: number;
}

/**
 * One protocol's glue. `register` runs before the HTTP listener binds (to mount routes on it);
 * `start` binds the adapter's own listener, if any; `stop` stops accepting, lets work in flight
 * finish until the deadline (ms since epoch), then closes. Both start and stop are idempotent.
 */
export interface Adapter {
  readonly protocol: Protocol;
  register?(): Promise<void> | void;
  start(): Promise<void>;
  stop(deadline: number): Promise<void>;
  /** the address of the adapter's own listener, once started */
  address?(): AddressInfo | undefined;
  /** open client connections, for /admin and metrics */
  connections?(): number;
  /** up to `limit` open connections, for /admin/connections */
  listConnections?(limit: number): ConnectionInfo[];
}

export type AdapterFactory = (ctx: AdapterContext) => Adapter;
