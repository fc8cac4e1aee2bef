import Fastify, { type FastifyInstance } from 'fastify';
import { timingSafeEqual } from 'node:crypto';
import type { Gateway } from '../gateway.js';
import type { ListenerTls } from '../tls/listener-tls.js';
import type { ListenerTimeouts } from '../config/schema.js';
import { httpTimeouts } from '../listener.js';
import { registerDashboard } from './dashboard.js';
import type { DeadLetterFilter } from '../deadletter/replay.js';
import { DEAD_LETTER_REASONS as REASONS, type DeadLetterReason } from '../deadletter/store.js';
import { formatDuration } from '../config/units.js';

function time(value: string): number | undefined {
  const n = /^\d+$/.test(value) ? Number(value) : Date.parse(value);
  return Number.isFinite(n) ? n : undefined;
}

/** `target`, `reason`, `since`/`until` (ISO time or ms), `limit` (default 100, at most 10000). */
function deadLetterQuery(query: Record<string, string | undefined>): { filter: DeadLetterFilter; limit: number } | { error: string } {
  const filter: DeadLetterFilter = {};
  if (query.target) filter.target = query.target;
  if (query.reason) {
    if (!REASONS.includes(query.reason as DeadLetterReason)) return { error: `reason must be one of: ${REASONS.join(', ')}` };
    filter.reason = query.reason as DeadLetterReason;
  }
  for (const key of ['since', 'until'] as const) {
    const value = query[key];
    if (value === undefined) continue;
    const at = time(value);
    if (at === undefined) return { error: `${key} must be an ISO 8601 time or ms since the epoch` };
    filter[key] = at;
  }
  const limit = query.limit === undefined ? 100 : Number(query.limit);
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) return { error: 'limit must be an integer from 1 to 10000' };
  return { filter, limit };
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Per target: accepted + adopted = delivered + expired + deadLettered + rerouted + returned
 * + unsettled + handedOver + queued + inFlight.
 */
export function stats(gateway: Gateway): Record<string, unknown> {
  const targets: Record<string, unknown> = {};
  for (const [name, lane] of gateway.lanes()) {
    const s = lane.stats;
    const accounted = s.delivered + s.expired + s.deadLettered + s.rerouted + s.returned + s.unsettled + s.handedOver + s.queued + s.inFlight;
    targets[name] = { ...s, breaker: lane.breaker?.state ?? 'none', balanced: accounted === s.accepted + s.adopted };
  }
  const storage = gateway.storageStats();
  return {
    version: gateway.version,
    messages: gateway.dispatcher.counters,
    limiter: { rejections: gateway.limiter.rejections },
    rejections: gateway.metrics.rejections(),
    adapters: Object.fromEntries(gateway.adapterStats()),
    security: gateway.securityStats(),
    groups: gateway.groups.stats(),
    deadletter: { path: gateway.deadletter.path, whenFull: gateway.config().deadletter.whenFull, level: gateway.deadletter.level, ...gateway.deadletter.usage },
    storage: { ...storage, queues: Object.fromEntries(storage.queues) },
    targets,
  };
}

/**
 * The admin listener (loopback by default): health, readiness, the live route table and
 * reload. It is a separate server so none of this is reachable from the public listeners.
 */
export async function startAdminServer(gateway: Gateway, tls: ListenerTls | undefined, timeouts: ListenerTimeouts): Promise<FastifyInstance> {
  const { server, ...fastifyTimeouts } = httpTimeouts(timeouts);
  const app = Fastify({ logger: false, forceCloseConnections: true, ...fastifyTimeouts, ...(tls ? { https: { ...tls.serverOptions(), ...server } } : { http: server }) });

  // Probes stay open; everything that shows or changes the gateway needs the token when one is set.
  app.addHook('onRequest', async (request, reply) => {
    const token = gateway.config().admin.token;
    if (token === undefined || request.url === '/healthz' || request.url === '/readyz') return;
    const header = request.headers.authorization;
    const query = new URL(request.url, 'http://admin').searchParams.get('token');
    const given = header?.startsWith('Bearer ') ? header.slice(7) : query ?? undefined;
    if (given === undefined || !sameSecret(given, token)) {
      await reply.code(401).header('www-authenticate', 'Bearer realm="junction-admin"').send({ error: 'admin token required: Authorization: Bearer TOKEN' });
    }
  });

  app.get('/healthz', async () => ({ status: 'ok' }));

  app.get('/metrics', async (_request, reply) => {
    reply.type(gateway.metrics.registry.contentType);
    return gateway.metrics.text();
  });

  app.get<{ Querystring: { limit?: string } }>('/admin/connections', async (request, reply) => {
    const limit = request.query.limit === undefined ? 100 : Number(request.query.limit);
    if (!Number.isInteger(limit) || limit < 0 || limit > 10_000) return reply.code(400).send({ error: 'limit must be an integer from 0 to 10000' });
    const list = gateway.listConnections(limit).map((c) => ({ ...c, since: new Date(c.since).toISOString() }));
    return { counts: gateway.connections(), connections: list };
  });

  registerDashboard(app, gateway);

  app.get('/readyz', async (_request, reply) => {
    const status = gateway.ready ? 'ready' : gateway.draining ? 'draining' : 'starting';
    return reply.code(gateway.ready ? 200 : 503).send({ status, version: gateway.version });
  });

  app.get('/admin/routes', async () => {
    const { table } = gateway.dispatcher.snapshot;
    return {
      version: table.version,
      loadedAt: table.loadedAt.toISOString(),
      file: gateway.config().file,
      defaultRoute: table.defaultRoute,
      routes: table.routes.map((route) => ({
        name: route.name,
        priority: route.priority,
        match: {
          key: route.pattern,
          ...(route.protocols ? { protocols: route.protocols } : {}),
          ...(route.headers ? { headers: route.headers } : {}),
        },
        mode: route.mode,
        continue: route.continue,
        ...(route.setPriority !== undefined ? { set: { priority: route.setPriority } } : {}),
        timeout: formatDuration(route.timeout),
        rateLimit: route.rateLimit ? { ...route.rateLimit, per: formatDuration(route.rateLimit.per) } : null,
        to: gateway.config().routes[route.index]?.to,
        ...(gateway.config().routes[route.index]?.fallback ? { fallback: gateway.config().routes[route.index]?.fallback } : {}),
      })),
    };
  });

  app.get('/admin/stats', async () => stats(gateway));

  app.get('/admin/breakers', async () => {
    const breakers: Record<string, unknown> = {};
    for (const [name, lane] of gateway.lanes()) {
      const breaker = lane.breaker;
      if (!breaker) continue;
      breakers[name] = {
        state: breaker.state,
        forced: breaker.forced ?? null,
        lastTransition: { ...breaker.lastTransition, at: new Date(breaker.lastTransition.at).toISOString() },
        counts: breaker.counts,
      };
    }
    return { breakers };
  });

  app.post<{ Params: { target: string }; Body: unknown }>('/admin/breakers/:target', async (request, reply) => {
    const lane = gateway.lanes().get(request.params.target);
    if (!lane?.breaker) return reply.code(404).send({ error: `no target named ${request.params.target}` });
    const state = (request.body as { state?: unknown } | undefined)?.state;
    if (state !== 'open' && state !== 'closed' && state !== 'auto') {
      return reply.code(400).send({ error: 'body must be {"state": "open" | "closed" | "auto"}' });
    }
    lane.breaker.force(state === 'auto' ? undefined : state);
    return { target: request.params.target, state: lane.breaker.state, forced: lane.breaker.forced ?? null };
  });

  app.get<{ Querystring: Record<string, string | undefined> }>('/admin/deadletter', async (request, reply) => {
    const parsed = deadLetterQuery(request.query);
    if ('error' in parsed) return reply.code(400).send(parsed);
    const records = await gateway.archive.list(parsed.filter, parsed.limit);
    return { count: records.length, records };
  });

  app.post<{ Body: unknown; Querystring: Record<string, string | undefined> }>('/admin/deadletter/replay', async (request, reply) => {
    const body = (request.body ?? {}) as Record<string, unknown>;
    const query = { ...request.query } as Record<string, string | undefined>;
    for (const key of ['target', 'reason', 'since', 'until', 'limit'] as const) {
      if (typeof body[key] === 'string' || typeof body[key] === 'number') query[key] = String(body[key]);
    }
    const parsed = deadLetterQuery(query);
    if ('error' in parsed) return reply.code(400).send(parsed);
    if (body.recordIds !== undefined) {
      if (!Array.isArray(body.recordIds) || !body.recordIds.every((id) => typeof id === 'string')) {
        return reply.code(400).send({ error: 'recordIds must be an array of strings' });
      }
      parsed.filter.recordIds = body.recordIds as string[];
    }
    const outcome = await gateway.replayDeadLetters(parsed.filter, parsed.limit);
    return { replayed: outcome.replayed.length, failed: outcome.failed.length, records: outcome };
  });

  app.post('/admin/reload', async (_request, reply) => {
    const outcome = await gateway.reload('admin');
    if (outcome.ok) return reply.send({ status: outcome.changed ? 'reloaded' : 'unchanged', version: outcome.version });
    return reply.code(400).send({ status: 'refused', version: outcome.version, errors: outcome.issues });
  });

  return app;
}
