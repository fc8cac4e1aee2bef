import path from 'node:path';
import { Value } from '@sinclair/typebox/value';
import { GatewayConfigSchema, type RouteConfig } from './schema.js';
import type { GatewayConfig } from './types.js';

/**
 * The config the gateway runs on, from data that passed every check: every `default:` of the
 * schema applied, then decoded, which runs the schema's resolvers for defaults that depend on
 * other values; paths made absolute against `baseDir`. Frozen: a reload builds a new one.
 */
export function resolveConfig(data: unknown, file: string, baseDir: string): GatewayConfig {
  const config = Value.Decode(GatewayConfigSchema, Value.Default(GatewayConfigSchema, data));
  return deepFreeze({
    ...config,
    file: file === '' ? '' : path.resolve(file),
    deadletter: { ...config.deadletter, path: path.resolve(baseDir, config.deadletter.path) },
    targets: Object.fromEntries(Object.entries(config.targets).map(([name, target]) =>
      [name, target.type === 'grpc' ? { ...target, proto: path.resolve(baseDir, target.proto) } : target])),
    routes: config.routes.map(lowerCaseHeaders),
  });
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
