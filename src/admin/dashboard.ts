import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Gateway } from '../gateway.js';
import type { SlowConsumerCounts } from '../adapter.js';
import { History, type Tallies } from './history.js';

/** How often the history is sampled, the latency window moves on and the event stream sends a snapshot. */
const SNAPSHOT_INTERVAL_MS = 1000;
/** The history the charts open with: five minutes of one-second intervals. */
const HISTORY_INTERVALS = 300;
/** Rule match rates cover the last ten intervals. */
const ROUTE_RATE_INTERVALS = 10;
/** The most connections one page of /dashboard/connections (and the subscriptions tile) reads. */
const CONNECTIONS_SHOWN = 10_000;

/** The page's files live in src/admin/public, found from here whether running from src/ or dist/. */
function publicDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the package root for the dashboard files');
    dir = parent;
  }
  return join(dir, 'src', 'admin', 'public');
}

const require = createRequire(import.meta.url);
const UPLOT_DIR = dirname(require.resolve('uplot/dist/uPlot.iife.min.js'));

const HTML = 'text/html; charset=utf-8';
const JS = 'text/javascript; charset=utf-8';
const CSS = 'text/css; charset=utf-8';
const FILES: Record<string, { path: () => string; type: string }> = {
  '/dashboard': { path: () => join(publicDir(), 'index.html'), type: HTML },
  '/dashboard/connections': { path: () => join(publicDir(), 'connections.html'), type: HTML },
  '/dashboard/app.js': { path: () => join(publicDir(), 'app.js'), type: JS },
  '/dashboard/connections.js': { path: () => join(publicDir(), 'connections.js'), type: JS },
  '/dashboard/app.css': { path: () => join(publicDir(), 'app.css'), type: CSS },
  '/dashboard/uplot.js': { path: () => join(UPLOT_DIR, 'uPlot.iife.min.js'), type: JS },
  '/dashboard/uplot.css': { path: () => join(UPLOT_DIR, 'uPlot.min.css'), type: CSS },
};

function tallies(gateway: Gateway): Tallies {
  const { received, routes, rejected } = gateway.metrics.totals();
  let delivered = gateway.dispatcher.counters.published;
  for (const lane of gateway.lanes().values()) delivered += lane.stats.delivered;
  return { received, routes, rejected: Object.values(rejected).reduce((a, b) => a + b, 0), delivered };
}

/** The rules in force in precedence order, then `default`, then rules a reload removed that still have counts. */
function ruleNames(gateway: Gateway, counted: Record<string, number>): string[] {
  const names = [...gateway.dispatcher.snapshot.table.routes.map((r) => r.name), 'default'];
  return [...names, ...Object.keys(counted).filter((name) => !names.includes(name))];
}

/** The queue store's policy and bytes waiting in it, and how full the dead-letter store is. */
function storageSummary(gateway: Gateway): { sync: string; queuedBytes: number; deadLetterBytes: number; deadLetterMaxBytes: number } {
  const storage = gateway.storageStats();
  let queuedBytes = 0;
  for (const queue of storage.queues.values()) queuedBytes += queue.bytes;
  const { bytes, maxBytes } = gateway.deadletter.usage;
  return { sync: storage.sync, queuedBytes, deadLetterBytes: bytes, deadLetterMaxBytes: maxBytes };
}

/** Per protocol, deliveries shed for slow subscribers and subscribers cut for not draining. */
function slowConsumers(gateway: Gateway): Record<string, SlowConsumerCounts> {
  const out: Record<string, SlowConsumerCounts> = {};
  for (const [protocol, stats] of gateway.adapterStats()) {
    if (stats.slowConsumers) out[protocol] = stats.slowConsumers;
  }
  return out;
}

/** One picture of the gateway, as the dashboard draws it. */
export function dashboardSnapshot(gateway: Gateway, history: History): Record<string, unknown> {
  const targets: Record<string, unknown> = {};
  for (const [name, lane] of gateway.lanes()) {
    const s = lane.stats;
    targets[name] = {
      queued: s.queued, inFlight: s.inFlight, delivered: s.delivered, deadLettered: s.deadLettered,
      shed: s.shed, breaker: lane.breaker?.state ?? 'none',
    };
  }
  const totals = gateway.metrics.totals();
  const rates = history.routeRates(ROUTE_RATE_INTERVALS);
  const connections = gateway.listConnections(CONNECTIONS_SHOWN);
  return {
    t: Date.now(),
    version: gateway.version,
    status: gateway.ready ? 'ready' : gateway.draining ? 'draining' : 'starting',
    point: history.points().at(-1) ?? null,
    delivered: tallies(gateway).delivered,
    latency: { ingress: gateway.metrics.recent.ingress.percentiles(), targets: gateway.metrics.recent.targets.percentiles() },
    targets,
    rejections: gateway.metrics.rejections(),
    deadLetters: gateway.metrics.deadLetters(),
    routes: ruleNames(gateway, totals.routes).map((name) => ({ name, total: totals.routes[name] ?? 0, perSecond: rates[name] ?? 0 })),
    limiter: gateway.limiter.rejections,
    storage: storageSummary(gateway),
    slowConsumers: slowConsumers(gateway),
    connections: gateway.connections(),
    subscriptions: connections.reduce((sum, c) => sum + c.subscriptions, 0),
    changes: gateway.recentChanges.slice(-20).reverse(),
  };
}

/**
 * `/dashboard`: static pages (uPlot for the charts, no framework) fed by a Server-Sent Events
 * stream and the history of the last minutes, both from this admin listener. The history is
 * sampled whether a page is open or not, so a page opened during an incident shows its start.
 */
export function registerDashboard(app: FastifyInstance, gateway: Gateway): void {
  const history = new History(HISTORY_INTERVALS);
  history.sample(Date.now(), tallies(gateway));
  const sampler = setInterval(() => {
    history.sample(Date.now(), tallies(gateway));
    gateway.metrics.recent.ingress.rotate();
    gateway.metrics.recent.targets.rotate();
  }, SNAPSHOT_INTERVAL_MS);
  sampler.unref();
  app.addHook('onClose', async () => clearInterval(sampler));

  for (const [url, file] of Object.entries(FILES)) {
    app.get(url, async (_request, reply) => reply.type(file.type).header('cache-control', 'no-cache').send(await readFile(file.path())));
  }
  app.get('/dashboard/history', async () => ({ intervalMs: SNAPSHOT_INTERVAL_MS, points: history.points() }));
  app.get('/dashboard/events', (request, reply) => {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const send = () => {
      // A dashboard tab that stops reading must not grow the gateway's memory.
      if (raw.writableLength > 1024 * 1024) return;
      raw.write(`data: ${JSON.stringify(dashboardSnapshot(gateway, history))}\n\n`);
    };
    send();
    const timer = setInterval(send, SNAPSHOT_INTERVAL_MS);
    timer.unref();
    request.raw.on('close', () => clearInterval(timer));
  });
}
