import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { AedesPublishPacket, AuthenticateError, Client, ConnectPacket, PublishPacket, Subscription } from 'aedes';
import { createWebSocketStream, type WebSocket } from 'ws';
import {
  emptied, filterMatches, GatewayError, INBOX_PREFIX, onExpiry, patternProblem, REQUEST_PREFIX, ThrottledLog, toGatewayError,
  type Adapter, type AdapterContext, type AdapterStats, type BoundListener, type BusOrigin, type BusSubscription, type ClientCertificate, type ConnectionInfo, type ErrorCode,
  type Identity, type Message, type MessageSource, type ProtocolRegistration, type QoS, type SharedSessions, type SlowConsumerCounts,
} from '../../src/index.js';
import { aedesEngine, type MqttEngine, type MqttEngineFactory } from './broker.js';
import type { RedisSessionStore } from './redis-persistence.js';
import { parseShare, SHARE_PREFIX, SharedSubscriptions, ShareMember } from './share.js';
import { mqttSection, type MqttSettings } from './config.js';
import { GuardedConnection, type Violation } from './guard.js';
import { SubscriberPacing } from './pacing.js';
import { messageFromPublish, publishProperties, refusalFor, type InboundPublish } from './mapping.js';
import { MqttRequestReply, responderFilter, type RequestReplyCounters } from './request-reply.js';

export const WEBSOCKET_PATH = '/mqtt';

/** A broker packet with the Message's expiry (ms since the epoch), which aedes-packet keeps on copies. */
interface ExpiringPacket {
  messageExpiry?: number;
}

/** aedes 1.2 state read here (lib/client.js): the client's topic filters with their granted QoS. */
interface ClientSubscriptions {
  subscriptions: Record<string, { qos: number }>;
}
/** The error aedes destroys a client's socket with when it stayed full for drainTimeout (aedes/lib/client.js). */
const AEDES_DRAIN_TIMEOUT = 'drain timeout';
/** The error aedes closes a connection with when no CONNECT came within connectTimeout. */
const AEDES_CONNECT_TIMEOUT = 'connect did not arrive in time';

/** Who a connected client is, and the `source` of each Message it publishes (one object, shared). */
interface Session {
  identity: Identity;
  source: MessageSource;
}


/** What the adapter counts beyond refusals; docs/mqtt.md says what each means. */
interface MqttCounters extends RequestReplyCounters {
  /** connections closed for announcing a packet over maxPacketSize */
  oversizePackets: number;
  /** connections closed for a Remaining Length longer than 4 bytes */
  malformedPackets: number;
  /** connections closed by aedes for a protocol error, a parse error or a socket error */
  clientErrors: number;
  /** connections closed because no CONNECT arrived within connectTimeout (slowloris) */
  connectTimeouts: number;
  /** CONNECTs refused: bad credentials, none when required, or an empty client id with a persistent session */
  connectsRefused: number;
  /** subscriptions answered with 0x80: ACL or maxSubscriptions */
  subscriptionsRefused: number;
  /** PUBLISHes the router accepted */
  routed: number;
  /** QoS 1/2 PUBLISHes whose acknowledgement was held back at least once to pace their sender */
  held: number;
  /** held PUBLISHes still refused after mqtt.maxHold: their connection was closed */
  holdTimeouts: number;
  /** times a subscriber's socket was full once its deliveries were written: their publishes waited for it to drain */
  paced: number;
  /** times a subscriber's socket stayed full past the pacing patience: it paced nobody until it drained */
  pacingBehind: number;
  /** connections closed because their credential expired (a JWT's exp) */
  credentialsExpired: number;
  /** bus messages the broker could not take (a key deeper than aedes's 100 levels, or the broker closing) */
  forwardFailed: number;
  /** deliveries that had expired by the time the broker came to send them (offline queues too), never sent */
  expired: number;
  /** cluster mode: messages not queued for a persistent session because its queue held mqtt.maxQueuedPerSession */
  sessionQueueFull: number;
  /** cluster mode: writes to the sessions in Redis that failed with nobody to tell (queueing for sessions, notes to the other nodes) */
  sessionStoreErrors: number;
}

/**
 * The MQTT adapter: an embedded aedes broker on `listeners.mqtt` (TCP) and on `/mqtt` of the
 * HTTP listener (WebSocket). Every PUBLISH goes through the router once, and is acknowledged only
 * once the router accepted it. The broker is one subscriber of the core bus among the others: it
 * is handed every message the bus carries that a client could want and gives it broker semantics
 * (retained messages, offline queues of persistent sessions, delivery at each subscription's
 * QoS). Design: docs/mqtt.md.
 */
export class MqttAdapter implements Adapter {
  readonly #counters: MqttCounters = {
    oversizePackets: 0, malformedPackets: 0, clientErrors: 0, connectTimeouts: 0, connectsRefused: 0,
    subscriptionsRefused: 0, routed: 0, held: 0, holdTimeouts: 0, paced: 0, pacingBehind: 0, forwardFailed: 0, expired: 0, credentialsExpired: 0,
    requestsSent: 0, requestsHanded: 0, answers: 0, sessionQueueFull: 0, sessionStoreErrors: 0,
  };
  /** QoS 0 deliveries dropped for a subscriber over maxOutboundBuffer; clients aedes cut at drainTimeout */
  readonly #slowConsumers: SlowConsumerCounts = { shed: 0, disconnected: 0 };
  /** aedes reports a drain timeout once per write that was waiting, and again as the socket's error */
  readonly #cutForDrain = new WeakSet<Client>();

  readonly #ctx: AdapterContext<MqttSettings>;
  /** read once: the mqtt section applies after a restart */
  readonly #settings: MqttSettings;
  #broker: MqttEngine | undefined;
  readonly #engine: MqttEngineFactory;
  /** cluster mode: the persistence of every node's broker, sessions in Redis */
  #sessionStore: RedisSessionStore | undefined;
  /** one line per interval while Redis refuses them (once per message otherwise) */
  readonly #sessionStoreErrors: ThrottledLog;
  #feed: BusSubscription | undefined;
  readonly #shares = new SharedSubscriptions();
  #listener: BoundListener | undefined;
  /** open connections, CONNECT or not, with the aedes client handling each and when it came */
  readonly #connections = new Map<GuardedConnection, { client: Client; since: number }>();
  #stopping = false;
  #stopped: Promise<void> | undefined;
  readonly #sessions = new WeakMap<Client, Session>();
  /** clients whose CONNECT had an empty client id and asked for a persistent session */
  readonly #emptyIdPersistent = new WeakSet<Client>();
  /**
   * QoS 2 PUBLISHes settled in authorizePublish (refused by the ACL, requests, answers): aedes
   * still stores them and hands them to publish, which must not route them
   */
  readonly #notRouted = new WeakSet<object>();
  readonly #requestReply: MqttRequestReply;
  /** per client, the held PUBLISH (and those queued behind it) later ones wait for, to keep order */
  readonly #held = new WeakMap<Client, Promise<void>>();
  /** the last PUBLISHes whose acceptance waits on one promise, which the next ones may share */
  #answering: Answers | undefined;
  /** the emptied arrays of the last answers given, for the next: grown once rather than per batch */
  #spareAnswers: Omit<Answers, 'pending'> | undefined;
  readonly #pacing = new SubscriberPacing({
    onPaced: () => this.#counters.paced++,
    onBehind: () => this.#counters.pacingBehind++,
  });
  /**
   * The connections a bus message is being handed to. aedes hands a QoS 0 publish to its online
   * subscribers within `forward` (QoS 1 and 2 go through its persistence first, later), so
   * authorizeForward collects them while `#collecting` is set.
   */
  readonly #hits: GuardedConnection[] = [];
  #collecting = false;
  /**
   * aedes may hold subscriptions of persistent sessions, whose QoS ≥ 1 messages it queues while
   * their clients are away: in cluster mode always (other nodes' sessions, in Redis), else once
   * a client with a persistent session asked to subscribe (the in-memory store starts empty).
   */
  #persistentSessions = false;

  constructor(ctx: AdapterContext<MqttSettings>, engine: MqttEngineFactory) {
    this.#ctx = ctx;
    this.#settings = ctx.settings();
    this.#engine = engine;
    this.#sessionStoreErrors = new ThrottledLog(ctx.logger, 'MQTT sessions in Redis: a write failed');
    this.#requestReply = new MqttRequestReply({
      ctx,
      counters: this.#counters,
      identity: (client) => this.#sessions.get(client)?.identity,
      message: (client, topic, payload, qos) => this.#message(this.#sessions.get(client)!, { cmd: 'publish', topic, payload, qos, retain: false, dup: false }),
    });
  }

  stats(): AdapterStats {
    return { counters: { ...this.#counters }, slowConsumers: { ...this.#slowConsumers } };
  }

  /**
   * Creates the broker, feeds it from the bus and mounts /mqtt, so MQTT over WebSocket works as
   * soon as HTTP listens.
   */
  async register(): Promise<void> {
    if (!this.#ctx.listener() || this.#broker) return;
    const s = this.#settings;
    const sessions = this.#ctx.sessions;
    const store = sessions ? await this.#shareSessions(sessions) : undefined;
    this.#persistentSessions = store !== undefined;
    const broker = this.#engine({
      ...(store ? { persistence: store } : {}),
      // Unbounded as the bus is: a subscriber's backlog is bounded by maxOutboundBuffer and drainTimeout.
      concurrency: 0,
      connectTimeout: s.connectTimeout,
      keepaliveLimit: s.keepaliveLimit,
      drainTimeout: s.drainTimeout,
      maxInflightInbound: s.maxInflightInbound,
      preConnect: this.#preConnect,
      authenticate: this.#authenticate,
      authorizePublish: this.#authorizePublish,
      authorizeSubscribe: this.#authorizeSubscribe,
      authorizeForward: this.#authorizeForward,
    }, this.#ingress);
    const logger = this.#ctx.logger;
    const clientError = (client: Client, err: Error) => {
      if (err.message === AEDES_CONNECT_TIMEOUT) this.#counters.connectTimeouts++;
      else if (err.message !== AEDES_DRAIN_TIMEOUT) this.#counters.clientErrors++;
      else if (!this.#cutForDrain.has(client)) {
        this.#cutForDrain.add(client);
        this.#slowConsumers.disconnected++;
      }
      logger.debug({ clientId: client.id ?? undefined, err: err.message }, 'MQTT connection closed on error');
    };
    broker.on('clientError', clientError);
    broker.on('connectionError', clientError);
    broker.on('subscribe', (subscriptions: Subscription[], client: Client) => {
      this.#shares.activate(client, subscriptions.map((s) => s.topic));
      this.#requestReply.subscribed(client, subscriptions);
    });
    broker.on('clientReady', (client: Client) => {
      this.#shares.activate(client);
      // a resumed session's subscriptions: aedes restored them without a SUBSCRIBE
      const restored = (client as Client & ClientSubscriptions).subscriptions;
      this.#requestReply.subscribed(client, Object.entries(restored).map(([topic, { qos }]) => ({ topic, qos: qos as QoS })));
    });
    broker.on('unsubscribe', (topics: string[], client: Client) => {
      for (const topic of topics) if (topic.startsWith(SHARE_PREFIX)) this.#shares.remove(client, topic);
      this.#requestReply.unsubscribed(client, topics);
    });
    broker.on('clientDisconnect', (client: Client) => {
      this.#shares.removeAll(client);
      this.#requestReply.disconnected(client);
      // A session's expiry counts from its client's leaving.
      if (store && !client.clean) store.touch(client.id).catch(this.#sessionStoreError);
    });
    // aedes emits persistence and will-sweeper failures here; unhandled, they would throw.
    (broker as unknown as NodeJS.EventEmitter).on('error', (err: Error) => logger.error({ err }, 'MQTT broker error'));
    await broker.listen();
    this.#broker = broker;
    this.#feed = await this.#ctx.subscribeAll(this.#forward);

    const http = this.#ctx.http;
    if (http && s.websocket) {
      http.webSocket({ maxPayload: s.maxPacketSize }, (app, _options, done) => {
        app.get(WEBSOCKET_PATH, { websocket: true }, (socket, request) => this.#acceptWebSocket(socket, request.raw));
        done();
      });
    }
  }

  /**
   * Cluster mode: every node's broker keeps its sessions in Redis (./redis-persistence.ts), in
   * step with the other nodes through notes; a client id claimed by another node is ended here.
   */
  async #shareSessions(sessions: SharedSessions): Promise<RedisSessionStore> {
    // Loaded only in cluster mode: embedded mode loads no Redis code.
    const { RedisSessionStore } = await import('./redis-persistence.js');
    const store = new RedisSessionStore({
      redis: sessions.redis,
      keyPrefix: sessions.keyPrefix,
      maxQueued: this.#settings.maxQueuedPerSession,
      sessionExpiryMs: this.#settings.sessionExpiry,
      broadcast: (note) => sessions.broadcast(note),
      onError: this.#sessionStoreError,
      onQueueFull: (count) => {
        this.#counters.sessionQueueFull += count;
      },
    });
    sessions.onNote(store.noteReceived);
    sessions.onReconnect(() => void store.resync().catch(this.#sessionStoreError));
    sessions.onClaim(this.#endClaimed);
    this.#sessionStore = store;
    return store;
  }

  readonly #sessionStoreError = (err: Error): void => {
    this.#counters.sessionStoreErrors++;
    this.#sessionStoreErrors.report(err);
  };

  /** Another node took this client id: its connection here ends [MQTT-3.1.4-2]. */
  readonly #endClaimed = async (clientId: string): Promise<void> => {
    const connected = this.#broker?.clients[clientId];
    if (connected) await new Promise<void>((resolve) => connected.close(() => resolve()));
  };

  async start(): Promise<void> {
    const listener = this.#ctx.listener();
    if (!listener || this.#listener || this.#stopping) return;
    await this.register();
    this.#listener = await this.#ctx.listen(({ socket, remoteAddress, certificate }) => this.#accept(socket, remoteAddress, 'mqtt', certificate));
  }

  address(): AddressInfo | undefined {
    return this.#listener?.address();
  }

  connections(): number {
    return this.#connections.size;
  }

  listConnections(limit: number): ConnectionInfo[] {
    const list: ConnectionInfo[] = [];
    for (const [connection, { client, since }] of this.#connections) {
      if (list.length >= limit) break;
      const session = this.#sessions.get(client);
      if (!session) continue;
      const info: ConnectionInfo = { protocol: 'mqtt', id: client.id, since, subscriptions: filterCount(client) };
      if (connection.remoteAddress !== undefined) info.remoteAddress = connection.remoteAddress;
      if (session.identity.principal !== undefined) info.principal = session.identity.principal;
      list.push(info);
    }
    return list;
  }

  stop(_deadline: number): Promise<void> {
    this.#stopped ??= this.#stop();
    return this.#stopped;
  }

  /**
   * Stops accepting, then closes every client (aedes publishes their wills: the connections end
   * without DISCONNECT [MQTT-3.1.2-8]) and leaves the bus.
   */
  async #stop(): Promise<void> {
    this.#stopping = true;
    const serverClosed = this.#listener?.close() ?? Promise.resolve();
    const broker = this.#broker;
    if (broker) {
      await new Promise<void>((resolve) => broker.close(() => resolve()));
      await this.#feed?.close();
      await broker.persistence.destroy();
    }
    // aedes closes the clients it registered; connections that never sent CONNECT are ours to close.
    for (const connection of this.#connections.keys()) connection.destroy();
    await serverClosed;
  }

  // -------------------------------------------------------------------------------------------
  // Connections

  #acceptWebSocket(socket: WebSocket, request: IncomingMessage): void {
    // [MQTT-6.0.0-1]: MQTT goes in binary frames; any other data frame closes the connection.
    socket.on('message', (_data, isBinary) => {
      if (!isBinary) socket.close(1003, 'MQTT needs binary frames');
    });
    this.#accept(createWebSocketStream(socket), request.socket.remoteAddress, 'http', this.#ctx.http?.clientCertificate(request.socket), request);
  }

  #accept(stream: Duplex, remoteAddress: string | undefined, listener: string, certificate: ClientCertificate | undefined, request?: IncomingMessage): void {
    const broker = this.#broker;
    if (!broker || this.#stopping) {
      stream.destroy();
      return;
    }
    const connection = new GuardedConnection(stream, this.#settings.maxPacketSize, { remoteAddress, listener, certificate }, (violation) => this.#violation(violation, remoteAddress));
    this.#connections.set(connection, { client: broker.handle(connection, request), since: Date.now() });
    // 'close' comes on a later tick, even for a connection aedes destroyed right away
    connection.once('close', () => this.#connections.delete(connection));
  }

  #violation(violation: Violation, remoteAddress: string | undefined): void {
    if (violation === 'too_large') this.#counters.oversizePackets++;
    else this.#counters.malformedPackets++;
    this.#ctx.refused(violation === 'too_large' ? 'too_large' : 'bad_request');
    this.#ctx.logger.debug({ remoteAddress, violation, maxPacketSize: this.#settings.maxPacketSize }, 'MQTT connection closed: packet refused at its header');
  }

  // -------------------------------------------------------------------------------------------
  // aedes hooks

  readonly #preConnect = (client: Client, packet: ConnectPacket, callback: (error: Error | null, success: boolean) => void): void => {
    // aedes makes up an id for an empty one even with a persistent session, which [MQTT-3.1.3-8] forbids.
    if (packet.clientId === '' && !packet.clean) this.#emptyIdPersistent.add(client);
    callback(null, true);
  };

  readonly #authenticate = (client: Client, username: string | undefined, password: Buffer | undefined, callback: (error: AuthenticateError | null, success: boolean | null) => void): void => {
    if (this.#emptyIdPersistent.has(client)) {
      this.#counters.connectsRefused++;
      this.#ctx.refused('bad_request');
      // [MQTT-3.1.3-8]: CONNACK 0x02 "identifier rejected", then close.
      callback(refusal('a persistent session needs a client id', 2), false);
      return;
    }
    const connection = client.conn as GuardedConnection;
    // A JWT or an API key arrives as the password; without credentials, a verified client certificate names the client.
    const peer = { listener: connection.listener, address: connection.remoteAddress, certificate: connection.certificate };
    this.#ctx.access().authenticate({ username, password }, peer).then((identity) => {
      const source: MessageSource = { protocol: 'mqtt', clientId: client.id };
      if (connection.remoteAddress !== undefined) source.remoteAddress = connection.remoteAddress;
      if (identity.principal !== undefined) source.principal = identity.principal;
      this.#sessions.set(client, { identity, source });
      // A connection does not outlive its credential (a JWT's exp): 3.1.1 has no DISCONNECT from the server, so it is closed.
      const cancelExpiry = onExpiry(identity, () => {
        this.#counters.credentialsExpired++;
        this.#ctx.logger.info({ clientId: client.id, principal: identity.principal }, 'MQTT connection closed: its credential expired');
        client.close();
      });
      connection.once('close', cancelExpiry);
      const sessions = this.#ctx.sessions;
      const store = this.#sessionStore;
      if (!sessions || !store) {
        callback(null, true);
        return;
      }
      // Cluster mode: a connection of this client id on another node ends first; the session's life starts again.
      Promise.all([sessions.claim(client.id, this.#settings.sessionExpiry), store.touch(client.id)]).then(() => callback(null, true), (err: unknown) => {
        this.#ctx.logger.warn({ clientId: client.id, err }, 'MQTT client id could not be claimed in the cluster');
        callback(null, true);
      });
    }, (err: unknown) => {
      const error = toGatewayError(err);
      this.#counters.connectsRefused++;
      this.#ctx.refused(error.code);
      // 0x04 bad user name or password; 0x05 not authorized when credentials are required but
      // missing; 0x03 server unavailable while the address backs off or the checks queue is full
      const code = error.code === 'unauthenticated' ? (username || password ? 4 : 5) : 3;
      callback(refusal(error.message, code), false);
    });
  };

  /**
   * ACL first. Then QoS 0 and 1 are routed here, because aedes writes the PUBACK as soon as
   * this hook answers (lib/handlers/publish.js); QoS 2 is routed in publish, after aedes's
   * duplicate check [MQTT-4.3.3-2] and before its PUBREC. An error closes the connection.
   */
  readonly #authorizePublish = (client: Client | null, packet: PublishPacket, callback: (error?: Error | null) => void): void => {
    // No client: aedes's will sweeper publishing for a broker of the cluster that died.
    if (!client) {
      callback(null);
      return;
    }
    const session = this.#sessions.get(client);
    // Requests and answers (./request-reply.ts) are settled here, whatever their QoS.
    if (session && (packet.topic.startsWith(REQUEST_PREFIX) || packet.topic.startsWith(INBOX_PREFIX))) {
      if (packet.topic.startsWith(REQUEST_PREFIX)) this.#requestReply.request(client, packet.topic, packet.payload, packet.qos);
      else this.#answer(client, session, packet);
      if (packet.qos === 2) this.#notRouted.add(packet);
      callback(null);
      return;
    }
    // The ACL refuses reserved keys ($SYS/, inboxes) too: aedes's default hook refused $SYS/
    // (aedes #597), and replacing it must not open them.
    if (!session || !this.#ctx.access().canPublish(session.identity, packet.topic)) {
      // [MQTT-3.3.5-2]: 3.1.1 cannot say no; acknowledge as usual and drop, as Mosquitto does.
      this.#ctx.refused('forbidden');
      if (packet.qos === 2) this.#notRouted.add(packet);
      callback(null);
      return;
    }
    if (packet.qos === 2) {
      callback(null);
      return;
    }
    if (this.#held.has(client)) {
      this.#route(client, session, packet).then(() => callback(null), callback);
      return;
    }
    this.#attemptNow(client, session, packet, callback);
  };

  /**
   * GatewayBroker's ingress: aedes calls it after authorizePublish for every client PUBLISH and
   * will. QoS 0 and 1 were routed (or refused) there; QoS 2 is routed here, its PUBREC follows.
   */
  readonly #ingress = (client: Client, packet: PublishPacket, done: (error?: Error) => void): void => {
    if (packet.qos < 2 || this.#notRouted.delete(packet)) {
      done();
      return;
    }
    const session = this.#sessions.get(client);
    if (!session) {
      done(new Error('PUBLISH from a client that is not connected'));
      return;
    }
    this.#route(client, session, packet).then(() => done(), (err: Error) => {
      // Not taken: forget the stored packet, so a retransmission is routed rather than answered as a duplicate.
      this.#broker!.persistence.incomingDelPacket(client, packet).then(() => done(err), () => done(err));
    });
  };

  /** Denied subscriptions get 0x80 in SUBACK [MQTT-3.9.3-2]. */
  readonly #authorizeSubscribe = (client: Client, subscription: Subscription, callback: (error: Error | null, subscription?: Subscription | null) => void): void => {
    // Before aedes stores it: from here on a message may have to be queued for this session.
    if (!client.clean) this.#persistentSessions = true;
    const session = this.#sessions.get(client);
    const existing = (client as Client & ClientSubscriptions).subscriptions;
    const full = !(subscription.topic in existing) && Object.keys(existing).length >= this.#settings.maxSubscriptions;
    const share = subscription.topic.startsWith(SHARE_PREFIX) ? parseShare(subscription.topic) : undefined;
    if (share && 'problem' in share) {
      this.#refuseSubscription('bad_request', callback);
      return;
    }
    const respondsOn = responderFilter(subscription.topic);
    if (respondsOn !== undefined) {
      if (patternProblem(respondsOn) !== undefined) this.#refuseSubscription('bad_request', callback);
      else if (full || !session || !this.#ctx.access().canRespond(session.identity, respondsOn)) this.#refuseSubscription('forbidden', callback);
      // Requests are written to the client directly (./request-reply.ts): aedes stores the
      // subscription, which no message on the bus can match, for a session to resume.
      else callback(null, { ...subscription, qos: Math.min(subscription.qos, 1) as QoS });
      return;
    }
    if (full || !session || !this.#ctx.access().canSubscribe(session.identity, share ? share.filter : subscription.topic)) {
      this.#refuseSubscription('forbidden', callback);
      return;
    }
    if (share) {
      this.#joinShare(client, subscription, share, callback);
      return;
    }
    callback(null, subscription);
  };

  #refuseSubscription(code: ErrorCode, callback: (error: Error | null, subscription?: Subscription | null) => void): void {
    this.#counters.subscriptionsRefused++;
    this.#ctx.refused(code);
    callback(null, null);
  }

  /**
   * `$share/<group>/<filter>` makes the client a member of a core group, at most QoS 1. aedes keeps
   * the subscription as it is (no topic starts with `$share/`, so it never matches itself) and
   * restores it with a persistent session, which joins the group again.
   */
  #joinShare(client: Client, subscription: Subscription, share: { group: string; filter: string }, callback: (error: Error | null, subscription?: Subscription | null) => void): void {
    const qos = Math.min(subscription.qos, 1) as QoS;
    const current = this.#shares.get(client, subscription.topic);
    if (current) {
      current.qos = qos;
      callback(null, { ...subscription, qos });
      return;
    }
    const member = new ShareMember(client, qos, () => this.#settings.maxOutboundBuffer);
    this.#ctx.joinGroup(share.group, share.filter, member).then((membership) => {
      member.membership = membership;
      if (client.closed) {
        membership.leave();
        return;
      }
      this.#shares.add(client, subscription.topic, member);
      callback(null, { ...subscription, qos });
    }, (err: unknown) => this.#refuseSubscription(toGatewayError(err).code, callback));
  }

  /**
   * Runs for every delivery (the hot path), on a packet aedes made for this delivery alone.
   * Sheds QoS 0 to a client that is far behind, and fixes the delivery QoS: aedes lowers it only
   * for a subscription equal to the topic, so a wildcard subscription got the publish QoS.
   */
  readonly #authorizeForward = (client: Client, packet: AedesPublishPacket): AedesPublishPacket | null => {
    if ((packet as ExpiringPacket).messageExpiry !== undefined && (packet as ExpiringPacket).messageExpiry! <= Date.now()) {
      this.#counters.expired++;
      return null;
    }
    const subscriptions = (client as Client & ClientSubscriptions).subscriptions;
    const connection = client.conn as GuardedConnection;
    if (connection.outboundBytes > this.#settings.maxOutboundBuffer && (packet.qos === 0 || grantedQos(subscriptions, packet.topic, 1) === 0)) {
      this.#slowConsumers.shed++;
      return null;
    }
    if (packet.qos > 0) {
      const granted = grantedQos(subscriptions, packet.topic, packet.qos);
      if (granted < packet.qos) packet.qos = granted as QoS;
    }
    if (this.#collecting) this.#hits.push(connection);
    return packet;
  };

  // -------------------------------------------------------------------------------------------
  // Routing

  /**
   * Routes one PUBLISH; resolves when it may be acknowledged, rejects when its connection must
   * close. A PUBLISH arriving while an earlier one of the same client is held waits its turn,
   * so a topic's messages keep their order [MQTT-4.6.0-6].
   */
  #route(client: Client, session: Session, packet: PublishPacket): Promise<void> {
    const ahead = this.#held.get(client);
    if (ahead === undefined) return this.#attempt(client, session, packet, false);
    const run = () => this.#attempt(client, session, packet, true);
    const queued = ahead.then(run, run);
    this.#hold(client, queued);
    return queued;
  }

  #hold(client: Client, work: Promise<void>): void {
    this.#held.set(client, work);
    const release = () => {
      if (this.#held.get(client) === work) this.#held.delete(client);
    };
    work.then(release, release);
  }

  /**
   * One dispatch; no async function here: this is the hot path, and each layer of promises shows.
   * `waited`: the PUBLISH waited for those held ahead of it, so it is now first in its client's chain.
   */
  #attempt(client: Client, session: Session, packet: PublishPacket, waited: boolean): Promise<void> {
    let message: Message;
    try {
      message = this.#message(session, packet);
    } catch (err) {
      return this.#refused(toGatewayError(err), packet.qos, client);
    }
    return this.#ctx.dispatch(message).then(this.#accepted, (err: unknown) => this.#refusal(client, message, toGatewayError(err), waited));
  }

  /**
   * The answer of a responder to the request it was handed: the topic is the inbox, the
   * correlation id the one the request carried. Acknowledged and dropped when it answers
   * nothing (never handed, answered already, or too late), like any refused PUBLISH.
   */
  #answer(client: Client, session: Session, packet: PublishPacket): void {
    const correlationId = this.#requestReply.answer(client, packet.topic);
    if (correlationId === undefined) {
      this.#ctx.refused('forbidden');
      return;
    }
    let message: Message;
    try {
      message = this.#message(session, packet);
    } catch (err) {
      this.#ctx.refused(toGatewayError(err).code);
      return;
    }
    message.correlationId = correlationId;
    this.#ctx.dispatch(message).catch((err: unknown) => this.#ctx.refused(toGatewayError(err).code));
  }

  readonly #accepted = (): void => {
    this.#counters.routed++;
  };

  /**
   * #attempt for a client with nothing held (the common case), answering aedes at once when the
   * message is accepted at once, else together with the PUBLISHes waiting for the same thing
   * (one turn's deliveries to the same subscribers): one promise reaction for all of them.
   */
  #attemptNow(client: Client, session: Session, packet: PublishPacket, callback: AedesCallback): void {
    let message: Message;
    try {
      message = this.#message(session, packet);
    } catch (err) {
      this.#refused(toGatewayError(err), packet.qos, client).then(() => callback(null), callback);
      return;
    }
    let pending: Promise<void> | undefined;
    try {
      pending = this.#ctx.accept(message);
    } catch (err) {
      // Taken up after the PUBLISHes read with this one are dispatched, as a rejected dispatch
      // was: they see the same buckets and queues, and a refused QoS 0 among them is dropped at
      // once rather than held behind this one (#refusal).
      const error = toGatewayError(err);
      Promise.resolve().then(() => this.#refusal(client, message, error)).then(() => callback(null), callback);
      return;
    }
    if (pending === undefined) {
      this.#counters.routed++;
      callback(null);
      return;
    }
    let answers = this.#answering;
    if (answers === undefined || answers.pending !== pending) {
      answers = this.#awaitAnswers(pending);
      this.#answering = answers;
    }
    answers.clients.push(client);
    answers.messages.push(message);
    answers.callbacks.push(callback);
  }

  #awaitAnswers(pending: Promise<void>): Answers {
    const spare = this.#spareAnswers;
    this.#spareAnswers = undefined;
    const answers: Answers = { pending, clients: spare?.clients ?? [], messages: spare?.messages ?? [], callbacks: spare?.callbacks ?? [] };
    // Ended before any callback runs: aedes may read the next PUBLISHes from inside one.
    const end = () => {
      if (this.#answering === answers) this.#answering = undefined;
    };
    const recycle = () => {
      const { clients, messages, callbacks } = answers;
      this.#spareAnswers = { clients: emptied(clients), messages: emptied(messages), callbacks: emptied(callbacks) };
    };
    pending.then(() => {
      end();
      const { callbacks } = answers;
      this.#counters.routed += callbacks.length;
      for (let i = 0; i < callbacks.length; i++) callbacks[i]!(null);
      recycle();
    }, (err: unknown) => {
      end();
      const error = toGatewayError(err);
      for (let i = 0; i < answers.callbacks.length; i++) {
        const callback = answers.callbacks[i]!;
        this.#refusal(answers.clients[i]!, answers.messages[i]!, error).then(() => callback(null), callback);
      }
      recycle();
    });
    return answers;
  }

  #refusal(client: Client, message: Message, error: GatewayError, first = false): Promise<void> {
    // A will (its client already closed) cannot be held or closed: it is dropped and counted.
    if (client.closed || refusalFor(error.code, message.qos) !== 'hold') return this.#refused(error, message.qos, client);
    this.#counters.held++;
    // First in its client's chain, it retries at once: the chain (#held) ends in this very
    // PUBLISH, so waiting for it would wait for itself.
    if (first) return this.#retry(client, message, error);
    // Buckets and queues decide synchronously when dispatch is called, so PUBLISHes dispatched in
    // the same turn as this one were refused too and reach here in order: their retries chain
    // behind this one, and no later PUBLISH can be accepted ahead of a held one.
    const ahead = this.#held.get(client);
    const retry = () => this.#retry(client, message, error);
    const retrying = ahead === undefined ? retry() : ahead.then(retry, retry);
    this.#hold(client, retrying);
    return retrying;
  }

  /**
   * Holds a rate-limited or overloaded PUBLISH: aedes reads nothing more from this client until
   * it is answered, so the client is paced. Backoff doubles from 25 ms up to the error's
   * retryAfterMs; past mqtt.maxHold the connection is closed (the client retransmits later).
   */
  async #retry(client: Client, message: Message, first: GatewayError): Promise<void> {
    const since = Date.now();
    let error = first;
    for (let attempt = 0; ; attempt++) {
      const left = since + this.#settings.maxHold - Date.now();
      if (left <= 0 || client.closed || this.#stopping) {
        this.#counters.holdTimeouts++;
        this.#ctx.refused(error.code);
        throw new Error(`${error.code}: not accepted within mqtt.maxHold (${this.#settings.maxHold} ms): ${error.message}`);
      }
      await delay(Math.min(left, error.details.retryAfterMs ?? 1000, 25 * 2 ** attempt));
      const next = await this.#dispatch(message);
      if (next === undefined) return;
      error = next;
      if (refusalFor(error.code, message.qos) !== 'hold') return this.#refused(error, message.qos, client);
    }
  }

  /** undefined once accepted, else why not */
  #dispatch(message: Message): Promise<GatewayError | undefined> {
    return this.#ctx.dispatch(message).then(() => {
      this.#counters.routed++;
      return undefined;
    }, toGatewayError);
  }

  /** Counts a final refusal; resolves to acknowledge-and-drop, or rejects to close the connection. */
  #refused(error: GatewayError, qos: QoS, client: Client): Promise<void> {
    this.#ctx.refused(error.code);
    this.#ctx.logger.debug({ clientId: client.id, code: error.code, err: error.message }, 'MQTT PUBLISH refused');
    if (!client.closed && refusalFor(error.code, qos) === 'close') return Promise.reject(new Error(`${error.code}: ${error.message}`));
    return Promise.resolve();
  }

  #message(session: Session, packet: PublishPacket): Message {
    const limit = this.#ctx.maxPayloadSize();
    const size = typeof packet.payload === 'string' ? Buffer.byteLength(packet.payload) : packet.payload.length;
    if (size > limit) throw new GatewayError('too_large', `payload of ${size} bytes exceeds limits.maxPayloadSize (${limit})`);
    return messageFromPublish(packet as InboundPublish, session.source);
  }

  /**
   * The bus's deliveries, each published by the broker as its own (no client): retained storage,
   * offline queues of persistent sessions and delivery at each subscription's QoS, as aedes does.
   * The bus waits until the clients it went to have it written, and while one of them has a full
   * socket (SubscriberPacing): so the publisher, whatever its protocol, is acknowledged and read at
   * the pace MQTT subscribers read.
   */
  readonly #forward = (message: Message, origin?: BusOrigin): Promise<void> | undefined => {
    const broker = this.#broker;
    if (!broker || this.#stopping) return undefined;
    // What aedes would neither keep (retained, queued for a persistent session) nor deliver at
    // once costs it a publish all the same (about a kilobyte and a microsecond): an HTTP or gRPC
    // publish with no MQTT subscriber at all need not reach it.
    if (message.retain !== true && !broker.listening && (message.qos === 0 || !this.#persistentSessions)) return undefined;
    // Set field by field rather than spread in: a spread of a conditional object costs an object
    // per message (and a slower copy) even when it is empty.
    const packet: PublishPacket & ExpiringPacket & Partial<Pick<AedesPublishPacket, 'brokerId' | 'brokerCounter'>> = {
      cmd: 'publish', topic: message.key, payload: message.payload, qos: message.qos, retain: message.retain === true, dup: false,
    };
    // Only an MQTT 5 engine writes them; building them for 3.1.1 would cost an allocation per message.
    if (broker.mqtt5) packet.properties = publishProperties(message);
    // Kept with the packet (aedes copies it), offline queues included: authorizeForward checks it.
    if (message.expiresAt !== undefined) packet.messageExpiry = message.expiresAt;
    if (origin) {
      // Cluster mode: the message is queued for sessions under the same identity on every node;
      // its counter grows in the order every node delivers its publisher's messages, as aedes's
      // duplicate check per brokerId needs.
      packet.brokerId = origin.publisher;
      packet.brokerCounter = origin.sequence;
    }
    if (this.#sessionStore && origin === undefined && message.qos > 0) {
      // In cluster mode, the only QoS ≥ 1 messages without an origin are the retained ones a
      // starting node restores (RedisBus.restoreRetained): kept for later subscribers, not queued
      // again for the sessions that had them.
      this.#sessionStore.storeRetained(packet).then(() => this.#forwarded(), this.#forwarded);
      return undefined;
    }
    const hits = this.#hits;
    this.#collecting = true;
    try {
      broker.forward(packet, this.#forwarded);
    } finally {
      this.#collecting = false;
    }
    if (hits.length === 0) return undefined;
    const taken = hits.length === 1 ? this.#pacing.taken(hits[0]!) : this.#pacing.takenByAll(hits);
    emptied(hits);
    return taken;
  };

  readonly #forwarded = (err?: Error): void => {
    if (!err) return;
    this.#counters.forwardFailed++;
    this.#ctx.logger.debug({ err: err.message }, 'MQTT broker did not take a bus message');
  };
}

/** What aedes hands authorizePublish to hear that a PUBLISH may go on (or, with an error, that its connection closes). */
type AedesCallback = (error?: Error | null) => void;

/** PUBLISHes accepted or refused once the same promise settles, answered to aedes in the order they came. */
interface Answers {
  readonly pending: Promise<void>;
  readonly clients: Client[];
  readonly messages: Message[];
  readonly callbacks: AedesCallback[];
}

/** A CONNACK return code for aedes's authenticate callback. */
function refusal(message: string, returnCode: 2 | 3 | 4 | 5): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

/**
 * The highest QoS among the client's subscriptions that match the topic: the QoS of a delivery
 * is the smaller of the publish QoS and this [MQTT-3.8.4-6], [MQTT-3.3.5-1]. Stops at `enough`.
 */
function grantedQos(subscriptions: Record<string, { qos: number }>, topic: string, enough: number): number {
  let best = subscriptions[topic]?.qos ?? 0;
  if (best >= enough) return best;
  for (const filter in subscriptions) {
    const qos = subscriptions[filter]!.qos;
    if (qos > best && filterMatches(filter, topic)) {
      best = qos;
      if (best >= enough) break;
    }
  }
  return best;
}

/** The MQTT protocol on an engine of choice (tests, and aedes 2 when it is released). */
export function mqttProtocolOn(engine: MqttEngineFactory): ProtocolRegistration<MqttSettings> {
  return { protocol: 'mqtt', section: mqttSection, listener: true, create: (ctx) => new MqttAdapter(ctx, engine) };
}

export const mqttProtocol = mqttProtocolOn(aedesEngine);

/**
 * The filters a client holds, restored persistent sessions included. aedes keeps them on the
 * client (lib/client.js) without typing it; its subscribe events miss the restored ones.
 */
function filterCount(client: Client): number {
  const filters = (client as Client & { subscriptions?: Record<string, unknown> }).subscriptions;
  return filters ? Object.keys(filters).length : 0;
}
