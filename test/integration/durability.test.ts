import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EVERY_LISTENER, runCli, type RunningGateway, startCli } from '../helpers/cli.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { sample, scrape } from '../helpers/prometheus.js';
import { connectPublisher, PUBLISH_PROTOCOLS, type Ports, type PublishResult } from '../helpers/publishers.js';

const LISTENERS = `
${EVERY_LISTENER}deadletter: { path: dl.jsonl }
`;

interface DeadLetters {
  records: { target: string; reason: string; attempts: number; message: { key: string; payload: string } }[];
}

function text(base64: string): string {
  return Buffer.from(base64, 'base64').toString();
}

// Each test starts the gateway from dist/ two or three times: up to 3 s each on a busy machine.
describe('durable delivery through the gateway', { timeout: 60_000 }, () => {
  let dir: string;
  let downstream: Downstream | undefined;
  let running: RunningGateway | undefined;

  afterEach(async () => {
    running?.child.kill('SIGKILL');
    await running?.exited;
    running = undefined;
    await downstream?.close();
    downstream = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function crash(): Promise<void> {
    running!.child.kill('SIGKILL');
    await running!.exited;
    running = undefined;
  }

  function url(listener: 'http' | 'admin'): string {
    return `http://127.0.0.1:${running!.ports[listener]}`;
  }

  async function post(key: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<Response> {
    const response = await fetch(`${url('http')}/v1/messages/${key}`, { method: 'POST', body, headers });
    await response.arrayBuffer();
    return response;
  }

  it('puts acknowledged messages back after kill -9: in priority order, with their attempts, before any listener but admin opens; a removed target\'s go to the dead-letter store as no_target', async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-durable-'));
    const calls: string[] = [];
    let answering = false;
    downstream = await startDownstream((request, response) => {
      const body = request.body.toString();
      calls.push(body);
      if (!answering) return;
      response.writeHead(body === 'first' ? 500 : 204).end();
    });
    const config = join(dir, 'gateway.yaml');
    const { url: downstreamUrl } = downstream;
    const targets = (withB: boolean) => `${LISTENERS}
targets:
  a: { type: http, url: "${downstreamUrl}/a", concurrency: 1, timeout: 30s, retry: { attempts: 3, backoff: 10ms } }
${withB ? `  b: { type: http, url: "${downstreamUrl}/b", concurrency: 1, timeout: 30s }` : ''}
routes:
  - { name: a, match: { key: "a/#" }, to: [a] }
${withB ? '  - { name: b, match: { key: "b/#" }, to: [b] }' : ''}
`;
    await writeFile(config, targets(true));
    running = await startCli(config);
    expect((await post('a/1', 'first')).status).toBe(202);
    await eventually(() => expect(calls).toEqual(['first']));
    for (const [body, priority] of [['p0-a', 0], ['p9-a', 9], ['p4', 4], ['p9-b', 9], ['p0-b', 0]] as const) {
      expect((await post('a/1', body, { 'x-priority': String(priority) })).status).toBe(202);
    }
    for (const body of ['b-1', 'b-2', 'b-3']) expect((await post('b/1', body)).status).toBe(202);
    await eventually(() => expect(calls).toEqual(['first', 'b-1']));
    await crash();

    calls.length = 0;
    answering = true;
    await writeFile(config, targets(false));
    running = await startCli(config);
    const logs = running.logs.map((entry) => (entry.msg === 'listener up' ? `${String(entry.msg)} ${String(entry.listener)}` : String(entry.msg)));
    expect(logs.indexOf('listener up admin')).toBeLessThan(logs.indexOf('queue store recovered'));
    expect(logs.indexOf('queue store recovered')).toBeLessThan(logs.indexOf('listener up http'));
    expect(running.logs.find((entry) => entry.msg === 'queue store recovered')).toMatchObject({ sync: 'os', records: 9, targets: ['a', 'b'], noTarget: 3, corrupt: 0, torn: 0 });

    // The message in flight at the crash had one attempt: two more, then the dead-letter store.
    await eventually(async () => {
      const listed = (await (await fetch(`${url('admin')}/admin/deadletter?target=a`)).json()) as DeadLetters;
      expect(listed.records.map((r) => [text(r.message.payload), r.reason, r.attempts])).toEqual([['first', 'retries_exhausted', 3]]);
    });
    // The last of them may still be on its way when the first is dead-lettered.
    await eventually(() => expect(calls.filter((body) => body !== 'first')).toEqual(['p9-a', 'p9-b', 'p4', 'p0-a', 'p0-b']));
    expect(calls.indexOf('first')).toBe(2);
    expect(calls.filter((body) => body === 'first')).toHaveLength(2);

    const removed = (await (await fetch(`${url('admin')}/admin/deadletter?reason=no_target`)).json()) as DeadLetters;
    expect(removed.records.map((r) => [r.target, text(r.message.payload)])).toEqual([['b', 'b-1'], ['b', 'b-2'], ['b', 'b-3']]);
    expect(removed.records[0]!.attempts).toBe(1);

    const metrics = await scrape(url('admin'));
    expect(sample(metrics, 'junction_queue_recovery_records', { outcome: 'recovered' })).toBe(9);
    expect(sample(metrics, 'junction_queue_recovery_records', { outcome: 'no_target' })).toBe(3);
    expect(sample(metrics, 'junction_queue_store_info', { sync: 'os' })).toBe(1);
    expect(sample(metrics, 'junction_queue_store_records', { target: 'a' })).toBe(0);
    const stats = (await (await fetch(`${url('admin')}/admin/stats`)).json()) as { targets: { a: Record<string, unknown> } };
    expect(stats.targets.a).toMatchObject({ adopted: 6, delivered: 5, deadLettered: 1, queued: 0, inFlight: 0, balanced: true });
  });

  it('skips exactly a torn final record and a record with a flipped byte, counts them, and delivers the rest end to end', async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-durable-'));
    const delivered: string[] = [];
    let answering = false;
    downstream = await startDownstream((request, response) => {
      if (!answering) return;
      delivered.push(request.body.toString());
      response.writeHead(204).end();
    });
    const config = join(dir, 'gateway.yaml');
    await writeFile(config, `${LISTENERS}
storage: { dir: queue }
targets:
  sink: { type: http, url: "${downstream.url}/in", concurrency: 1, timeout: 30s }
routes:
  - { name: r, match: { key: "jobs/#" }, to: [sink] }
`);
    running = await startCli(config);
    const bodies = Array.from({ length: 10 }, (_, i) => `message-${i}-${'x'.repeat(40)}`);
    for (const body of bodies) expect((await post('jobs/1', body)).status).toBe(202);
    await eventually(() => expect(downstream!.received).toHaveLength(1));
    await crash();

    // The only segment written: message 0's append and attempt, then the appends of 1 to 9.
    const [segment, ...others] = (await readdir(join(dir, 'queue'))).filter((name) => name.endsWith('.log')).map((name) => join(dir, 'queue', name));
    expect(others).toEqual([]);
    const data = await readFile(segment!);
    data[data.indexOf(bodies[5]!) + 3]! ^= 0x01;
    await writeFile(segment!, data);
    await truncate(segment!, data.length - 5);

    answering = true;
    running = await startCli(config);
    expect(running.logs.find((entry) => entry.msg === 'queue store recovered')).toMatchObject({ records: 8, corrupt: 1, torn: 1 });
    const expected = bodies.filter((_, i) => i !== 5 && i !== 9);
    await eventually(() => expect(delivered).toEqual(expected));
    const metrics = await scrape(url('admin'));
    expect(sample(metrics, 'junction_queue_recovery_records', { outcome: 'corrupt' })).toBe(1);
    expect(sample(metrics, 'junction_queue_recovery_records', { outcome: 'torn' })).toBe(1);
  });

  it('refuses QoS 1 messages with overloaded on every protocol while the disk takes nothing more, acknowledges nothing it could not store, and takes them again once it can', async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-durable-'));
    const delivered = new Set<string>();
    downstream = await startDownstream((request, response) => {
      delivered.add(request.body.toString().slice(0, 40).trim());
      response.writeHead(204).end();
    });
    const config = join(dir, 'gateway.yaml');
    await writeFile(config, `${LISTENERS}
storage: { dir: queue }
targets:
  sink: { type: http, url: "${downstream.url}/in" }
routes:
  - { name: r, match: { key: "full/#" }, to: [sink] }
`);
    // One 512-byte block per file: a segment's header fits, a record of this size never does.
    running = await startCli(config, {}, { fileSizeBlocks: 1 });
    const ports = running.ports as unknown as Ports;
    const body = (token: string) => token.padEnd(40) + 'x'.repeat(600);
    const publishers = await Promise.all(PUBLISH_PROTOCOLS.map((protocol) => connectPublisher(protocol, ports)));
    const [http, mqtt, ws, grpc] = publishers as [typeof publishers[number], typeof publishers[number], typeof publishers[number], typeof publishers[number]];
    const refusedBy = await Promise.all([http, ws, grpc].map((publisher, i) => publisher.publish('full/1', body(`refused-${i}`))));
    expect(refusedBy).toEqual<PublishResult[]>([{ acked: false, code: 'overloaded' }, { acked: false, code: 'overloaded' }, { acked: false, code: 'overloaded' }]);
    // MQTT 3.1.1 cannot refuse a PUBLISH: the gateway holds its PUBACK and keeps trying.
    let mqttAcked = false;
    const held = mqtt.publish('full/1', body('held-mqtt')).then((result) => { mqttAcked = result.acked; });
    await eventually(async () => {
      const stats = (await (await fetch(`${url('admin')}/admin/stats`)).json()) as { adapters: { mqtt: { counters: Record<string, number> } } };
      expect(stats.adapters.mqtt.counters.held).toBe(1);
    });
    expect(mqttAcked).toBe(false);
    // QoS 0 never touches the disk, so it still flows.
    expect((await post('full/1', body('qos0'), { 'x-qos': '0' })).status).toBe(202);
    await eventually(() => expect(delivered.has('qos0')).toBe(true));

    // Space returns: the same process takes QoS 1 messages again, the held PUBACK included.
    execFileSync('prlimit', ['--pid', String(running.child.pid), '--fsize=unlimited:']);
    await held;
    expect(mqttAcked).toBe(true);
    const acked = await Promise.all(publishers.map((publisher, i) => publisher.publish('full/1', body(`after-${PUBLISH_PROTOCOLS[i]}`))));
    expect(acked.every((result) => result.acked)).toBe(true);
    await eventually(() => expect([...delivered].sort()).toEqual(['after-grpc', 'after-http', 'after-mqtt', 'after-ws', 'held-mqtt', 'qos0']));
    await Promise.all(publishers.map((publisher) => publisher.close()));
  });

  it('refuses to start on a storage.dir another running gateway holds, in one line naming the key', async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-durable-'));
    const config = join(dir, 'gateway.yaml');
    await writeFile(config, `${LISTENERS}\nstorage: { dir: queue }\n`);
    running = await startCli(config);
    const second = await runCli(['start', '-c', config]);
    expect(second.code).toBe(1);
    expect(second.stderr.trim()).toBe(`storage.dir: ${join(dir, 'queue')} is used by another running gateway (process ${running.child.pid}); give each gateway its own storage.dir`);
  });
});
