import { Aedes, type AedesOptions, type Client, type PublishPacket } from 'aedes';

type Done = (error?: Error) => void;
/** what aedes calls to deliver a publish to one client subscription */
type Delivery = Parameters<Aedes['subscribe']>[1];

/** What becomes of a client's PUBLISH (from the wire, or its will) instead of broker forwarding. */
export type Ingress = (client: Client, packet: PublishPacket, done: Done) => void;

/**
 * The MQTT engine the adapter runs on, and all it uses of it: the seam where aedes 2 (MQTT 5)
 * drops in when it is released (../shared LIBRARIES.md §2c: not the 2.0.0 beta). The adapter's
 * hooks (authenticate, authorizePublish, …) and its `Client` objects are aedes's, which aedes 2
 * keeps.
 */
export interface MqttEngine extends Pick<Aedes, 'on' | 'listen' | 'handle' | 'close'> {
  /** the clients connected to this broker, by client id (aedes keeps it; its types leave it out) */
  readonly clients: Record<string, Client>;
  /** it speaks MQTT 5: deliveries carry the Message's properties (mapping.ts publishProperties) */
  readonly mqtt5: boolean;
  readonly persistence: SessionPersistence;
  /**
   * Some client subscription is held now, so a publish could be delivered at once (aedes's own
   * `$SYS/` listeners aside: they hear the broker's own announcements, which never come from the bus).
   */
  readonly listening: boolean;
  /** Publishes as the broker (no client): retained storage, offline queues, each subscription's QoS. */
  forward(packet: PublishPacket, done: Done): void;
}

/** What the adapter uses of aedes-persistence's API (promise flavour, as aedes 1.2 sets it up). */
export interface SessionPersistence {
  incomingDelPacket(client: Client, packet: PublishPacket): Promise<unknown>;
  destroy(): Promise<void>;
}

/** Makes the engine; the adapter calls it once, with its hooks. */
export type MqttEngineFactory = (options: AedesOptions, ingress: Ingress) => MqttEngine;

/**
 * aedes 1.2 with one change: it is not its clients' bus. Every PUBLISH aedes receives from a
 * client reaches `broker.publish(packet, client, done)` (lib/handlers/publish.js, and
 * lib/client.js for wills); here that call goes to the gateway's ingress (the router) instead of
 * aedes's own forwarding, so the broker never delivers a client's packet by itself. What the
 * router publishes comes back from the core bus through `forward`, which is aedes's own publish:
 * retained storage, offline queues of persistent sessions, delivery at each subscription's QoS.
 * aedes's own `$SYS/` announcements (no client) go to its clients as before.
 */
export class GatewayBroker extends Aedes implements MqttEngine {
  /** aedes 1.2 speaks MQTT 3.1.1 only */
  readonly mqtt5: boolean = false;
  /** the aedes-persistence instance aedes set up in listen(): memory, or sessions in Redis in cluster mode */
  declare persistence: SessionPersistence;
  declare clients: Record<string, Client>;
  readonly #ingress: Ingress;
  /**
   * The delivery functions aedes holds for its clients' subscriptions: one per client and filter,
   * added as aedes adds it and dropped once aedes removed it, so that `listening` is never false
   * while one could still be called.
   */
  readonly #deliveries = new Set<Delivery>();

  constructor(options: AedesOptions, ingress: Ingress) {
    super(options);
    this.#ingress = ingress;
  }

  get listening(): boolean {
    return this.#deliveries.size > 0;
  }

  override subscribe(topic: string, delivery: Delivery, done: () => void): void {
    this.#deliveries.add(delivery);
    super.subscribe(topic, delivery, done);
  }

  override unsubscribe(topic: string, delivery: Delivery, done?: Done): void {
    // aedes calls back with an error (and removes nothing) for a topic it refuses outright.
    super.unsubscribe(topic, delivery, (err?: Error) => {
      if (!err) this.#deliveries.delete(delivery);
      done?.(err);
    });
  }

  override publish(packet: PublishPacket, clientOrDone?: Client | null | Done, done?: Done): void {
    if (typeof clientOrDone === 'function') {
      super.publish(packet, clientOrDone);
    } else if (clientOrDone) {
      this.#ingress(clientOrDone, packet, done ?? noop);
    } else {
      super.publish(packet, done ?? noop);
    }
  }

  /** Publishes as the broker (no client): what the router's `publish` targets use. */
  forward(packet: PublishPacket, done: Done): void {
    super.publish(packet, done);
  }
}

function noop(): void {}

/** aedes 1.2: the engine junction ships with. */
export const aedesEngine: MqttEngineFactory = (options, ingress) => new GatewayBroker(options, ingress);
