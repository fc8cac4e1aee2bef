import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import { loadSync, type Options, type PackageDefinition } from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import { GatewayError } from '../../src/index.js';

const RELATIVE = path.join('proto', 'junction', 'v1', 'gateway.proto');

/** The project root holds proto/; this module runs from adapters/grpc/ (source) or dist/adapters/grpc/ (built). */
function findGatewayProto(): string {
  const start = path.dirname(fileURLToPath(import.meta.url));
  for (let dir = start; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, RELATIVE);
    if (existsSync(candidate)) return candidate;
    if (path.dirname(dir) === dir) throw new Error(`${RELATIVE} not found in any folder above ${start}`);
  }
}

/** proto/junction/v1/gateway.proto, the public API. */
export const GATEWAY_PROTO = findGatewayProto();

/**
 * camelCase fields, bytes as Buffers (the payload is never copied or re-encoded), uint64 as
 * numbers (ms timestamps fit), unset fields as their defaults ('' = not given).
 */
export const LOADER_OPTIONS: Options = { keepCase: false, longs: Number, enums: String, defaults: true };

export interface GatewayProto {
  /** Subscribe writes bytes: each delivery is encoded once per message (mapping.ts deliveryBytes) */
  service: ServiceDefinition;
  /** a `junction.v1.Delivery` as protobuf bytes */
  encodeDelivery: (delivery: DeliveryOut) => Buffer;
  /**
   * The Gateway and health services for server reflection, loaded keeping the .proto's own field
   * names (`content_type`), so tools see the same descriptors as the published file.
   */
  reflection: PackageDefinition;
}

export function loadGatewayProto(): GatewayProto {
  const definition = loadSync(GATEWAY_PROTO, LOADER_OPTIONS);
  const service = definition['junction.v1.Gateway'] as ServiceDefinition;
  return {
    service: tolerant(service),
    encodeDelivery: service.Subscribe!.responseSerialize as (delivery: DeliveryOut) => Buffer,
    reflection: loadSync([GATEWAY_PROTO, HEALTH_PROTO], { ...LOADER_OPTIONS, keepCase: true }),
  };
}

/**
 * What a request message that is not valid protobuf becomes. grpc-js ends a call whose
 * deserializer throws with INTERNAL (server-interceptors.js), where malformed input is
 * INVALID_ARGUMENT; handlers see this instead, and `decoded` refuses it as bad_request.
 */
class UndecodableRequest {
  constructor(readonly reason: string) {}
}

/** Methods whose handlers may write answers already encoded */
const BYTES_THROUGH = new Set(['Subscribe', 'PublishStream']);

/**
 * The service with deserializers that never throw: they yield an UndecodableRequest instead.
 * The serializers of the streams' answers pass bytes through: a fan-out writes the one encoding
 * of a message to every Subscribe stream rather than have grpc-js encode it again for each, and
 * PublishStream writes its acks encoded by hand (mapping.ts acceptedAckBytes).
 */
function tolerant(service: ServiceDefinition): ServiceDefinition {
  const methods: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    methods[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return method.requestDeserialize(bytes);
        } catch (err) {
          return new UndecodableRequest(err instanceof Error ? err.message : String(err));
        }
      },
      ...(BYTES_THROUGH.has(name) ? { responseSerialize: (value: unknown) => (Buffer.isBuffer(value) ? value : method.responseSerialize(value)) } : {}),
    };
  }
  return methods;
}

/** `request` as decoded, or bad_request when it was not valid protobuf of `type`. */
export function decoded<T>(request: T, type: string): T {
  if (request instanceof UndecodableRequest) throw new GatewayError('bad_request', `not a valid ${type} message: ${request.reason}`);
  return request;
}

/** `junction.v1.Message` as proto-loader decodes it with LOADER_OPTIONS. */
export interface MessageIn {
  key: string;
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  priority?: number;
  qos?: number;
  id: string;
  replyTo: string;
  correlationId: string;
  ttlMs: number;
}

export interface ErrorOut {
  code: string;
  message: string;
  retryAfterMs: number;
  field: string;
}

export interface PublishAckOut {
  id: string;
  sequence: number;
  error?: ErrorOut;
  expired: boolean;
}

export interface SubscribeRequestIn {
  pattern: string;
  responder: boolean;
  group: string;
}

export interface AckRequestIn {
  subscription: string;
  ids: string[];
}

export interface AckReplyOut {
  acked: number;
}

export interface DeliveryOut {
  id: string;
  key: string;
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  priority: number;
  qos: number;
  replyTo: string;
  correlationId: string;
  traceparent: string;
  timestampMs: number;
  ttlMs: number;
  dropped: number;
}

export interface ReplyOut {
  id: string;
  payload: Buffer;
  contentType: string;
  headers: Record<string, string>;
  status: number;
}
