import { realClock, type Clock } from '../clock.js';
import type { RouteRateLimitConfig } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Message } from '../message.js';
import type { CompiledRoute, RouteMatch } from '../router/types.js';
import { BucketMap } from './token-bucket.js';

export type LimiterScope = RouteRateLimitConfig['scope'];

/** Who "a client" is for rate limiting: the authenticated principal, else the connection. */
export function clientKey(message: Message): string {
  const { principal, clientId, remoteAddress } = message.source;
  return principal ?? clientId ?? remoteAddress ?? '';
}

/**
 * Route rate limits, checked when a message arrives: `scope: route` is one bucket for the
 * rule, `scope: client` one bucket per client of the rule. Buckets are keyed by the rule's name
 * and limit, so a reload that keeps a limit keeps its state (an abuser gets no fresh bucket).
 */
export class IngressLimiter {
  readonly #buckets = new Map<string, BucketMap>();
  readonly rejections: Record<LimiterScope, number> = { client: 0, route: 0 };
  readonly #maxClients: number;
  readonly #clock: Clock;

  constructor(options: { maxClientsPerRule?: number; clock?: Clock } = {}) {
    this.#maxClients = options.maxClientsPerRule ?? 100_000;
    this.#clock = options.clock ?? realClock;
  }

  /** per compiled rule, so the hot path does not rebuild the key string */
  readonly #byRoute = new WeakMap<CompiledRoute, BucketMap>();

  #mapFor(route: CompiledRoute, scope: LimiterScope, limit: RouteRateLimitConfig): BucketMap {
    let map = this.#byRoute.get(route);
    if (!map) {
      map = this.#map(route.name, scope, limit);
      this.#byRoute.set(route, map);
    }
    return map;
  }

  #map(route: string, scope: LimiterScope, limit: RouteRateLimitConfig): BucketMap {
    const id = `${route}\u0000${scope}\u0000${limit.rate}/${limit.per}/${limit.burst}`;
    let map = this.#buckets.get(id);
    if (!map) {
      map = new BucketMap({ rate: limit.rate, perMs: limit.per, burst: limit.burst }, scope === 'client' ? this.#maxClients : 1, this.#clock.now());
      this.#buckets.set(id, map);
    }
    return map;
  }

  /** Takes a token from every bucket the winning rules name, or throws `rate_limited`. */
  admit(message: Message, matches: readonly RouteMatch[]): void {
    const now = this.#clock.now();
    for (const { route } of matches) {
      const limit = route.rateLimit;
      if (!limit) continue;
      const scope = limit.scope;
      const wait = this.#mapFor(route, scope, limit).take(scope === 'client' ? clientKey(message) : '', now);
      if (wait > 0) {
        this.rejections[scope]++;
        throw new GatewayError('rate_limited', scope === 'client'
          ? `rate limit of rule ${route.name} for this client: ${limit.rate} per ${limit.per} ms`
          : `rate limit of rule ${route.name}: ${limit.rate} per ${limit.per} ms`, { retryAfterMs: wait });
      }
    }
  }
}
