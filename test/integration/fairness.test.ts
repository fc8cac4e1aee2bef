/**
 * Fairness (issue 19): a publisher that floods one key cannot starve the others. The rule's
 * per-client bucket bounds what the flooding connection gets through to the router and the
 * subscribers, while another client on another key is accepted in full and delivered.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCli, type RunningGateway } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { sample, scrape } from '../helpers/prometheus.js';

const RATE = 100;
const BURST = 100;
const FLOOD_MS = 3000;
/** the flooder's bound: qos 0 PUBLISHes written as fast as its socket takes them */
const FLOOD_MAX = 200_000;
const CALM_EVERY_MS = 20;

/** Publishes qos 0 as fast as its socket takes them for argv[2] ms (at most argv[3]); prints how many. */
const FLOODER = `
import mqtt from 'mqtt';
const [url, ms, max] = process.argv.slice(1);
const client = await mqtt.connectAsync(url, { reconnectPeriod: 0, clientId: 'flooder' });
const payload = Buffer.alloc(256, 'f');
const started = Date.now();
let flooded = 0;
while (Date.now() - started < Number(ms) && flooded < Number(max)) {
  await client.publishAsync('flood/x', payload, { qos: 0 });
  flooded++;
}
await client.endAsync();
console.log(flooded);
`;

describe('a flooding publisher gets only its bucket', () => {
  let running: RunningGateway;
  let dir: string;
  let ports: Record<string, number>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-fairness-'));
    const path = join(dir, 'gateway.yaml');
    await writeFile(path, `
listeners:
  http: { host: 127.0.0.1, port: 0 }
  mqtt: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
auth: { anonymous: true }
storage: { dir: ${join(dir, 'store')} }
deadletter: { path: ${join(dir, 'deadletter.jsonl')} }
routes:
  - name: everyone
    match: { key: "#" }
    rateLimit: { rate: ${RATE}, per: 1s, burst: ${BURST}, scope: client }
    to: [publish]
`);
    running = await startCli(path);
    ports = running.ports;
  });

  afterAll(async () => {
    running.child.kill('SIGKILL');
    await running.exited;
    await rm(dir, { recursive: true, force: true });
  });

  it('bounds the flooder to rate × time + burst while a calm client on another key is accepted and delivered in full', async () => {
    const url = `mqtt://127.0.0.1:${ports.mqtt}`;
    const watcher = await mqtt.connectAsync(url, { reconnectPeriod: 0, clientId: 'watcher' });
    let floodDelivered = 0;
    let calmDelivered = 0;
    watcher.on('message', (topic) => {
      if (topic.startsWith('flood/')) floodDelivered++;
      else calmDelivered++;
    });
    await watcher.subscribeAsync({ 'flood/#': { qos: 0 }, 'calm/#': { qos: 1 } });

    // In a process of its own, so the flood does not slow this one's clients instead of the gateway.
    const flooder = spawn(process.execPath, ['--input-type=module', '-e', FLOODER, url, String(FLOOD_MS), String(FLOOD_MAX)], { stdio: ['ignore', 'pipe', 'inherit'] });
    const started = Date.now();
    const flood = new Promise<number>((resolve) => {
      let out = '';
      flooder.stdout!.on('data', (chunk: Buffer) => { out += chunk.toString(); });
      flooder.once('exit', () => resolve(Number(out.trim())));
    });

    const calm = await mqtt.connectAsync(url, { reconnectPeriod: 0, clientId: 'calm' });
    let calmAcked = 0;
    const calmLatencies: number[] = [];
    while (Date.now() - started < FLOOD_MS) {
      const sent = Date.now();
      await calm.publishAsync('calm/x', 'ok', { qos: 1 });
      calmLatencies.push(Date.now() - sent);
      calmAcked++;
      await new Promise((resolve) => setTimeout(resolve, CALM_EVERY_MS));
    }
    const flooded = await flood;
    const elapsedS = (Date.now() - started) / 1000;

    // The calm client: every message acknowledged, none refused, all delivered.
    await eventually(() => expect(calmDelivered).toBe(calmAcked));
    const metrics = await scrape(`http://127.0.0.1:${ports.admin}`);
    const rateLimited = sample(metrics, 'junction_limiter_rejections_total', { scope: 'client' });
    expect(flooded).toBeGreaterThan(BURST + RATE * elapsedS);
    expect(rateLimited).toBeGreaterThan(0);
    // The flooder: through the router at most its bucket's worth, the rest refused.
    const bound = BURST + RATE * (elapsedS + 1);
    await eventually(() => expect(floodDelivered + rateLimited).toBe(flooded));
    expect(floodDelivered).toBeLessThanOrEqual(bound);
    expect(floodDelivered).toBeGreaterThanOrEqual(BURST);
    // Its share of the calm client's acknowledgements: the median stays a fraction of the run.
    const median = [...calmLatencies].sort((a, b) => a - b)[Math.floor(calmLatencies.length / 2)]!;
    expect(median).toBeLessThan(FLOOD_MS / 3);
    await Promise.all([watcher.endAsync(), calm.endAsync()]);
  }, 30_000);
});
