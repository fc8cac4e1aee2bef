import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { builtins } from '../../src/builtins.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';
import { silentLogger } from '../../src/log.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';

const HEAD = `
listeners:
  http: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
deadletter: { path: dl.jsonl }
auth: { anonymous: true }
`;

function routesTo(a: Downstream, b: Downstream, active: 'a' | 'b'): string {
  return `${HEAD}
targets:
  a: { type: http, url: "${a.url}/a" }
  b: { type: http, url: "${b.url}/b" }
routes:
  - { name: to-${active}, match: { key: "orders/#" }, to: [${active}] }
`;
}

const BROKEN = `${HEAD}
routes:
  - name: broken
    match: { key: "orders/#/x" }
    to: [missing-target]
`;

interface AdminRoutes {
  version: number;
  routes: { name: string }[];
}

describe('hot reload', () => {
  let dir: string;
  let gateway: Gateway | undefined;
  const downstreams: Downstream[] = [];

  afterEach(async () => {
    await gateway?.stop();
    gateway = undefined;
    await Promise.all(downstreams.splice(0).map((d) => d.close()));
    await rm(dir, { recursive: true, force: true });
  });

  async function start(yaml: string, logger = silentLogger()): Promise<{ http: string; admin: string; file: string }> {
    dir = await mkdtemp(join(tmpdir(), 'junction-reload-'));
    const file = join(dir, 'gateway.yaml');
    await writeFile(file, yaml);
    const { config } = await loadConfigFile(file);
    gateway = await Gateway.start(config, { logger, registry: builtins, watchConfig: true });
    return { http: `http://127.0.0.1:${gateway.address('http')!.port}`, admin: `http://127.0.0.1:${gateway.address('admin')!.port}`, file };
  }

  it('refuses an invalid file on POST /admin/reload with positioned errors and keeps the old table', async () => {
    const a = await startDownstream();
    const b = await startDownstream();
    downstreams.push(a, b);
    const { http, admin, file } = await start(routesTo(a, b, 'a'));
    await writeFile(file, BROKEN);
    const refused = await fetch(`${admin}/admin/reload`, { method: 'POST' });
    expect(refused.status).toBe(400);
    const body = (await refused.json()) as { status: string; version: number; errors: { line: number; column: number; path: string; message: string }[] };
    expect(body.status).toBe('refused');
    expect(body.version).toBe(1);
    expect(body.errors.map((e) => e.path)).toEqual(expect.arrayContaining(['routes[0].match.key', 'routes[0].to[0]']));
    for (const error of body.errors) expect(error.line).toBeGreaterThan(0);

    const routes = (await (await fetch(`${admin}/admin/routes`)).json()) as AdminRoutes;
    expect(routes.version).toBe(1);
    expect(routes.routes.map((r) => r.name)).toEqual(['to-a']);
    expect((await fetch(`${http}/v1/messages/orders/1`, { method: 'POST', body: 'x' })).status).toBe(202);
    await eventually(() => expect(a.received).toHaveLength(1));
  });

  it('logs a refused reload with every error as FILE:LINE:COL: key.path: message', async () => {
    const logs: { msg: string; errors?: string[] }[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line) as { msg: string }) });
    const a = await startDownstream();
    const b = await startDownstream();
    downstreams.push(a, b);
    const { admin, file } = await start(routesTo(a, b, 'a'), logger);
    await writeFile(file, `${HEAD}routes:\n  - { name: x, match: { key: "x/#" }, to: [publish\n`);
    expect((await fetch(`${admin}/admin/reload`, { method: 'POST' })).status).toBe(400);
    const refused = logs.find((entry) => entry.msg === 'reload refused; the running table stays');
    expect(refused?.errors).toEqual([`${file}:8:43: routes[0]: this [ is never closed: end it with ] on the same line`]);
  });

  it('picks up a saved file by itself', async () => {
    const a = await startDownstream();
    const b = await startDownstream();
    downstreams.push(a, b);
    const { http, admin, file } = await start(routesTo(a, b, 'a'));
    await writeFile(file, routesTo(a, b, 'b'));
    await eventually(async () => {
      const routes = (await (await fetch(`${admin}/admin/routes`)).json()) as AdminRoutes;
      expect(routes.routes.map((r) => r.name)).toEqual(['to-b']);
    });
    await fetch(`${http}/v1/messages/orders/2`, { method: 'POST', body: 'y' });
    await eventually(() => expect(b.received).toHaveLength(1));
    expect(a.received).toHaveLength(0);
  });

  it('loses nothing and routes everything exactly once while good and broken files are reloaded under traffic', async () => {
    const a = await startDownstream();
    const b = await startDownstream();
    downstreams.push(a, b);
    const { http, admin, file } = await start(routesTo(a, b, 'a'));
    const total = 1500;
    const accepted: string[] = [];
    let sent = 0;
    const sender = async () => {
      while (sent < total) {
        const n = sent++;
        const response = await fetch(`${http}/v1/messages/orders/${n}`, { method: 'POST', body: String(n) });
        expect(response.status).toBe(202);
        accepted.push(((await response.json()) as { id: string }).id);
      }
    };
    const reloader = async () => {
      let round = 0;
      while (sent < total) {
        round++;
        // Written whole and renamed into place, as deploy tools do: the file watcher must never
        // see a half-written file that happens to be valid YAML (say, targets but no routes yet).
        await writeFile(`${file}.tmp`, round % 3 === 0 ? BROKEN : routesTo(a, b, round % 2 === 0 ? 'a' : 'b'));
        await rename(`${file}.tmp`, file);
        const response = await fetch(`${admin}/admin/reload`, { method: 'POST' });
        expect(response.status).toBe(round % 3 === 0 ? 400 : 200);
      }
      return round;
    };
    const [rounds] = await Promise.all([reloader(), ...Array.from({ length: 8 }, sender)]);
    expect(rounds).toBeGreaterThan(3);
    expect(accepted).toHaveLength(total);
    await eventually(() => expect(a.received.length + b.received.length).toBe(total), 10_000);
    const delivered = [...a.received, ...b.received].map((r) => String(r.headers['x-junction-id']));
    expect(new Set(delivered).size).toBe(total);
    expect(new Set(delivered)).toEqual(new Set(accepted));
    expect(a.received.length).toBeGreaterThan(0);
    expect(b.received.length).toBeGreaterThan(0);
  }, 60_000);

  it('hands the queued messages of a changed target to its new lane: each delivered once, the books balanced', async () => {
    const slow = await startDownstream((_req, res) => setTimeout(() => res.writeHead(204).end(), 5));
    downstreams.push(slow);
    const config = (timeout: string) => `${HEAD}
targets:
  slow: { type: http, url: "${slow.url}/s", concurrency: 2, timeout: ${timeout}, retry: { attempts: 3, backoff: 10ms } }
routes:
  - { name: r, match: { key: "jobs/#" }, to: [slow] }
`;
    const { http, admin, file } = await start(config('5s'));
    const total = 300;
    const accepted: string[] = [];
    let sent = 0;
    const sender = async () => {
      while (sent < total) {
        const n = sent++;
        const response = await fetch(`${http}/v1/messages/jobs/${n}`, { method: 'POST', body: String(n) });
        expect(response.status).toBe(202);
        accepted.push(((await response.json()) as { id: string }).id);
      }
    };
    const reloader = async () => {
      // Each reload changes the target, so a new lane takes over whatever is queued then.
      for (let round = 0; round < 4; round++) {
        await eventually(() => expect(slow.received.length).toBeGreaterThan(round * 40), 10_000);
        await writeFile(file, config(`${6 + round}s`));
        expect((await fetch(`${admin}/admin/reload`, { method: 'POST' })).status).toBe(200);
      }
    };
    await Promise.all([reloader(), ...Array.from({ length: 4 }, sender)]);
    await eventually(() => expect(slow.received).toHaveLength(total), 20_000);
    const delivered = slow.received.map((r) => String(r.headers['x-junction-id']));
    expect(new Set(delivered)).toEqual(new Set(accepted));
    // The downstream has the last request 5 ms before it answers: the books settle once it has.
    await eventually(async () => {
      const stats = (await (await fetch(`${admin}/admin/stats`)).json()) as { version: number; targets: { slow: Record<string, unknown> } };
      // The file watcher reloads too: at least the four asked for.
      expect(stats.version).toBeGreaterThanOrEqual(5);
      expect(stats.targets.slow).toMatchObject({ queued: 0, inFlight: 0, balanced: true });
    });
  });

  it('refuses a reload whose target cannot be created, naming its key, and keeps every running target working', async () => {
    const a = await startDownstream();
    const b = await startDownstream();
    downstreams.push(a, b);
    const { http, admin, file } = await start(routesTo(a, b, 'a'));
    await writeFile(file, `${routesTo(a, b, 'a')}
  - { name: bill, match: { key: "bill/#" }, to: [billing] }
`.replace('targets:\n', `targets:
  billing: { type: grpc, address: 127.0.0.1:1, proto: missing.proto, method: billing.v1.Billing/Charge }
`));
    const refused = await fetch(`${admin}/admin/reload`, { method: 'POST' });
    expect(refused.status).toBe(400);
    const body = (await refused.json()) as { version: number; errors: { path: string; message: string }[] };
    expect(body.version).toBe(1);
    expect(body.errors).toEqual([expect.objectContaining({ path: 'targets.billing.proto', message: expect.stringContaining('cannot load') as unknown })]);
    expect((await fetch(`${http}/v1/messages/orders/1`, { method: 'POST', body: 'x' })).status).toBe(202);
    await eventually(() => expect(a.received).toHaveLength(1));
  });

  it('hands a fallback that comes after a reload to the new lane of a replaced target, never to the retired one', async () => {
    const primary = await startDownstream();
    const fallback = await startDownstream();
    downstreams.push(primary, fallback);
    const answers: (() => void)[] = [];
    primary.handler = (_req, res) => answers.push(() => res.writeHead(500).end('no'));
    const config = (timeout: string) => `${HEAD}
targets:
  primary: { type: http, url: "${primary.url}/p", timeout: 20s }
  backup: { type: http, url: "${fallback.url}/b", timeout: ${timeout} }
routes:
  - { name: r, match: { key: "jobs/#" }, to: [primary], fallback: [backup] }
`;
    const { http, admin, file } = await start(config('2s'));
    expect((await fetch(`${http}/v1/messages/jobs/1`, { method: 'POST', body: 'x' })).status).toBe(202);
    await eventually(() => expect(answers).toHaveLength(1));
    // The backup target is replaced while the message is still with the primary.
    await writeFile(file, config('3s'));
    expect((await fetch(`${admin}/admin/reload`, { method: 'POST' })).status).toBe(200);
    // Past the second after which the gateway used to close a replaced target's connections.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    answers[0]!();
    await eventually(() => expect(fallback.received).toHaveLength(1));
    const stats = (await (await fetch(`${admin}/admin/stats`)).json()) as { messages: { deadLettered: number } };
    expect(stats.messages.deadLettered).toBe(0);
  });
});
