import { Aedes, type AedesOptions, type Client, type PublishPacket } from 'aedes';
import type mqemitter from 'mqemitter';

type Done = (error?: Error) => void;

/** What becomes of a client's PUBLISH (from the wire, or its will) instead of broker forwarding. */
export type Ingress = (client: Client, packet: PublishPacket, done: Done) => void;

/**
 * aedes 1.2 with one change. Every PUBLISH aedes receives from a client reaches
 * `broker.publish(packet, client, done)` (lib/handlers/publish.js, and lib/client.js for wills);
 * here that call goes to the gateway's router instead of being forwarded, so the broker never
 * delivers a client's packet by itself and nothing is delivered twice. The router's `publish`
 * targets come back through `forward`, which is aedes's own publish: retained storage, offline
 * queues of persistent sessions, delivery at each subscription's QoS. aedes's own `$SYS/`
 * announcements (no client) are forwarded as before.
 */
export class GatewayBroker extends Aedes {
  /** aedes numbers each publication with ++counter (aedes.js; aedes-packet); the publisher numbers bus packets the same way */
  declare counter: number;
  /** the aedes-persistence instance aedes set up in listen() (memory by default) */
  declare persistence: {
    incomingDelPacket(client: Client, packet: PublishPacket): Promise<unknown>;
    destroy(): Promise<void>;
  };
  readonly #ingress: Ingress;

  constructor(options: AedesOptions, ingress: Ingress) {
    super(options);
    this.#ingress = ingress;
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

/**
 * The bus's emitter as aedes sees it. aedes subscribes its clients on it, so they receive what
 * any protocol publishes; but `broker.close()` closes its mq, and this one belongs to the bus.
 * Closing it removes only the listeners aedes added (its $SYS handlers stay otherwise).
 */
export function borrowedEmitter(emitter: mqemitter.MQEmitter): mqemitter.MQEmitter {
  type Listener = (message: mqemitter.Message, done: () => void) => void;
  const added = new Map<Listener, Set<string>>();
  const borrowed: mqemitter.MQEmitter = {
    get current() { return emitter.current; },
    get concurrent() { return emitter.concurrent; },
    on(topic, listener, callback) {
      let topics = added.get(listener);
      if (!topics) added.set(listener, topics = new Set());
      topics.add(topic);
      emitter.on(topic, listener, callback);
      return borrowed;
    },
    removeListener(topic, listener, callback) {
      const topics = added.get(listener);
      if (topics?.delete(topic) && topics.size === 0) added.delete(listener);
      emitter.removeListener(topic, listener, callback);
    },
    emit(message, callback) {
      emitter.emit(message, callback);
    },
    close(callback) {
      const pending: Promise<void>[] = [];
      for (const [listener, topics] of added) {
        for (const topic of topics) pending.push(new Promise((resolve) => emitter.removeListener(topic, listener, () => resolve())));
      }
      added.clear();
      void Promise.all(pending).then(() => callback());
    },
  };
  return borrowed;
}
