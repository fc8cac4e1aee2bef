import Fastify, { type FastifyInstance } from 'fastify';
import type { Gateway } from '../gateway.js';

/**
 * The admin listener (loopback by default): health, readiness, the live route table and
 * reload. It is a separate server so none of this is reachable from the public listeners.
 */
export async function startAdminServer(gateway: Gateway): Promise<FastifyInstance> {
  const app = Fastify({ logger: false, forceCloseConnections: true });

  app.get('/healthz', async () => ({ status: 'ok' }));

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
        to: gateway.config().routes[route.index]?.to,
        ...(gateway.config().routes[route.index]?.fallback ? { fallback: gateway.config().routes[route.index]?.fallback } : {}),
      })),
    };
  });

  app.post('/admin/reload', async (_request, reply) => {
    const outcome = await gateway.reload('admin');
    if (outcome.ok) return reply.send({ status: 'reloaded', version: outcome.version });
    return reply.code(400).send({ status: 'refused', version: outcome.version, errors: outcome.issues });
  });

  return app;
}
