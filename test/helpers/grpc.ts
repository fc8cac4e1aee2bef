import { connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2';
import { fileURLToPath } from 'node:url';
import {
  Client, credentials, Metadata,
  type ClientDuplexStream, type ClientReadableStream, type ServiceError,
} from '@grpc/grpc-js';
import { loadSync, type MethodDefinition } from '@grpc/proto-loader';
import type { DeliveryOut, ReplyOut } from '../../adapters/grpc/proto.js';

/** The public proto, loaded the way a client of the gateway would. */
export const GATEWAY_PROTO = fileURLToPath(new URL('../../proto/junction/v1/gateway.proto', import.meta.url));
export const BILLING_PROTO = fileURLToPath(new URL('../../proto/examples/billing.proto', import.meta.url));

const definition = loadSync(GATEWAY_PROTO, { keepCase: false, longs: Number, enums: String, defaults: true });

/** A `junction.v1.Message` to send; unset fields take the proto's defaults. */
export interface OutMessage {
  key: string;
  payload?: Buffer | string;
  contentType?: string;
  headers?: Record<string, string>;
  priority?: number;
  qos?: number;
  id?: string;
  replyTo?: string;
  correlationId?: string;
  ttlMs?: number;
}

export interface Ack {
  id: string;
  sequence: number;
  error: { code: string; message: string; retryAfterMs: number; field: string } | null;
  expired: boolean;
}

/** What a Subscribe stream yields: the adapter's outgoing shape, decoded with the public proto's options. */
export type Delivery = DeliveryOut;

export type Reply = ReplyOut;

export interface CallOptions {
  metadata?: Record<string, string>;
  deadline?: number;
}

type Method<Req, Res> = MethodDefinition<Req, Res>;
/** The Gateway's methods: paths and (de)serializers from the public proto. */
export const service = definition['junction.v1.Gateway'] as unknown as {
  Publish: Method<OutMessage, Ack>;
  PublishStream: Method<OutMessage, Ack>;
  Subscribe: Method<{ pattern: string; responder?: boolean; group?: string }, Delivery>;
  Request: Method<OutMessage, Reply>;
  Ack: Method<{ subscription: string; ids: string[] }, { acked: number }>;
};

function metadataOf(values: Record<string, string> = {}): Metadata {
  const metadata = new Metadata();
  for (const [name, value] of Object.entries(values)) metadata.set(name, value);
  return metadata;
}

function wire(message: OutMessage): OutMessage {
  return typeof message.payload === 'string' ? { ...message, payload: Buffer.from(message.payload) } : message;
}

/** A grpc-js client of junction.v1.Gateway built from the public proto. */
export class GatewayClient {
  readonly client: Client;

  constructor(address: string) {
    this.client = new Client(address, credentials.createInsecure());
  }

  #unary<Res>(method: Method<OutMessage, Res>, message: OutMessage, options: CallOptions): Promise<Res> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(method.path, method.requestSerialize, method.responseDeserialize, wire(message), metadataOf(options.metadata),
        options.deadline !== undefined ? { deadline: options.deadline } : {},
        (err: ServiceError | null, value?: Res) => (err ? reject(err) : resolve(value!)));
    });
  }

  publish(message: OutMessage, options: CallOptions = {}): Promise<Ack> {
    return this.#unary(service.Publish, message, options);
  }

  request(message: OutMessage, options: CallOptions = {}): Promise<Reply> {
    return this.#unary(service.Request, message, options);
  }

  publishStream(options: CallOptions = {}): ClientDuplexStream<OutMessage, Ack> {
    const { path, requestSerialize, responseDeserialize } = service.PublishStream;
    return this.client.makeBidiStreamRequest(path, (m: OutMessage) => requestSerialize(wire(m)), responseDeserialize, metadataOf(options.metadata),
      options.deadline !== undefined ? { deadline: options.deadline } : {});
  }

  subscribe(pattern: string, options: CallOptions & { responder?: boolean; group?: string } = {}): ClientReadableStream<Delivery> {
    const { path, requestSerialize, responseDeserialize } = service.Subscribe;
    return this.client.makeServerStreamRequest(path, requestSerialize, responseDeserialize, { pattern, responder: options.responder ?? false, group: options.group ?? '' },
      metadataOf(options.metadata), options.deadline !== undefined ? { deadline: options.deadline } : {});
  }

  /** Acknowledges group deliveries of the subscription named by its `junction-subscription` header. */
  ack(subscription: string, ids: string[], options: CallOptions = {}): Promise<{ acked: number }> {
    const { path, requestSerialize, responseDeserialize } = service.Ack;
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(path, requestSerialize, responseDeserialize, { subscription, ids }, metadataOf(options.metadata), {},
        (err: ServiceError | null, value?: { acked: number }) => (err ? reject(err) : resolve(value!)));
    });
  }

  close(): void {
    this.client.close();
  }
}

/** Resolves once the gateway says the subscription is active (its response headers). */
export function subscribed(stream: ClientReadableStream<Delivery>): Promise<Metadata> {
  return new Promise((resolve, reject) => {
    stream.once('metadata', resolve);
    stream.once('error', reject);
  });
}

/** The status a call ended with: resolves with the ServiceError (or OK status) of a stream. */
export function ended(stream: ClientReadableStream<unknown> | ClientDuplexStream<unknown, unknown>): Promise<{ code: number; details: string; metadata: Metadata }> {
  return new Promise((resolve) => stream.once('status', resolve));
}

/** Rejection reason of a call, as a ServiceError. */
export async function failure(call: Promise<unknown>): Promise<ServiceError> {
  try {
    await call;
  } catch (err) {
    return err as ServiceError;
  }
  throw new Error('the call succeeded; a failure was expected');
}

/**
 * A gRPC call made over bare HTTP/2, for what grpc-js clients cannot do: send a call with no
 * time left (grpc-js fails those locally), or really stop reading (a paused grpc-js client
 * stream keeps taking messages off the connection into its own memory; a paused HTTP/2 stream
 * stops, so the server's flow-control window closes).
 */
export interface RawCall {
  /** response messages, undecoded */
  messages: Buffer[];
  headers: Promise<IncomingHttpHeaders>;
  /** grpc-status and the other trailers, once the call ends; rejects when the stream is reset */
  trailers: Promise<IncomingHttpHeaders>;
  /** the RST_STREAM code the call's stream closed with: NO_ERROR (0) when it ended normally */
  closedWith: Promise<number>;
  /** the HTTP/2 connection of the call */
  session: ClientHttp2Session;
  pause(): void;
  resume(): void;
  close(): void;
}

export function rawCall(address: string, path: string, message: Buffer, headers: Record<string, string> = {}): RawCall {
  const session = connect(`http://${address}`);
  const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers });
  const frame = Buffer.alloc(5 + message.length);
  frame.writeUInt32BE(message.length, 1);
  message.copy(frame, 5);
  stream.end(frame);
  const messages: Buffer[] = [];
  let pending = Buffer.alloc(0);
  stream.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    while (pending.length >= 5 && pending.length >= 5 + pending.readUInt32BE(1)) {
      const size = pending.readUInt32BE(1);
      messages.push(pending.subarray(5, 5 + size));
      pending = pending.subarray(5 + size);
    }
  });
  const responseHeaders = new Promise<IncomingHttpHeaders>((resolve, reject) => {
    stream.once('response', resolve);
    stream.once('error', reject);
  });
  const trailers = new Promise<IncomingHttpHeaders>((resolve, reject) => {
    // A trailers-only response (an error before any message) puts grpc-status in the headers.
    let first: IncomingHttpHeaders = {};
    stream.once('response', (h) => { first = h; });
    stream.once('trailers', resolve);
    stream.once('end', () => resolve(first));
    stream.once('error', reject);
  });
  // A test awaiting only closedWith leaves no rejection unhandled.
  trailers.catch(() => undefined);
  const closedWith = new Promise<number>((resolve) => stream.once('close', () => resolve(stream.rstCode ?? 0)));
  return {
    messages,
    headers: responseHeaders,
    trailers,
    closedWith,
    session,
    pause: () => stream.pause(),
    resume: () => stream.resume(),
    close: () => session.destroy(),
  };
}
