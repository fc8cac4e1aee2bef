import path from 'node:path';
import { Value } from '@sinclair/typebox/value';
import type { Registry } from '../registry.js';
import { gatewayConfigSchema, resolveRoute, type RouteConfig, type TargetSettings, type TlsSettings } from './schema.js';
import type { GatewayConfig } from './types.js';

/**
 * The config the gateway runs on, from data that passed every check: every `default:` of the
 * schema applied, then decoded, which runs the schema's resolvers for defaults that depend on
 * other values; paths made absolute against `baseDir`. Frozen: a reload builds a new one.
 */
export function resolveConfig(data: unknown, file: string, baseDir: string, registry: Registry): GatewayConfig {
  const schema = gatewayConfigSchema(registry);
  const config = Value.Decode(schema, Value.Default(schema, data)) as GatewayConfig;
  return deepFreeze({
    ...config,
    file: file === '' ? '' : path.resolve(file),
    deadletter: { ...config.deadletter, path: path.resolve(baseDir, config.deadletter.path) },
    listeners: Object.fromEntries(Object.entries(config.listeners).map(([name, listener]) => [name, listener?.tls ? { ...listener, tls: withTlsPaths(listener.tls, baseDir) } : listener])),
    auth: config.auth.jwt?.publicKey !== undefined ? { ...config.auth, jwt: { ...config.auth.jwt, publicKey: path.resolve(baseDir, config.auth.jwt.publicKey) } } : config.auth,
    storage: { ...config.storage, dir: path.resolve(baseDir, config.storage.dir) },
    targets: Object.fromEntries(Object.entries(config.targets).map(([name, target]) => [name, withPaths(target, registry, baseDir)])),
    routes: config.routes.map((route) => lowerCaseHeaders(resolveRoute(route, config.requests))),
  });
}

function withTlsPaths(tls: TlsSettings, baseDir: string): TlsSettings {
  return { ...tls, cert: path.resolve(baseDir, tls.cert), key: path.resolve(baseDir, tls.key), ...(tls.ca !== undefined ? { ca: path.resolve(baseDir, tls.ca) } : {}) };
}

/** A target's file-path keys (its type's `paths`) made absolute against the config file's folder. */
function withPaths(target: TargetSettings, registry: Registry, baseDir: string): TargetSettings {
  const resolved: Record<string, unknown> = { ...target };
  for (const key of registry.targetType(target.type)?.paths ?? []) {
    if (typeof resolved[key] === 'string') resolved[key] = path.resolve(baseDir, resolved[key]);
  }
  return resolved as TargetSettings;
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
