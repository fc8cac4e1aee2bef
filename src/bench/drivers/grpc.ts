import path from 'node:path';
import { Client, credentials, status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { loadSync, type MethodDefinition } from '@grpc/proto-loader';
import { PACKAGE_ROOT } from '../server.js';
import { readStampBytes } from '../stamp.js';
import type { Closable, ConnectionContext, ProtocolDriver, PublisherConnection } from './driver.js';
import { http2StreamPublisher, type MessageOut, type PublishAck } from './grpc-stream.js';

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
 * One channel (its own TCP connection) per publisher and per subscriber. grpc-js cannot bind a
 * source address, which the few connections of the gRPC scenarios do not need. `grpc-stream`
 * publishes on PublishStream (grpc-stream.ts), every other scenario with unary Publish calls.
 */
export const grpcDriver: ProtocolDriver = {
  protocol: 'grpc',

  async publisher(ctx): Promise<PublisherConnection> {
    if (!ctx.ports.grpc) throw new Error(`${ctx.server} has no gRPC port`);
    if (ctx.scenario === 'grpc-stream') return http2StreamPublisher(ctx, methods().PublishStream);
    return unaryPublisher(ctx, await channel(ctx));
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
