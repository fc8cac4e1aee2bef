import { Aedes, type AedesOptions, type Client, type PublishPacket } from 'aedes';

type Done = (error?: Error) => void;

/** What becomes of a client's PUBLISH (from the wire, or its will) instead of broker forwarding. */
export type Ingress = (client: Client, packet: PublishPacket, done: Done) => void;

/**
 * aedes 1.2 with one change: it is not its clients' bus. Every PUBLISH aedes receives from a
 * client reaches `broker.publish(packet, client, done)` (lib/handlers/publish.js, and
 * lib/client.js for wills); here that call goes to the gateway's ingress (the router) instead of
 * aedes's own forwarding, so the broker never delivers a client's packet by itself. What the
 * router publishes comes back from the core bus through `forward`, which is aedes's own publish:
 * retained storage, offline queues of persistent sessions, delivery at each subscription's QoS.
 * aedes's own `$SYS/` announcements (no client) go to its clients as before.
 */
export class GatewayBroker extends Aedes {
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
