import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TObject } from '@sinclair/typebox';
import type { FastifyPluginCallback, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { AccessControl } from './auth/index.js';
import type { BusHandler, BusSubscription, SubscribeOptions } from './bus/index.js';
import type { ListenerConfig } from './config/schema.js';
import type { AcceptedConnection, BoundListener, ListenOptions } from './listener.js';
import type { ClientCertificate } from './tls/listener-tls.js';
import type { DispatchOptions, DispatchResult } from './delivery/dispatcher.js';
import type { GroupMember, GroupMembership } from './groups/group-manager.js';
import type { ErrorCode } from './errors.js';
import type { Logger } from './log.js';
import type { Message, Protocol } from './message.js';

/** Options for the one WebSocket server behind every WebSocket path of the HTTP listener. */
export interface WebSocketServerNeeds {
  /** the largest frame this adapter accepts; the server takes the largest any adapter asks for */
  maxPayload: number;
  /** permessage-deflate; on when any adapter asks for it */
  perMessageDeflate?: boolean;
}

/** The shared HTTP listener, as an adapter mounts its paths on it (`/v1/*`, `/ws`, `/mqtt`). */
export interface HttpMount {
  /** Registers routes, hooks and parsers in a scope of their own; call it from `register()`. */
  register(plugin: FastifyPluginCallback): void;
  /**
   * Mounts an adapter's WebSocket routes (`{ websocket: true }`) in the scope of the shared
   * WebSocket server, with what they need of it. Their paths are the only ones that take an upgrade.
   */
  webSocket(needs: WebSocketServerNeeds, routes: FastifyPluginCallback): void;
  /**
   * Answers a request under `prefix` whose path is not valid percent-encoding: the router refuses
   * it before any route, hook or handler of the adapter sees it.
   */
  malformedPath(prefix: string, answer: (request: FastifyRequest, reply: FastifyReply) => void): void;
  /**
   * Answers the requests with `method` whose path starts with `prefix` on Node's request and
   * response, before fastify's router: for an endpoint so hot that fastify's per-request work
   * (routing, request and reply objects, body parser, hooks, send) is a large part of its cost.
   * The answer does everything fastify would have: errors too (writeProblem).
   */
  answerDirectly(method: string, prefix: string, answer: (request: IncomingMessage, response: ServerResponse) => void): void;
  /** The client certificate of a request's socket, on a mutual-TLS HTTP listener. */
  clientCertificate(socket: unknown): ClientCertificate | undefined;
}

/**
 * The core as an adapter sees it, and all of it: an adapter turns its protocol into `dispatch`
 * calls and bus subscriptions, and answers with the results.
 */
export interface AdapterContext<Settings = unknown> {
  readonly protocol: Protocol;
  readonly logger: Logger;
  /**
   * Routes one message. Resolves once it is accepted (the moment to acknowledge); rejects with a
   * GatewayError, whose code the adapter answers in its protocol's terms (src/errors.ts).
   */
  dispatch(message: Message, options?: DispatchOptions): Promise<DispatchResult>;
  /**
   * `dispatch` for a sender that needs to know only when a message is accepted, the result being
   * its id: undefined when it was accepted before this returns, else a promise that resolves once
   * it is (shared with other messages waiting for the same thing) or rejects with the
   * GatewayError that refuses it. A message refused at once throws its GatewayError (with
   * tracing on, the promise rejects with it instead).
   */
  accept(message: Message): Promise<void> | undefined;
  /** Subscribes to the core bus: deliveries of every key the pattern matches, whatever protocol published them. */
  subscribe(pattern: string, handler: BusHandler, options?: SubscribeOptions): Promise<BusSubscription>;
  /** Every message published on the bus, for an engine that matches subscriptions itself (the MQTT broker). */
  subscribeAll(handler: BusHandler): Promise<BusSubscription>;
  /**
   * Joins a subscriber to a group of competing consumers (docs/groups.md): each message matching
   * `pattern` goes to one member of the group `group`. The caller checked the name
   * (groupProblem) and the ACL; refused with `overloaded` past groups.maxGroups.
   */
  joinGroup(group: string, pattern: string, member: GroupMember): Promise<GroupMembership>;
  /** The adapter's own section of the configuration in force; a reload may change it. */
  settings(): Settings;
  /** `listeners.<protocol>` in force, when the adapter has a listener of its own and it is configured. */
  listener(): ListenerConfig | undefined;
  /**
   * Binds the adapter's own listener (`listeners.<protocol>`) as every listener is bound:
   * admission limits at accept, then TLS when configured (renewed in place), then `accept`.
   * Throws ListenerError when the port cannot be bound.
   */
  listen(accept: (connection: AcceptedConnection) => void, options?: ListenOptions): Promise<BoundListener>;
  /** the largest payload accepted on any protocol (limits.maxPayloadSize) in force */
  maxPayloadSize(): number;
  /**
   * Throws `overloaded` (retry after 1 s) while limits.maxInflight dispatches are under way: for a
   * protocol that can only refuse (HTTP), to call before it reads a message in. Protocols that can
   * stop reading (MQTT, WebSocket, gRPC streams) wait for their dispatches instead.
   */
  admitWork(): void;
  /** Authentication and ACL of the configuration in force, shared by every protocol. */
  access(): AccessControl;
  /** The shared HTTP listener, when `listeners.http` is configured. */
  readonly http: HttpMount | undefined;
  /**
   * Counts a refusal as the sender sees it (`junction_rejections_total`, /admin/stats): call it
   * from the one place the adapter answers an error, for its own checks and `dispatch`'s alike.
   */
  refused(code: ErrorCode): void;
  /** cluster mode only: sessions kept in Redis, which every node serves */
  readonly sessions?: SharedSessions;
}

/**
 * Cluster mode (docs/scale-out.md): a protocol keeps its sessions in Redis, where every node reads
 * and writes them, and a client id is connected on one node at a time. What a session holds is
 * the protocol's own business.
 */
export interface SharedSessions {
  /**
   * Makes this node the holder of `clientId` for `ttlMs`. A live node that held it ends that
   * client's connection there ([MQTT-3.1.4-2]: the older one goes) before this resolves, or
   * after 3 s at most.
   */
  claim(clientId: string, ttlMs: number): Promise<void>;
  /** How this node ends a client's connection another node claimed. */
  onClaim(end: (clientId: string) => Promise<void>): void;
  /** commands; they fail at once while Redis is unreachable (no offline queue) */
  readonly redis: Redis;
  /** prefix of the protocol's keys: cluster.keyPrefix, then the protocol */
  readonly keyPrefix: string;
  /** A note to this protocol on every other node (`onNote`); at most once, as Redis Pub/Sub is. */
  broadcast(note: Buffer): Promise<void>;
  onNote(handler: (note: Buffer) => void): void;
  /** Redis is reachable again after an outage: notes sent meanwhile were lost. */
  onReconnect(handler: () => void): void;
}

/** One open client connection, for /admin/connections. */
export interface ConnectionInfo {
  protocol: Protocol;
  id: string;
  remoteAddress?: string;
  principal?: string;
  /** ms since epoch */
  since: number;
  /** the patterns it is subscribed to */
  subscriptions: number;
}

/**
 * What an adapter counts beyond refusals (which `refused` counts): drops, slow consumers closed,
 * connections refused at a limit… Counters only grow (`junction_adapter_events_total`); gauges
 * are levels (`junction_adapter_level`). Names are camelCase and listed in docs/<protocol>.md.
 */
export interface AdapterStats {
  counters: Readonly<Record<string, number>>;
  gauges?: Readonly<Record<string, number>>;
  /** an adapter with subscribers: what its slow-consumer policy did, the same two counts on every protocol */
  slowConsumers?: SlowConsumerCounts;
}

/**
 * The slow-consumer policy's outcomes (`junction_subscriber_shed_total`,
 * `junction_subscriber_disconnects_total`): both only grow.
 */
export interface SlowConsumerCounts {
  /** qos 0 deliveries dropped because their subscriber was too far behind */
  shed: number;
  /** subscribers disconnected with their protocol's signal for not draining in time */
  disconnected: number;
}

/**
 * One protocol's glue. `register` runs before the HTTP listener binds (to mount paths on it and
 * subscribe to the bus); `start` binds the adapter's own listener, if any; `stop` stops
 * accepting, lets work in flight finish until the deadline (ms since epoch), then closes. Both
 * start and stop are idempotent.
 */
export interface Adapter {
  register?(): Promise<void> | void;
  start(): Promise<void>;
  stop(deadline: number): Promise<void>;
  /** the address of the adapter's own listener, once started */
  address?(): AddressInfo | undefined;
  /** open client connections */
  connections(): number;
  /** up to `limit` open connections, for /admin/connections */
  listConnections?(limit: number): ConnectionInfo[];
  stats(): AdapterStats;
}

/** What a protocol's section may size its defaults from, outside the section. */
export interface SharedSettings {
  limits: { maxPayloadSize: number };
}

/** A protocol's own section of gateway.yaml, handed to its adapter as `settings()`. */
export interface ConfigSection<Settings = unknown> {
  /** its top-level key (`mqtt`, `websocket`) */
  readonly key: string;
  /** a TypeBox object with its defaults (see the helpers src/index.ts exports) */
  readonly schema: TObject;
  /** Defaults that follow a value outside the section, applied once by the loader after the schema's own. */
  resolve?(section: Settings, shared: SharedSettings): Settings;
}

/**
 * A protocol, registered by name (src/registry.ts): its config section, whether it has a
 * listener of its own (`listeners.<protocol>`), and its adapter. The gateway runs one adapter per
 * registration.
 */
export interface ProtocolRegistration<Settings = unknown> {
  readonly protocol: Protocol;
  readonly section?: ConfigSection<Settings>;
  readonly listener?: boolean;
  create(ctx: AdapterContext<Settings>): Adapter;
}
