import { Client, credentials, Metadata, status as Status, type ServiceError } from '@grpc/grpc-js';
import { loadSync, type MethodDefinition, type Options, type PackageDefinition } from '@grpc/proto-loader';
import { Type, type StaticDecode } from '@sinclair/typebox';
import { Default, type TargetSettings } from '../config/schema.js';
import { GatewayError, SetupError } from '../errors.js';
import type { Message } from '../message.js';
import { requestFromJson, type FieldDescriptor } from './grpc-json.js';
import type { DeliveryContext, Target, TargetDeps, TargetReply, TargetType } from './target.js';

/** A grpc target's own keys, beside the protection keys every target has. */
const Fields = Type.Object({
  address: Type.String({ minLength: 1, description: 'host:port of the gRPC server' }),
  proto: Type.String({ minLength: 1, description: '.proto file, relative to this config file' }),
  method: Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_.]*/[A-Za-z_][A-Za-z0-9_]*$', expected: 'a method such as package.Service/Method', description: 'package.Service/Method' }),
  tls: Default(Type.Boolean(), false),
});

export type GrpcTargetConfig = TargetSettings & StaticDecode<typeof Fields>;

/**
 * camelCase names (proto3's JSON names), 64-bit integers as strings and enums by name (as the
 * proto3 JSON mapping writes them), bytes as base64, and every field present in replies.
 */
const LOADER_OPTIONS: Options = { keepCase: false, longs: String, enums: String, bytes: String, defaults: true };

/**
 * What a downstream gRPC status means for the gateway: its error code, and whether it is worth
 * retrying, which also makes it a breaker failure (the downstream is unwell rather than the
 * message wrong). Documented in docs/grpc.md; codes not listed (OK aside) are treated as UNKNOWN.
 */
export const STATUS_MAP: Readonly<Record<number, { code: 'upstream_unavailable' | 'upstream_timeout'; retryable: boolean }>> = {
  [Status.CANCELLED]: { code: 'upstream_unavailable', retryable: true },
  [Status.UNKNOWN]: { code: 'upstream_unavailable', retryable: true },
  [Status.INVALID_ARGUMENT]: { code: 'upstream_unavailable', retryable: false },
  [Status.DEADLINE_EXCEEDED]: { code: 'upstream_timeout', retryable: true },
  [Status.NOT_FOUND]: { code: 'upstream_unavailable', retryable: false },
  [Status.ALREADY_EXISTS]: { code: 'upstream_unavailable', retryable: false },
  [Status.PERMISSION_DENIED]: { code: 'upstream_unavailable', retryable: false },
  [Status.RESOURCE_EXHAUSTED]: { code: 'upstream_unavailable', retryable: true },
  [Status.FAILED_PRECONDITION]: { code: 'upstream_unavailable', retryable: false },
  [Status.ABORTED]: { code: 'upstream_unavailable', retryable: true },
  [Status.OUT_OF_RANGE]: { code: 'upstream_unavailable', retryable: false },
  [Status.UNIMPLEMENTED]: { code: 'upstream_unavailable', retryable: false },
  [Status.INTERNAL]: { code: 'upstream_unavailable', retryable: true },
  [Status.UNAVAILABLE]: { code: 'upstream_unavailable', retryable: true },
  [Status.DATA_LOSS]: { code: 'upstream_unavailable', retryable: true },
  [Status.UNAUTHENTICATED]: { code: 'upstream_unavailable', retryable: false },
};

/** Message headers that are not forwarded as metadata: gRPC's own, HTTP/2's, or set below. */
const NOT_FORWARDED = new Set([
  'content-type', 'te', 'host', 'connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'user-agent',
  'content-length', 'traceparent', 'x-junction-id', 'x-junction-key', 'x-priority',
]);
const METADATA_KEY = /^[0-9a-z_.-]+$/;
const METADATA_VALUE = /^[ -~]*$/;

type AnyMethod = MethodDefinition<Record<string, unknown>, Record<string, unknown>>;

function findMethod(config: GrpcTargetConfig, name: string): AnyMethod {
  const slash = config.method.lastIndexOf('/');
  const serviceName = config.method.slice(0, slash);
  const methodName = config.method.slice(slash + 1);
  let definition: PackageDefinition;
  try {
    definition = loadSync(config.proto, LOADER_OPTIONS);
  } catch (err) {
    throw new SetupError(`targets.${name}.proto`, `cannot load ${config.proto}: ${(err as Error).message}`);
  }
  const service = definition[serviceName] as Record<string, AnyMethod> | undefined;
  const method = service && 'format' in service ? undefined : service?.[methodName];
  if (!method || typeof method.path !== 'string') {
    throw new SetupError(`targets.${name}.method`, `${config.method} is not a method in ${config.proto}`);
  }
  if (method.requestStream || method.responseStream) {
    throw new SetupError(`targets.${name}.method`, `${config.method} is a streaming method; a grpc target calls unary methods`);
  }
  return method;
}

/**
 * A downstream gRPC service: one unary method, called with the message payload (JSON) as the
 * request message; the reply message comes back as JSON. One channel per target, reused by
 * every call (HTTP/2 multiplexes them).
 */
export class GrpcTarget implements Target {
  readonly type = 'grpc';
  readonly name: string;
  readonly #client: Client;
  readonly #method: AnyMethod;
  readonly #fields: FieldDescriptor[];
  readonly #requestName: string;

  constructor(name: string, config: GrpcTargetConfig, _deps: TargetDeps) {
    this.name = name;
    this.#method = findMethod(config, name);
    const type = this.#method.requestType.type as { name?: string; field?: FieldDescriptor[] };
    this.#fields = type.field ?? [];
    this.#requestName = type.name ?? 'request';
    this.#client = new Client(config.address, config.tls ? credentials.createSsl() : credentials.createInsecure(), {
      'grpc.enable_channelz': 0,
    });
  }

  deliver(message: Message, ctx: DeliveryContext): Promise<TargetReply> {
    let request: Buffer;
    try {
      request = this.#serialize(message.payload);
    } catch (err) {
      return Promise.reject(err as GatewayError);
    }
    const metadata = new Metadata();
    for (const [name, value] of Object.entries(message.headers)) {
      if (!NOT_FORWARDED.has(name) && !name.startsWith('grpc-') && !name.endsWith('-bin') && METADATA_KEY.test(name) && METADATA_VALUE.test(value)) {
        metadata.set(name, value);
      }
    }
    metadata.set('traceparent', message.traceparent);
    metadata.set('x-junction-id', message.id);
    metadata.set('x-junction-key', encodeURIComponent(message.key));
    metadata.set('x-priority', String(message.priority));
    return new Promise<TargetReply>((resolve, reject) => {
      const call = this.#client.makeUnaryRequest(
        this.#method.path,
        (bytes: Buffer) => bytes,
        (bytes: Buffer) => this.#method.responseDeserialize(bytes),
        request,
        metadata,
        { deadline: Date.now() + ctx.timeoutMs },
        (err: ServiceError | null, reply?: Record<string, unknown>) => {
          ctx.signal?.removeEventListener('abort', cancel);
          if (err) reject(this.#failure(err, ctx.signal?.aborted === true));
          else resolve({ payload: Buffer.from(JSON.stringify(reply ?? {})), contentType: 'application/json' });
        },
      );
      const cancel = () => call.cancel();
      if (ctx.signal?.aborted) cancel();
      else ctx.signal?.addEventListener('abort', cancel, { once: true });
    });
  }

  /** The JSON payload as the request message's bytes; a payload that does not fit is `bad_request`. */
  #serialize(payload: Buffer): Buffer {
    const request = requestFromJson(payload, this.#fields, this.#requestName);
    try {
      return this.#method.requestSerialize(request);
    } catch (err) {
      // protobufjs refuses what it cannot convert, such as a string where a nested message belongs.
      throw new GatewayError('bad_request', `the payload does not fit ${this.#requestName}: ${(err as Error).message}`, { retryable: false, field: 'payload' });
    }
  }

  #failure(err: ServiceError, aborted: boolean): GatewayError {
    if (aborted) {
      // The gateway cancelled the call (the sender gave up or the gateway is stopping): not the downstream's fault.
      return new GatewayError('upstream_unavailable', `call to target ${this.name} cancelled`, { retryable: false, upstreamStatus: err.code });
    }
    const mapped = STATUS_MAP[err.code] ?? STATUS_MAP[Status.UNKNOWN]!;
    const name = Status[err.code] ?? String(err.code);
    return new GatewayError(mapped.code, `target ${this.name} answered ${name}: ${err.details}`, { retryable: mapped.retryable, upstreamStatus: err.code });
  }

  async close(): Promise<void> {
    this.#client.close();
  }
}

export const grpcTargetType: TargetType<GrpcTargetConfig> = {
  type: 'grpc',
  fields: Fields.properties,
  paths: ['proto'],
  create: (name, config, deps) => new GrpcTarget(name, config, deps),
};
