import { realClock, type Clock } from '../clock.js';
import type { RouteRateLimitConfig } from '../config/schema.js';
import { GatewayError } from '../errors.js';
import type { Message } from '../message.js';
import type { CompiledRoute, RouteMatch } from '../router/types.js';
import type { RateBucket } from './rate-bucket.js';
import { BucketMap, type BucketSpec } from './token-bucket.js';

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
  /** cluster mode: `scope: route` buckets every node takes from (client buckets stay here) */
  readonly #shared: ((route: string, spec: BucketSpec) => RateBucket) | undefined;
  readonly #sharedBuckets = new Map<string, RateBucket>();

  constructor(options: { maxClientsPerRule?: number; clock?: Clock; shared?: (route: string, spec: BucketSpec) => RateBucket } = {}) {
    this.#maxClients = options.maxClientsPerRule ?? 100_000;
    this.#clock = options.clock ?? realClock;
    this.#shared = options.shared;
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

  #sharedFor(route: string, limit: RouteRateLimitConfig, shared: (route: string, spec: BucketSpec) => RateBucket): RateBucket {
    const id = `${route}\u0000${limit.rate}/${limit.per}/${limit.burst}`;
    let bucket = this.#sharedBuckets.get(id);
    if (!bucket) {
      bucket = shared(route, { rate: limit.rate, perMs: limit.per, burst: limit.burst });
      this.#sharedBuckets.set(id, bucket);
    }
    return bucket;
  }

  /**
   * Takes a token from every bucket the winning rules name, or throws `rate_limited`. A shared
   * bucket answers later: then the result is a promise, rejected with `rate_limited` when refused.
   */
  admit(message: Message, matches: readonly RouteMatch[]): void | Promise<void> {
    const now = this.#clock.now();
    let pending: Promise<void>[] | undefined;
    for (let i = 0; i < matches.length; i++) {
      const route = matches[i]!.route;
      const limit = route.rateLimit;
      if (!limit) continue;
      const scope = limit.scope;
      if (scope === 'route' && this.#shared) {
        const wait = this.#sharedFor(route.name, limit, this.#shared).take(now);
        if (typeof wait === 'number') this.#check(wait, route.name, limit);
        else (pending ??= []).push(wait.then((later) => this.#check(later, route.name, limit)));
        continue;
      }
      this.#check(this.#mapFor(route, scope, limit).take(scope === 'client' ? clientKey(message) : '', now), route.name, limit);
    }
    return pending && Promise.all(pending).then(() => undefined);
  }

  #check(wait: number, route: string, limit: RouteRateLimitConfig): void {
    if (wait <= 0) return;
    const scope = limit.scope;
    this.rejections[scope]++;
    throw new GatewayError('rate_limited', scope === 'client'
      ? `rate limit of rule ${route} for this client: ${limit.rate} per ${limit.per} ms`
      : `rate limit of rule ${route}: ${limit.rate} per ${limit.per} ms`, { retryAfterMs: wait });
  }
}
