import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Gateway } from '../gateway.js';
import { quantilesBetween, type LatencyBuckets, type Quantiles } from '../metrics.js';

/** How often the dashboard's event stream sends a snapshot. */
const SNAPSHOT_INTERVAL_MS = 1000;

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

const FILES: Record<string, { path: () => string; type: string }> = {
  '/dashboard': { path: () => join(publicDir(), 'index.html'), type: 'text/html; charset=utf-8' },
  '/dashboard/app.js': { path: () => join(publicDir(), 'app.js'), type: 'text/javascript; charset=utf-8' },
  '/dashboard/app.css': { path: () => join(publicDir(), 'app.css'), type: 'text/css; charset=utf-8' },
  '/dashboard/uplot.js': { path: () => join(UPLOT_DIR, 'uPlot.iife.min.js'), type: 'text/javascript; charset=utf-8' },
  '/dashboard/uplot.css': { path: () => join(UPLOT_DIR, 'uPlot.min.css'), type: 'text/css; charset=utf-8' },
};

/** Latency quantiles cover this much recent time: what matters during an incident is now. */
const LATENCY_WINDOW_MS = 10_000;

/** Bucket snapshots of the last LATENCY_WINDOW_MS, oldest first, shared by every open dashboard. */
const history = new WeakMap<Gateway, { at: number; buckets: LatencyBuckets }[]>();

function recentLatency(gateway: Gateway): { ingress: Record<string, Quantiles>; targets: Record<string, Quantiles> } {
  const now = Date.now();
  const buckets = gateway.metrics.latencyBuckets();
  const ring = history.get(gateway) ?? [];
  history.set(gateway, ring);
  while (ring.length > 1 && ring[1]!.at <= now - LATENCY_WINDOW_MS) ring.shift();
  const before = ring[0]?.at !== undefined && ring[0].at <= now - LATENCY_WINDOW_MS / 2 ? ring[0].buckets : { ingress: {}, targets: {} };
  if (ring.length === 0 || now - ring.at(-1)!.at >= SNAPSHOT_INTERVAL_MS / 2) ring.push({ at: now, buckets });
  return { ingress: quantilesBetween(buckets.ingress, before.ingress), targets: quantilesBetween(buckets.targets, before.targets) };
}

/** The queue store's policy and bytes waiting in it, and how full the dead-letter store is. */
function storageSummary(gateway: Gateway): { sync: string; queuedBytes: number; deadLetterBytes: number; deadLetterMaxBytes: number } {
  const storage = gateway.storageStats();
  let queuedBytes = 0;
  for (const queue of storage.queues.values()) queuedBytes += queue.bytes;
  const { bytes, maxBytes } = gateway.deadletter.usage;
  return { sync: storage.sync, queuedBytes, deadLetterBytes: bytes, deadLetterMaxBytes: maxBytes };
}

/** One picture of the gateway, as the dashboard draws it. */
export async function dashboardSnapshot(gateway: Gateway): Promise<Record<string, unknown>> {
  const targets: Record<string, unknown> = {};
  for (const [name, lane] of gateway.lanes()) {
    const s = lane.stats;
    targets[name] = {
      queued: s.queued, inFlight: s.inFlight, delivered: s.delivered, deadLettered: s.deadLettered,
      shed: s.shed, breaker: lane.breaker?.state ?? 'none',
    };
  }
  return {
    t: Date.now(),
    version: gateway.version,
    status: gateway.ready ? 'ready' : gateway.draining ? 'draining' : 'starting',
    totals: gateway.metrics.totals(),
    latency: recentLatency(gateway),
    targets,
    limiter: gateway.limiter.rejections,
    storage: storageSummary(gateway),
    connections: gateway.connections(),
    changes: gateway.recentChanges.slice(-20).reverse(),
  };
}

/**
 * `/dashboard`: a static page (uPlot for the charts, no framework) fed by a Server-Sent Events
 * stream from this same admin listener.
 */
export function registerDashboard(app: FastifyInstance, gateway: Gateway): void {
  for (const [url, file] of Object.entries(FILES)) {
    app.get(url, async (_request, reply) => reply.type(file.type).header('cache-control', 'no-cache').send(await readFile(file.path())));
  }
  app.get('/dashboard/events', (request, reply) => {
    reply.hijack();
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const send = async () => {
      // A dashboard tab that stops reading must not grow the gateway's memory.
      if (raw.writableLength > 1024 * 1024) return;
      raw.write(`data: ${JSON.stringify(await dashboardSnapshot(gateway))}\n\n`);
    };
    void send();
    const timer = setInterval(() => void send(), SNAPSHOT_INTERVAL_MS);
    timer.unref();
    request.raw.on('close', () => clearInterval(timer));
  });
}
