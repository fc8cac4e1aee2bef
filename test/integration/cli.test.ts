import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { runCli, startCli, type RunningGateway } from '../helpers/cli.js';
import { GLIBC_MALLOC_WARNING, onGlibcMalloc } from '../../src/allocator.js';

const CONFIG = `
listeners:
  http: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
deadletter: { path: dl.jsonl }
auth: { anonymous: true }
targets:
  ingest: { type: http, url: http://127.0.0.1:9/ingest }
routes:
  - name: alarms
    match: { key: "devices/+/alarm" }
    priority: 20
    set: { priority: 9 }
    to: [ingest, { publish: "alerts/{1}" }]
  - name: mqtt-only
    match: { key: "devices/#", protocols: [mqtt] }
    priority: 30
    to: [publish]
  - name: catch-all
    match: { key: "devices/#" }
    to: [publish]
`;

// Each test runs the CLI up to three times, a process that loads the whole gateway and compiles
// its config schema: seconds of CPU each on a busy machine, so the default 20 s bound is too tight.
describe('junction CLI', { timeout: 60_000 }, () => {
  let dir: string;
  let good: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-cli-'));
    good = join(dir, 'good.yaml');
    await writeFile(good, CONFIG);
  });
  let running: RunningGateway | undefined;
  // A failed assertion must not leave a gateway process behind.
  afterEach(() => {
    if (running && running.child.exitCode === null) running.child.kill('SIGKILL');
    running = undefined;
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('validate: exit 0 with a one-line summary for a good file', async () => {
    const result = await runCli(['validate', good]);
    expect(result.code).toBe(0);
    expect(result.stdout.trim()).toBe(`${good}: ok: 3 routes, 1 targets, listeners: http, admin, defaultRoute: publish`);
  });

  it('validate: the DESIGN sample and the default config validate', async () => {
    for (const file of ['config/examples/design-sample.yaml', 'config/gateway.yaml']) {
      const result = await runCli(['validate', file]);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toContain(`${file}: ok:`);
    }
  });

  it('validate: exit 1 with every error as FILE:LINE:COL: key.path: message', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, [
      'listeners:',
      '  http: { host: 127.0.0.1, port: 99999 }',
      'routes:',
      '  - name: r1',
      '    match: { key: "a/#/b" }',
      '    to: [nowhere]',
      '    colour: blue',
      'defaultRoute: maybe',
      '',
    ].join('\n'));
    const result = await runCli(['validate', bad]);
    expect(result.code).toBe(1);
    const lines = result.stderr.trim().split('\n');
    expect(lines).toHaveLength(5);
    for (const line of lines) expect(line).toMatch(new RegExp(`^${bad.replaceAll('/', '\\/')}:\\d+:\\d+: \\S+: .+`));
    expect(result.stderr).toMatch(/:2:\d+: listeners\.http\.port: /);
    expect(result.stderr).toMatch(/:5:\d+: routes\[0\]\.match\.key: /);
    expect(result.stderr).toMatch(/:6:\d+: routes\[0\]\.to\[0\]: .*nowhere/);
    expect(result.stderr).toMatch(/:7:5: routes\[0\]\.colour: unknown key "colour"; expected one of: name, match/);
    expect(result.stderr).toMatch(/:8:\d+: defaultRoute: .*publish, drop/);
  });

  it('validate: a YAML syntax error is positioned too', async () => {
    const broken = join(dir, 'broken.yaml');
    await writeFile(broken, 'routes:\n  - name: "unterminated\n');
    const result = await runCli(['validate', broken]);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(new RegExp(`^${broken.replaceAll('/', '\\/')}:\\d+:\\d+: `));
  });

  it('validate: a missing file is one clear line and exit 1', async () => {
    const result = await runCli(['validate', join(dir, 'nope.yaml')]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain('nope.yaml');
  });

  it('route: prints the winner, substituted targets and the losers with why', async () => {
    const http = await runCli(['route', 'devices/d7/alarm', '-c', good]);
    expect(http.code).toBe(0);
    expect(http.stdout).toMatch(/winner alarms \(priority 20/);
    expect(http.stdout).toContain('to: ingest, publish -> alerts/d7');
    expect(http.stdout).toMatch(/lost {3}mqtt-only .*protocol not in \[mqtt\]/);
    expect(http.stdout).toMatch(/lost {3}catch-all .*lower precedence than alarms/);

    const mqtt = await runCli(['route', 'devices/d7/alarm', '-p', 'mqtt', '-c', good]);
    expect(mqtt.stdout).toMatch(/winner mqtt-only/);

    const none = await runCli(['route', 'other/key', '-c', good]);
    expect(none.stdout).toContain('no rule matched: defaultRoute publish -> other/key');
  });

  it('route: shows the winner\'s reply timeout and rate limit', async () => {
    const limited = join(dir, 'limited.yaml');
    await writeFile(limited, `${CONFIG}  - name: paced
    match: { key: "paced/+" }
    priority: 50
    timeout: 2s
    rateLimit: { rate: 100, per: 1s, burst: 200, scope: client }
    to: [publish]
`);
    const paced = await runCli(['route', 'paced/a', '-c', limited]);
    expect(paced.stdout).toContain('         reply timeout 2s; rate limit 100 per 1s, burst 200, a bucket per client\n');
    const plain = await runCli(['route', 'devices/d7/alarm', '-c', limited]);
    expect(plain.stdout).toContain('         reply timeout 5s; rate limit none\n');
  });

  it('--version prints the package version; no arguments print the first steps and exit 1', async () => {
    const { version } = JSON.parse(await readFile('package.json', 'utf8')) as { version: string };
    const printed = await runCli(['--version']);
    expect(printed).toMatchObject({ code: 0, stdout: `${version}\n` });
    const bare = await runCli([]);
    expect(bare.code).toBe(1);
    expect(bare.stdout).toMatch(new RegExp(`^junction ${version.replaceAll('.', '\\.')}: `));
    for (const command of ['junction start', 'junction validate FILE', 'junction route KEY', 'junction --help']) expect(bare.stdout).toContain(command);
    expect(bare.stdout.split('\n').length).toBeLessThan(12);
  });

  it('route: refuses a pattern in place of a key, exit 1', async () => {
    const result = await runCli(['route', 'devices/+/alarm', '-c', good]);
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr.trim()).toBe('route devices/+/alarm: key must not contain the wildcards + or #; give a key a message would carry, e.g. devices/d1/alarm');
  });

  it('start: a port in use is one line naming the key to change, exit 1', async () => {
    const blocker = createServer();
    blocker.listen(0, '127.0.0.1');
    await once(blocker, 'listening');
    const port = (blocker.address() as AddressInfo).port;
    const config = join(dir, 'busy.yaml');
    await writeFile(config, `listeners:\n  admin: { host: 127.0.0.1, port: 0 }\n  http: { host: 127.0.0.1, port: ${port} }\ndeadletter: { path: dl.jsonl }\n`);
    const result = await runCli(['start', '-c', config]);
    blocker.close();
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(`listeners.http: 127.0.0.1:${port} is already in use; change listeners.http.host/port in the config file`);
    // It never served, so there was nothing to drain: the admin listener and the queue store it
    // had opened are released quietly.
    const logged = result.stdout.trim().split('\n').map((line) => (JSON.parse(line) as { msg: string }).msg);
    expect(logged).toEqual([...(onGlibcMalloc() ? [GLIBC_MALLOC_WARNING] : []), 'listener up', 'queue store recovered']);
  });

  it('start: a target that cannot be created is one line naming its key, exit 1', async () => {
    const config = join(dir, 'bad-proto.yaml');
    await writeFile(config, `listeners:\n  http: { host: 127.0.0.1, port: 0 }\ndeadletter: { path: dl.jsonl }
targets:
  billing: { type: grpc, address: 127.0.0.1:1, proto: missing.proto, method: billing.v1.Billing/Charge }
`);
    const result = await runCli(['start', '-c', config]);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toMatch(/^targets\.billing\.proto: cannot load .*missing\.proto/);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
  });

  it('start: serves, reloads on SIGHUP, and exits 0 on SIGTERM', async () => {
    const config = join(dir, 'running.yaml');
    await writeFile(config, CONFIG);
    const gateway = await startCli(config);
    running = gateway;
    const http = `http://127.0.0.1:${gateway.ports.http}`;
    const admin = `http://127.0.0.1:${gateway.ports.admin}`;
    const ready = await fetch(`${admin}/readyz`);
    expect(ready.status).toBe(200);
    const accepted = await fetch(`${http}/v1/messages/other/key`, { method: 'POST', body: 'x' });
    expect(accepted.status).toBe(202);

    await writeFile(config, `${CONFIG}\n  - { name: added, match: { key: "added/#" }, to: [publish] }\n`);
    gateway.child.kill('SIGHUP');
    await eventually(async () => {
      const routes = (await (await fetch(`${admin}/admin/routes`)).json()) as { routes: { name: string }[] };
      expect(routes.routes.map((r) => r.name)).toContain('added');
    });
    gateway.child.kill('SIGTERM');
    expect(await gateway.exited).toBe(0);
    expect(gateway.logs.map((l) => l.msg)).toEqual(expect.arrayContaining(['reload ok', 'draining', 'stopped']));
  });
});
