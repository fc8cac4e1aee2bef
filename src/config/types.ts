import type { StaticDecode } from '@sinclair/typebox';
import type { AdminListenerConfig, CoreConfigSchema, ListenerConfig, RouteConfig } from './schema.js';

/**
 * A loaded, validated gateway.yaml: decoded (durations in ms, sizes in bytes), every default of
 * the schema applied and paths absolute. Frozen: a reload builds a new one. The core's keys are
 * typed here; each protocol's section is its adapter's to read (AdapterContext.settings), and
 * each target's own keys its type's (TargetType.create).
 */
export type GatewayConfig = Omit<StaticDecode<typeof CoreConfigSchema>, 'routes'> & {
  /** absolute path of the file it came from ('' when loaded from text without a file) */
  file: string;
  /** http, admin, and the listeners of the protocols that have their own; all but admin take clients */
  listeners: Readonly<Record<string, ListenerConfig | AdminListenerConfig | undefined>>;
  routes: RouteConfig[];
  readonly [section: string]: unknown;
};

export type AclRule = NonNullable<GatewayConfig['auth']['acl']>[number];

/** A listener clients connect to (every one but admin), with its admission limits and credentials. */
export function clientListener(config: Pick<GatewayConfig, 'listeners'>, name: string): ListenerConfig | undefined {
  return name === 'admin' ? undefined : config.listeners[name] as ListenerConfig | undefined;
}
export type DefaultRoute = GatewayConfig['defaultRoute'];
export type LogLevel = GatewayConfig['log']['level'];

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
