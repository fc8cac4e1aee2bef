import path from 'node:path';
import { Client, credentials, status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { loadSync, type MethodDefinition } from '@grpc/proto-loader';
import { PACKAGE_ROOT } from '../server.js';
import { readStampBytes } from '../stamp.js';
import type { Closable, ConnectionContext, ProtocolDriver, PublisherConnection, SendDone } from './driver.js';

/** `junction.v1.Message`, only the fields the load generator sets. */
interface MessageOut {
  key: string;
  payload: Buffer;
  priority: number;
  qos: number;
}

interface PublishAck {
  sequence: number;
  /** null when the message was accepted */
  error: { code: string; message: string } | null;
}

interface Delivery {
  payload: Buffer;
}

interface GatewayMethods {
  Publish: MethodDefinition<MessageOut, PublishAck>;
  PublishStream: MethodDefinition<MessageOut, PublishAck>;
  Subscribe: MethodDefinition<{ pattern: string }, Delivery>;
}

/** How long a channel may take to connect, and a subscription to become active. */
const READY_TIMEOUT_MS = 30_000;

let gateway: GatewayMethods | undefined;

/** The public proto, parsed on first use: a worker that drives no gRPC never pays for it. */
function methods(): GatewayMethods {
  // The gateway's loader options (adapters/grpc/proto.ts), so both ends (de)serialize alike.
  gateway ??= loadSync(path.join(PACKAGE_ROOT, 'proto', 'junction', 'v1', 'gateway.proto'), {
    keepCase: false, longs: Number, enums: String, defaults: true,
  })['junction.v1.Gateway'] as unknown as GatewayMethods;
  return gateway;
}

function describe(error: StatusObject): string {
  return `${status[error.code]}: ${error.details}`;
}

/** One channel on its own TCP connection, resolved once it is connected. */
async function channel(ctx: ConnectionContext): Promise<Client> {
  if (!ctx.ports.grpc) throw new Error(`${ctx.server} has no gRPC port`);
  const host = ctx.host.includes(':') ? `[${ctx.host}]` : ctx.host;
  const client = new Client(`${host}:${ctx.ports.grpc}`, credentials.createInsecure(), {
    // grpc-js shares one connection among channels to the same address unless told otherwise.
    'grpc.use_local_subchannel_pool': 1,
    // Per-call bookkeeping nobody reads; the gateway and the bare peer turn it off too.
    'grpc.enable_channelz': 0,
    // Nothing is retried (a failed send is counted), so grpc-js need not keep what it sent for a retry.
    'grpc.enable_retries': 0,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      client.waitForReady(Date.now() + READY_TIMEOUT_MS, (err) => (err ? reject(err) : resolve()));
    });
  } catch (err) {
    client.close();
    throw err;
  }
  return client;
}

/** Unary Publish calls, as many at once as the sender keeps outstanding. */
function unaryPublisher(ctx: ConnectionContext, client: Client): PublisherConnection {
  const { path: method, requestSerialize, responseDeserialize } = methods().Publish;
  const qos = ctx.qos;
  return {
    publish(key, payload, priority, done) {
      client.makeUnaryRequest(method, requestSerialize, responseDeserialize, { key, payload: Buffer.from(payload), priority, qos },
        (err: ServiceError | null) => done(err ? describe(err) : undefined));
    },
    async close() {
      client.close();
    },
  };
}

/**
 * `junction.v1.Message` of one key and payload size, encoded once per priority by the proto's own
 * serializer; each send copies it and writes its payload in place. The payload is the only field
 * that changes between messages of a priority, so the bytes on the wire are what encoding each
 * message would give, without a message object and an encoding per send.
 */
class MessageTemplates {
  readonly #byPriority = new Map<number, Buffer>();
  #payloadAt = -1;

  constructor(readonly key: string, readonly payloadLength: number, readonly qos: number, readonly serialize: (message: MessageOut) => Buffer) {}

  encode(payload: string, priority: number): Buffer {
    let template = this.#byPriority.get(priority);
    if (template === undefined) {
      template = this.#encoded(priority, 0x61);
      // Where the payload starts: the first byte that differs between two payloads of the same size.
      if (this.#payloadAt < 0) this.#payloadAt = firstDifference(template, this.#encoded(priority, 0x62));
      this.#byPriority.set(priority, template);
    }
    const bytes = Buffer.allocUnsafe(template.length);
    template.copy(bytes);
    bytes.write(payload, this.#payloadAt, 'latin1');
    return bytes;
  }

  #encoded(priority: number, fill: number): Buffer {
    return this.serialize({ key: this.key, payload: Buffer.alloc(this.payloadLength, fill), priority, qos: this.qos });
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  let i = 0;
  while (i < a.length && a[i] === b[i]) i++;
  return i;
}

/** Messages written to the stream are already encoded (MessageTemplates). */
const encoded = (message: Buffer): Buffer => message;

/** One PublishStream; each ack settles the message at its `sequence`, in whatever order acks come. */
function streamPublisher(ctx: ConnectionContext, client: Client): PublisherConnection {
  const { path: method, requestSerialize, responseDeserialize } = methods().PublishStream;
  const call = client.makeBidiStreamRequest(method, encoded, responseDeserialize);
  const pending = new Map<number, SendDone>();
  let templates: MessageTemplates | undefined;
  let sequence = 0;
  let closing = false;
  let failed: string | undefined;
  call.on('data', (ack: PublishAck) => {
    const done = pending.get(ack.sequence);
    if (!done) return;
    pending.delete(ack.sequence);
    done(ack.error?.code ? `${ack.error.code}: ${ack.error.message}` : undefined);
  });
  // The same failure comes as the 'status' below; without a listener it would end the worker.
  call.on('error', () => undefined);
  call.on('status', (end: StatusObject) => {
    if (closing) return;
    failed = end.code === status.OK ? 'the server ended the stream' : describe(end);
    ctx.onDrop(failed);
    for (const done of pending.values()) done(failed);
    pending.clear();
  });
  return {
    publish(key, payload, priority, done) {
      // Deferred so a closed-loop sender on a dead stream does not recurse into itself.
      if (failed !== undefined) return void setImmediate(done, failed);
      if (templates?.key !== key || templates.payloadLength !== payload.length) {
        templates = new MessageTemplates(key, payload.length, ctx.qos, requestSerialize);
      }
      pending.set(++sequence, done);
      call.write(templates.encode(payload, priority));
    },
    async close() {
      closing = true;
      call.cancel();
      client.close();
    },
  };
}

/**
 * One channel (its own TCP connection) per publisher and per subscriber. grpc-js cannot bind a
 * source address, which the few connections of the gRPC scenarios do not need. `grpc-stream`
 * publishes on PublishStream, every other scenario with unary Publish calls.
 */
export const grpcDriver: ProtocolDriver = {
  protocol: 'grpc',

  async publisher(ctx): Promise<PublisherConnection> {
    const client = await channel(ctx);
    return ctx.scenario === 'grpc-stream' ? streamPublisher(ctx, client) : unaryPublisher(ctx, client);
  },

  async subscriber(ctx, key, onDelivery): Promise<Closable> {
    const client = await channel(ctx);
    const { path: method, requestSerialize, responseDeserialize } = methods().Subscribe;
    const call = client.makeServerStreamRequest(method, requestSerialize, responseDeserialize, { pattern: key });
    let subscribed = false;
    let closing = false;
    const close = async (): Promise<void> => {
      closing = true;
      call.cancel();
      client.close();
    };
    call.on('data', (delivery: Delivery) => onDelivery(readStampBytes(delivery.payload)));
    call.on('error', () => undefined);
    try {
      // The server sends its response headers once the subscription is active (gateway.proto).
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`Subscribe ${key}: not active after ${READY_TIMEOUT_MS / 1000} s`)), READY_TIMEOUT_MS);
        call.once('metadata', () => {
          clearTimeout(timer);
          subscribed = true;
          resolve();
        });
        call.on('status', (end: StatusObject) => {
          clearTimeout(timer);
          if (!subscribed) reject(new Error(`Subscribe ${key}: ${describe(end)}`));
          else if (!closing) ctx.onDrop(end.code === status.OK ? 'the server ended the stream' : describe(end));
        });
      });
    } catch (err) {
      await close();
      throw err;
    }
    return { close };
  },

  async idle(): Promise<Closable> {
    throw new Error('gRPC has no idle connections scenario');
  },
};
