import type { BenchProtocol, ScenarioName, ServerKind, ServerPorts } from '../types.js';

/** What a protocol driver needs to open one client connection. */
export interface ConnectionContext {
  /** grpc-stream publishes on PublishStream, every other scenario with unary calls */
  scenario: ScenarioName;
  server: ServerKind;
  host: string;
  ports: ServerPorts;
  /** loopback source address, so no single address runs out of ephemeral ports */
  localAddress: string;
  /** unique per connection across workers (MQTT client ids, NATS names) */
  clientId: string;
  qos: 0 | 1;
  keepaliveS: number;
  /** a publisher's window (`--inflight`): HTTP opens that many connections, so at a fixed rate too no request waits in line behind a slow one */
  inflight: number;
  /** the CA certificate (PEM) to trust when the run is over TLS */
  tlsCa: string | undefined;
  /** MQTT subscribers connect with a persistent session (clean: false) */
  persistent: boolean;
  /** called once if the connection closes while it should have stayed open */
  onDrop(reason: string): void;
}

/** Called once per message: without an error when acknowledged (QoS 1, HTTP, gRPC) or written (QoS 0). */
export type SendDone = (error?: string) => void;

export interface PublisherConnection {
  publish(key: string, payload: string, priority: number, done: SendDone): void;
  close(): Promise<void>;
}

export interface Closable {
  close(): Promise<void>;
}

/** One protocol's client side, the same code for Junction and for every peer that speaks it. */
export interface ProtocolDriver {
  readonly protocol: BenchProtocol;
  publisher(ctx: ConnectionContext): Promise<PublisherConnection>;
  /** `onDelivery` gets the send stamp read from the payload, or -1 when it had none */
  subscriber(ctx: ConnectionContext, key: string, onDelivery: (stampUs: number) => void): Promise<Closable>;
  /** a connection that only stays open, with the protocol's heartbeat every `keepaliveS` */
  idle(ctx: ConnectionContext): Promise<Closable>;
}
