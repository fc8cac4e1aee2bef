import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli, startCli, type RunningGateway } from '../helpers/cli.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';

// Five node processes start one after the other here: on a busy machine that alone can take 20 s.
describe('graceful shutdown and dead-letter replay from the CLI', { timeout: 60_000 }, () => {
  let dir: string;
  let downstream: Downstream | undefined;
  let running: RunningGateway | undefined;

  afterEach(async () => {
    running?.child.kill('SIGKILL');
    await downstream?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('drains until the deadline, dead-letters the rest with reason shutdown, exits 0; replay delivers them after a restart', async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-shutdown-'));
    downstream = await startDownstream(() => undefined);
    const config = join(dir, 'gateway.yaml');
    await writeFile(config, `
listeners:
  http: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
shutdown: { drainTimeout: 300ms }
deadletter: { path: dl.jsonl }
auth: { anonymous: true }
targets:
  stuck: { type: http, url: "${downstream.url}/in", concurrency: 1, timeout: 30s }
routes:
  - { name: r, match: { key: "jobs/#" }, to: [stuck] }
`);
    running = await startCli(config);
    const http = `http://127.0.0.1:${running.ports.http}`;
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const response = await fetch(`${http}/v1/messages/jobs/${i}`, { method: 'POST', body: String(i) });
      expect(response.status).toBe(202);
      ids.push(((await response.json()) as { id: string }).id);
    }
    await eventually(() => expect(downstream!.received).toHaveLength(1));
    running.child.kill('SIGTERM');
    expect(await running.exited).toBe(0);
    running = undefined;

    // The downstream recovers; a new gateway on the same file replays what the old one could not deliver.
    downstream.handler = (_req, res) => res.writeHead(204).end();
    running = await startCli(config);
    const admin = `http://127.0.0.1:${running.ports.admin}`;
    const list = await runCli(['deadletter', 'list', '--admin', admin, '--reason', 'shutdown']);
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout).toContain('4 record(s)');
    for (const id of ids) expect(list.stdout).toContain(`id=${id}`);

    const replay = await runCli(['deadletter', 'replay', '--admin', admin]);
    expect(replay.stdout.trim()).toBe('replayed 4, failed 0');
    await eventually(() => expect(new Set(downstream!.received.slice(1).map((r) => r.headers['x-junction-id']))).toEqual(new Set(ids)));
    const again = await runCli(['deadletter', 'replay', '--admin', admin]);
    expect(again.stdout.trim()).toBe('replayed 0, failed 0');
  });
});
