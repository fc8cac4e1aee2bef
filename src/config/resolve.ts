import path from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { GatewayConfigSchema, type GatewayConfigFile, type RouteConfig, type TargetConfig } from './schema.js';
import type { GatewayConfig, LogLevel } from './types.js';
import { parseDuration, parseSize } from './units.js';

/**
 * The config the gateway runs on, from data that passed every check: decoded, with defaults
 * applied and paths made absolute against `baseDir`. Frozen: a reload builds a new one.
 */
export function resolveConfig(data: unknown, file: string, baseDir: string): GatewayConfig {
  return deepFreeze(build(Value.Decode(GatewayConfigSchema, data), file, baseDir));
}

const DEFAULTS = {
  logLevel: 'info',
  maxPayloadSize: parseSize('1mb'),
  requestTimeout: parseDuration('5s'),
  drainTimeout: parseDuration('10s'),
  deadletterPath: 'data/deadletter.jsonl',
  deadletterMaxFileSize: parseSize('64mb'),
  defaultRoute: 'publish',
  /** room for the key, headers and protobuf framing around a payload of the largest size */
  grpcMessageOverhead: parseSize('64kb'),
  grpcKeepaliveTime: parseDuration('60s'),
  grpcKeepaliveTimeout: parseDuration('20s'),
  grpcMaxConcurrentStreams: 1000,
  grpcWindowMessages: 1024,
  grpcWindowBytes: parseSize('4mb'),
  /** room for the fixed header, topic (up to 64 KiB) and packet id around a payload of the largest size */
  mqttPacketOverhead: parseSize('64kb'),
  mqttMaxConnections: 10_000,
  mqttConnectTimeout: parseDuration('10s'),
  mqttMaxSubscriptions: 1000,
  mqttMaxInflightInbound: 1000,
  mqttMaxOutboundBuffer: parseSize('1mb'),
  mqttDrainTimeout: parseDuration('30s'),
  mqttMaxHold: parseDuration('10s'),
  wsMaxConnections: 10_000,
  wsMaxConnectionsPerIp: 1000,
  wsMaxSubscriptions: 1000,
  wsMaxInflight: 64,
  /** room for the op, key, headers and JSON escaping around a payload of the largest size */
  wsFrameOverhead: parseSize('64kb'),
  wsMaxOutboundBuffer: parseSize('1mb'),
  wsDrainTimeout: parseDuration('30s'),
  wsPingInterval: parseDuration('30s'),
  wsIdleTimeout: parseDuration('5m'),
  wsHandshakeTimeout: parseDuration('10s'),
} as const;

function build(file: GatewayConfigFile, source: string, baseDir: string): GatewayConfig {
  const listeners: GatewayConfig['listeners'] = {};
  for (const [name, listener] of Object.entries(file.listeners ?? {})) {
    if (listener) listeners[name as keyof GatewayConfig['listeners']] = listener;
  }
  const maxPayloadSize = file.limits?.maxPayloadSize ?? DEFAULTS.maxPayloadSize;
  return {
    file: source === '' ? '' : path.resolve(source),
    listeners,
    // the schema only admits the LogLevel names; TypeBox types a mapped union as plain string
    log: { level: (file.log?.level ?? DEFAULTS.logLevel) as LogLevel },
    limits: { maxPayloadSize },
    requests: { timeout: file.requests?.timeout ?? DEFAULTS.requestTimeout },
    shutdown: { drainTimeout: file.shutdown?.drainTimeout ?? DEFAULTS.drainTimeout },
    admin: file.admin?.token !== undefined ? { token: file.admin.token } : {},
    deadletter: {
      path: path.resolve(baseDir, file.deadletter?.path ?? DEFAULTS.deadletterPath),
      maxFileSize: file.deadletter?.maxFileSize ?? DEFAULTS.deadletterMaxFileSize,
    },
    grpc: {
      maxReceiveMessageSize: file.grpc?.maxReceiveMessageSize ?? maxPayloadSize + DEFAULTS.grpcMessageOverhead,
      keepalive: {
        time: file.grpc?.keepalive?.time ?? DEFAULTS.grpcKeepaliveTime,
        timeout: file.grpc?.keepalive?.timeout ?? DEFAULTS.grpcKeepaliveTimeout,
      },
      maxConcurrentStreams: file.grpc?.maxConcurrentStreams ?? DEFAULTS.grpcMaxConcurrentStreams,
      publishWindow: {
        messages: file.grpc?.publishWindow?.messages ?? DEFAULTS.grpcWindowMessages,
        bytes: file.grpc?.publishWindow?.bytes ?? DEFAULTS.grpcWindowBytes,
      },
      subscriberBuffer: {
        messages: file.grpc?.subscriberBuffer?.messages ?? DEFAULTS.grpcWindowMessages,
        bytes: file.grpc?.subscriberBuffer?.bytes ?? DEFAULTS.grpcWindowBytes,
      },
    },
    mqtt: {
      websocket: file.mqtt?.websocket ?? true,
      maxConnections: file.mqtt?.maxConnections ?? DEFAULTS.mqttMaxConnections,
      maxPacketSize: file.mqtt?.maxPacketSize ?? maxPayloadSize + DEFAULTS.mqttPacketOverhead,
      connectTimeout: file.mqtt?.connectTimeout ?? DEFAULTS.mqttConnectTimeout,
      keepaliveLimit: file.mqtt?.keepaliveLimit ?? 0,
      maxSubscriptions: file.mqtt?.maxSubscriptions ?? DEFAULTS.mqttMaxSubscriptions,
      maxInflightInbound: file.mqtt?.maxInflightInbound ?? DEFAULTS.mqttMaxInflightInbound,
      maxOutboundBuffer: file.mqtt?.maxOutboundBuffer ?? DEFAULTS.mqttMaxOutboundBuffer,
      drainTimeout: file.mqtt?.drainTimeout ?? DEFAULTS.mqttDrainTimeout,
      maxHold: file.mqtt?.maxHold ?? DEFAULTS.mqttMaxHold,
    },
    websocket: {
      enabled: file.websocket?.enabled ?? true,
      maxConnections: file.websocket?.maxConnections ?? DEFAULTS.wsMaxConnections,
      maxConnectionsPerIp: file.websocket?.maxConnectionsPerIp ?? DEFAULTS.wsMaxConnectionsPerIp,
      maxSubscriptions: file.websocket?.maxSubscriptions ?? DEFAULTS.wsMaxSubscriptions,
      maxInflight: file.websocket?.maxInflight ?? DEFAULTS.wsMaxInflight,
      // A binary payload travels as base64, 4/3 of its size: the largest accepted payload must fit.
      maxFrameSize: file.websocket?.maxFrameSize ?? Math.ceil(maxPayloadSize / 3) * 4 + DEFAULTS.wsFrameOverhead,
      maxOutboundBuffer: file.websocket?.maxOutboundBuffer ?? DEFAULTS.wsMaxOutboundBuffer,
      drainTimeout: file.websocket?.drainTimeout ?? DEFAULTS.wsDrainTimeout,
      pingInterval: file.websocket?.pingInterval ?? DEFAULTS.wsPingInterval,
      idleTimeout: file.websocket?.idleTimeout ?? DEFAULTS.wsIdleTimeout,
      handshakeTimeout: file.websocket?.handshakeTimeout ?? DEFAULTS.wsHandshakeTimeout,
      perMessageDeflate: file.websocket?.perMessageDeflate ?? false,
    },
    auth: {
      // Nothing is open by default (DESIGN "Security"): config/gateway.yaml turns this on for its local demo.
      anonymous: file.auth?.anonymous ?? false,
      users: file.auth?.users ?? [],
      ...(file.auth?.acl !== undefined ? { acl: file.auth.acl } : {}),
    },
    breakers: file.breakers ?? {},
    targets: Object.fromEntries(Object.entries(file.targets ?? {}).map(([name, target]): [string, TargetConfig] =>
      [name, target.type === 'grpc' ? { ...target, proto: path.resolve(baseDir, target.proto) } : target])),
    routes: (file.routes ?? []).map(lowerCaseHeaders),
    defaultRoute: file.defaultRoute ?? DEFAULTS.defaultRoute,
  };
}

function lowerCaseHeaders(route: RouteConfig): RouteConfig {
  const headers = route.match.headers;
  if (!headers) return route;
  return { ...route, match: { ...route.match, headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v])) } };
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
