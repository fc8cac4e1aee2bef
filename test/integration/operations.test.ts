import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfigFile } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';
import { silentLogger } from '../../src/log.js';
import type { Adapter, ProtocolRegistration } from '../../src/adapter.js';
import { builtins } from '../../src/builtins.js';
import { runCli } from '../helpers/cli.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { histogramCount, sample, scrape } from '../helpers/prometheus.js';
import { subscribeSse } from '../helpers/sse.js';

describe('operations: metrics, health, admin API', () => {
  let gw: TestGateway | undefined;
  let downstream: Downstream | undefined;
  let dir: string;

  afterEach(async () => {
    await gw?.stop();
    await downstream?.close();
    gw = undefined;
    downstream = undefined;
  });

  it('exports exact counters, a flipping breaker gauge and latency histograms in valid Prometheus text', async () => {
    downstream = await startDownstream();
    gw = await startGateway(`
breakers:
  b: { volumeThreshold: 3, errorThresholdPercentage: 50, resetTimeout: 1m }
targets:
  ingest: { type: http, url: "${downstream.url}/in", breaker: b }
defaultRoute: drop
routes:
  - { name: telemetry, match: { key: "t/#" }, to: [ingest] }
`);
    for (let i = 0; i < 5; i++) expect((await fetch(`${gw.http}/v1/messages/t/${i}`, { method: 'POST', body: 'x' })).status).toBe(202);
    for (let i = 0; i < 2; i++) expect((await fetch(`${gw.http}/v1/messages/nowhere`, { method: 'POST', body: 'x' })).status).toBe(404);
    expect((await fetch(`${gw.http}/v1/messages/t/${encodeURIComponent('#')}`, { method: 'POST', body: 'x' })).status).toBe(400);
    await eventually(() => expect(downstream!.received).toHaveLength(5));

    let metrics = await scrape(gw.admin);
    expect(sample(metrics, 'junction_messages_received_total', { protocol: 'http', route: 'telemetry' })).toBe(5);
    expect(sample(metrics, 'junction_messages_received_total', { protocol: 'http', route: 'default' })).toBe(2);
    expect(sample(metrics, 'junction_rejections_total', { code: 'no_route', protocol: 'http' })).toBe(2);
    expect(sample(metrics, 'junction_rejections_total', { code: 'bad_request', protocol: 'http' })).toBe(1);
    expect(sample(metrics, 'junction_target_delivered_total', { target: 'ingest' })).toBe(5);
    expect(histogramCount(metrics, 'junction_ingress_ack_seconds', { protocol: 'http' })).toBe(5);
    expect(histogramCount(metrics, 'junction_target_call_seconds', { target: 'ingest', outcome: 'ok' })).toBe(5);
    expect(sample(metrics, 'junction_breaker_state', { target: 'ingest', state: 'closed' })).toBe(1);
    expect(sample(metrics, 'junction_breaker_state', { target: 'ingest', state: 'open' })).toBe(0);
    expect(metrics.families.has('junction_process_resident_memory_bytes')).toBe(true);
    for (const name of metrics.families.keys()) expect(name).toMatch(/^junction_/);

    downstream.handler = (_req, res) => res.writeHead(503).end();
    // 6 failures after 5 successes: 55 % of the window, past the 50 % threshold.
    for (let i = 0; i < 6; i++) await fetch(`${gw.http}/v1/messages/t/f${i}`, { method: 'POST', body: 'x' });
    await eventually(async () => {
      metrics = await scrape(gw!.admin);
      expect(sample(metrics, 'junction_breaker_state', { target: 'ingest', state: 'open' })).toBe(1);
      expect(sample(metrics, 'junction_target_in_flight', { target: 'ingest' })).toBe(0);
    });
    expect(sample(metrics, 'junction_breaker_state', { target: 'ingest', state: 'closed' })).toBe(0);
    expect(histogramCount(metrics, 'junction_target_call_seconds', { target: 'ingest', outcome: 'error' })).toBe(6);
    expect(sample(metrics, 'junction_dead_lettered_total', { target: 'ingest', reason: 'failed' })).toBe(6);
  });

  it('counts reloads by outcome and lists connections', async () => {
    gw = await startGateway('defaultRoute: publish');
    const sse = await subscribeSse(gw.http, 'a/#');
    await gw.writeConfig('defaultRoute: [nope]');
    expect((await fetch(`${gw.admin}/admin/reload`, { method: 'POST' })).status).toBe(400);
    await gw.writeConfig('defaultRoute: drop\ndeadletter: { path: deadletter.jsonl }');
    expect(await (await fetch(`${gw.admin}/admin/reload`, { method: 'POST' })).json()).toEqual({ status: 'reloaded', version: 2 });
    expect(await (await fetch(`${gw.admin}/admin/reload`, { method: 'POST' })).json()).toEqual({ status: 'unchanged', version: 2 });
    const metrics = await scrape(gw.admin);
    expect(sample(metrics, 'junction_reloads_total', { outcome: 'ok' })).toBe(1);
    expect(sample(metrics, 'junction_reloads_total', { outcome: 'unchanged' })).toBe(1);
    expect(sample(metrics, 'junction_reloads_total', { outcome: 'refused' })).toBe(1);
    expect(sample(metrics, 'junction_connections', { protocol: 'http' })).toBe(1);
    const connections = (await (await fetch(`${gw.admin}/admin/connections`)).json()) as { counts: Record<string, number> };
    expect(connections.counts.http).toBe(1);
    sse.close();
  });

  it('shows each rule\'s reply timeout and rate limit on /admin/routes', async () => {
    gw = await startGateway(`
requests: { timeout: 3s }
routes:
  - { name: paced, match: { key: "a/#" }, timeout: 250ms, rateLimit: { rate: 10, per: 1s, burst: 20, scope: client }, to: [publish] }
  - { name: open, match: { key: "b/#" }, to: [publish] }
`);
    const { routes } = (await (await fetch(`${gw.admin}/admin/routes`)).json()) as { routes: { name: string; timeout: string; rateLimit: unknown }[] };
    expect(routes.map(({ name, timeout, rateLimit }) => ({ name, timeout, rateLimit }))).toEqual([
      { name: 'paced', timeout: '250ms', rateLimit: { rate: 10, per: '1s', burst: 20, scope: 'client' } },
      { name: 'open', timeout: '3s', rateLimit: null },
    ]);
  });

  it('guards /metrics and /admin with the admin token, keeps probes open', async () => {
    gw = await startGateway('admin: { token: "s3cret-token-0123456789" }');
    expect((await fetch(`${gw.admin}/healthz`)).status).toBe(200);
    expect((await fetch(`${gw.admin}/readyz`)).status).toBe(200);
    expect((await fetch(`${gw.admin}/metrics`)).status).toBe(401);
    expect((await fetch(`${gw.admin}/admin/routes`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status).toBe(401);
    expect((await fetch(`${gw.admin}/admin/routes`, { headers: { authorization: 'Bearer s3cret-token-0123456789' } })).status).toBe(200);
    expect((await fetch(`${gw.admin}/dashboard?token=s3cret-token-0123456789`)).status).toBe(200);
  });

  it('junction deadletter sends the admin token: --token, else JUNCTION_ADMIN_TOKEN', async () => {
    gw = await startGateway('admin: { token: "s3cret-token-0123456789" }');
    const without = await runCli(['deadletter', 'list', '--admin', gw.admin], { env: { JUNCTION_ADMIN_TOKEN: '' } });
    expect(without.code).toBe(1);
    expect(without.stderr).toContain('401');
    const flag = await runCli(['deadletter', 'list', '--admin', gw.admin, '--token', 's3cret-token-0123456789']);
    expect(flag.code, flag.stderr).toBe(0);
    expect(flag.stdout).toContain('0 record(s)');
    const env = await runCli(['deadletter', 'list', '--admin', gw.admin], { env: { JUNCTION_ADMIN_TOKEN: 's3cret-token-0123456789' } });
    expect(env.code, env.stderr).toBe(0);
  });

  it('is not ready while starting and while draining', async () => {
    const port = await freePort();
    dir = await mkdtemp(join(tmpdir(), 'junction-ready-'));
    downstream = await startDownstream(() => undefined);
    const file = join(dir, 'gateway.yaml');
    await writeFile(file, `
listeners:
  http: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: ${port} }
shutdown: { drainTimeout: 1s }
deadletter: { path: dl.jsonl }
auth: { anonymous: true }
targets:
  stuck: { type: http, url: "${downstream.url}/in" }
routes:
  - { name: r, match: { key: "jobs/#" }, to: [stuck] }
`);
    let release!: () => void;
    const adaptersStarted = new Promise<void>((resolve) => { release = resolve; });
    const slow: ProtocolRegistration = {
      protocol: 'slow-to-start',
      create: (): Adapter => ({ start: () => adaptersStarted, stop: async () => undefined, connections: () => 0, stats: () => ({ counters: {} }) }),
    };
    const { config } = await loadConfigFile(file);
    const starting = Gateway.start(config, { logger: silentLogger(), registry: builtins.with({ protocols: [slow] }) });
    const admin = `http://127.0.0.1:${port}`;
    await eventually(async () => {
      const response = await fetch(`${admin}/readyz`);
      expect(response.status).toBe(503);
      expect(await response.json()).toMatchObject({ status: 'starting' });
    });
    release();
    const gateway = await starting;
    expect((await fetch(`${admin}/readyz`)).status).toBe(200);

    const http = `http://127.0.0.1:${gateway.address('http')!.port}`;
    expect((await fetch(`${http}/v1/messages/jobs/1`, { method: 'POST', body: 'x' })).status).toBe(202);
    await eventually(() => expect(downstream!.received).toHaveLength(1));
    const stopping = gateway.stop();
    const draining = await fetch(`${admin}/readyz`);
    expect(draining.status).toBe(503);
    expect(await draining.json()).toMatchObject({ status: 'draining' });
    await stopping;
    await rm(dir, { recursive: true, force: true });
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}
