import { Type, type StaticDecode } from '@sinclair/typebox';
import { Default, Duration, Empty, parseSize, Size, strict, type ConfigSection, type SharedSettings } from '../../src/index.js';

/** Bounds in both units: whichever is reached first applies. */
const MessagesAndBytes = (what: string, messages: number, bytes: string) => Empty(Type.Object({
  messages: Default(Type.Integer({ minimum: 1, description: `${what}: most messages` }), messages),
  bytes: Default(Size(`${what}: most payload bytes`), bytes),
}, strict));

/** The `grpc:` section of gateway.yaml, with its defaults. */
const GrpcSchema = Type.Object({
  maxReceiveMessageSize: Type.Optional(Size('largest gRPC message accepted (payload plus key, headers and framing); larger is RESOURCE_EXHAUSTED. Default: limits.maxPayloadSize + 64kb')),
  keepalive: Empty(Type.Object({
    time: Default(Duration('the server pings each connection this often, to find dead peers behind NATs and load balancers'), '60s'),
    timeout: Default(Duration('a connection whose ping is not answered within this is closed'), '20s'),
  }, strict)),
  maxConcurrentStreams: Default(Type.Integer({ minimum: 1, description: 'calls in flight at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS)' }), 1000),
  publishWindow: MessagesAndBytes('PublishStream, per stream, messages read but not yet acknowledged; past it the gateway stops reading', 1024, '4mb'),
  subscriberBuffer: MessagesAndBytes('Subscribe, per stream, deliveries waiting for a slow client; past it qos 0 deliveries are dropped, then the stream ends', 1024, '4mb'),
  drainTimeout: Default(Duration('Subscribe: a stream that leaves a delivery unsent (the client reads nothing) for this long ends with RESOURCE_EXHAUSTED'), '30s'),
}, { ...strict, description: 'The gRPC listener (listeners.grpc); these apply after a restart.' });

/** room for the key, headers and protobuf framing around a payload of the largest size */
const GRPC_MESSAGE_OVERHEAD = parseSize('64kb');

/** The section with `maxReceiveMessageSize` given its default, which follows limits.maxPayloadSize. */
function resolve(grpc: StaticDecode<typeof GrpcSchema>, { limits }: SharedSettings): GrpcSettings {
  return { ...grpc, maxReceiveMessageSize: grpc.maxReceiveMessageSize ?? limits.maxPayloadSize + GRPC_MESSAGE_OVERHEAD };
}

/** The section as the adapter reads it: every key present. */
export type GrpcSettings = StaticDecode<typeof GrpcSchema> & { maxReceiveMessageSize: number };

export const grpcSection: ConfigSection<GrpcSettings> = { key: 'grpc', schema: GrpcSchema, resolve };
