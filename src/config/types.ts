import type { AuthConfigFile, BreakerConfig, ListenerConfig, RouteConfig, TargetConfig } from './schema.js';

export type AuthUser = NonNullable<AuthConfigFile['users']>[number];
export type AclRule = NonNullable<AuthConfigFile['acl']>[number];
export type DefaultRoute = 'publish' | 'drop';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

/**
 * A loaded, validated gateway.yaml with every default applied, durations in ms, sizes in bytes
 * and paths absolute. Frozen: a reload builds a new one.
 */
export interface GatewayConfig {
  /** absolute path of the file it came from ('' when built in code) */
  file: string;
  listeners: {
    http?: ListenerConfig;
    mqtt?: ListenerConfig;
    grpc?: ListenerConfig;
    admin?: ListenerConfig;
  };
  log: { level: LogLevel };
  limits: { maxPayloadSize: number };
  requests: { timeout: number };
  shutdown: { drainTimeout: number };
  admin: { token?: string };
  deadletter: { path: string; maxFileSize: number };
  /** the gRPC listener's settings (sizes in bytes, durations in ms) */
  grpc: {
    maxReceiveMessageSize: number;
    keepalive: { time: number; timeout: number };
    maxConcurrentStreams: number;
    publishWindow: { messages: number; bytes: number };
    subscriberBuffer: { messages: number; bytes: number };
  };
  /** the embedded MQTT broker's settings (sizes in bytes, durations in ms, keepaliveLimit in s) */
  mqtt: {
    websocket: boolean;
    maxConnections: number;
    maxPacketSize: number;
    connectTimeout: number;
    keepaliveLimit: number;
    maxSubscriptions: number;
    maxInflightInbound: number;
    maxOutboundBuffer: number;
    drainTimeout: number;
    maxHold: number;
  };
  /** the /ws JSON frame protocol (sizes in bytes, durations in ms; idleTimeout 0 = never) */
  websocket: {
    enabled: boolean;
    maxConnections: number;
    maxConnectionsPerIp: number;
    maxSubscriptions: number;
    maxInflight: number;
    maxFrameSize: number;
    maxOutboundBuffer: number;
    drainTimeout: number;
    pingInterval: number;
    idleTimeout: number;
    handshakeTimeout: number;
    perMessageDeflate: boolean;
  };
  /** who may connect, publish and subscribe, on every protocol (src/auth) */
  auth: {
    anonymous: boolean;
    users: AuthUser[];
    /** allow rules; absent, whoever got in may publish and subscribe to every key */
    acl?: AclRule[];
  };
  breakers: Record<string, BreakerConfig>;
  targets: Record<string, TargetConfig>;
  routes: RouteConfig[];
  defaultRoute: DefaultRoute;
}

/** One finding in a config file, positioned for `FILE:LINE:COL: key.path: message`. */
export interface ConfigIssue {
  file: string;
  /** 1-based; 0 when the position is unknown */
  line: number;
  /** 1-based; 0 when the position is unknown */
  column: number;
  /** dotted key path such as `routes[1].match.key`; '' for the document */
  path: string;
  message: string;
}

export class ConfigError extends Error {
  readonly issues: ConfigIssue[];
  constructor(issues: ConfigIssue[]) {
    super(issues.map(formatIssue).join('\n'));
    this.name = 'ConfigError';
    this.issues = issues;
  }
}

export function formatIssue(issue: ConfigIssue): string {
  const where = issue.line > 0 ? `${issue.file}:${issue.line}:${issue.column}` : issue.file;
  return issue.path ? `${where}: ${issue.path}: ${issue.message}` : `${where}: ${issue.message}`;
}
