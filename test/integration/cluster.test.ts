import { request } from 'node:http';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MessageFrame } from '../../src/client/protocol.js';
import { EVERY_LISTENER, runCli, type RunningGateway, startCli } from '../helpers/cli.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { GatewayClient, subscribed, type Delivery } from '../helpers/grpc.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { startRedis, type RedisServer } from '../helpers/redis.js';
import { subscribeSse, type SseSubscriber } from '../helpers/sse.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

/**
 * Cluster mode with real processes: gateways started from dist/ on one redis-server of the
 * test's own. Process starts dominate the time (1–3 s each on a loaded machine), so one set of
 * three nodes serves the tests in order, the last of which kills one.
 */

interface Node {
  name: string;
  config: string;
  gateway: RunningGateway;
  http: string;
  admin: string;
}

const LISTENERS = `
${EVERY_LISTENER}storage: { dir: data }
deadletter: { path: data/deadletter.jsonl }
`;

async function writeConfig(dir: string, cluster: string, more = ''): Promise<string> {
  const path = join(dir, 'gateway.yaml');
  await writeFile(path, `${LISTENERS}cluster: ${cluster}\n${more}`);
  return path;
}

/** The rule `limited`: one bucket for the whole cluster. */
const BUCKET_RATE = 50;
const BUCKET_BURST = 10;

/** The lane of `sink` on each node delivers this many at once. */
const SINK_CONCURRENCY = 4;
/**
 * What a killed node may deliver again: calls under way, and delivered records whose settlement
 * (XACK) had not reached Redis yet, which on a loaded machine trail the calls by a few times the
 * concurrency.
 */
const IN_FLIGHT_WINDOW = 10 * SINK_CONCURRENCY;

async function readyz(node: Node): Promise<{ code: number; status: string }> {
  const response = await fetch(`${node.admin}/readyz`);
  return { code: response.status, status: ((await response.json()) as { status: string }).status };
}

async function clusterNodes(admin: string): Promise<{ id: string; ready: boolean; self: boolean }[]> {
  const body = (await (await fetch(`${admin}/admin/cluster`)).json()) as { mode: string; nodes: { id: string; ready: boolean; self: boolean }[] };
  expect(body.mode).toBe('cluster');
  return body.nodes;
}

/** A request on a connection of its own (no keep-alive): node:cluster may hand it to any worker. */
function fresh(url: string, method: 'GET' | 'POST', body = '', headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, agent: false, headers }, (response) => {
      let text = '';
      response.on('data', (chunk: Buffer) => { text += chunk.toString(); });
      response.on('end', () => resolve({ status: response.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function logged(node: Node, text: string): number {
  return node.gateway.logs.filter((entry) => entry.msg === text).length;
}

async function wsSubscriber(http: string, key: string): Promise<WsTestClient & { texts: () => string[] }> {
  const ws = await connectWs(http);
  ws.send({ op: 'subscribe', id: 's', key });
  await ws.next((f) => f.op === 'ack' && f.id === 's');
  return Object.assign(ws, { texts: () => ws.frames.filter((f): f is MessageFrame => f.op === 'message').map((f) => String(f.payload)) });
}

describe('three nodes on one Redis', { timeout: 120_000 }, () => {
  let redis: RedisServer;
  let dir: string;
  const nodes: Node[] = [];
  const sockets: WsTestClient[] = [];
  const grpcClients: GatewayClient[] = [];
  const sse: SseSubscriber[] = [];
  let downstream: Downstream;
  /** token → deliveries of it to the downstream */
  const deliveries = new Map<string, number>();

  beforeAll(async () => {
    redis = await startRedis({ appendOnly: true });
    downstream = await startDownstream((request, response) => {
      const token = request.body.toString();
      deliveries.set(token, (deliveries.get(token) ?? 0) + 1);
      // A slow downstream: every node's queue builds up behind it.
      setTimeout(() => response.writeHead(204).end(), 2);
    });
    dir = await mkdtemp(join(tmpdir(), 'junction-cluster-'));
    for (const name of ['a', 'b', 'c']) {
      const nodeDir = join(dir, name);
      await mkdir(nodeDir);
      const config = await writeConfig(nodeDir, `{ redis: "\${REDIS_URL}", nodeId: ${name} }`, `
targets:
  sink: { type: http, url: "${downstream.url}/in", concurrency: ${SINK_CONCURRENCY}, timeout: 5s, retry: { attempts: 5, backoff: 20ms } }
routes:
  - { name: jobs, match: { key: "jobs/#" }, to: [sink] }
  - { name: limited, match: { key: "limited/#" }, to: [{ publish: "limited/out" }], rateLimit: { rate: ${BUCKET_RATE}, per: 1s, burst: ${BUCKET_BURST}, scope: route } }
`);
      const gateway = await startCli(config, { REDIS_URL: redis.url });
      nodes.push({ name, config, gateway, http: `http://127.0.0.1:${gateway.ports.http}`, admin: `http://127.0.0.1:${gateway.ports.admin}` });
    }
  }, 60_000);

  afterAll(async () => {
    await closeClients();
    await Promise.all(sockets.map((s) => s.close()));
    for (const client of grpcClients) client.close();
    for (const s of sse) s.close();
    for (const node of nodes) node.gateway.child.kill('SIGKILL');
    await Promise.all(nodes.map((node) => node.gateway.exited));
    await redis.stop();
    await downstream.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('an MQTT publish on A reaches MQTT, WebSocket, gRPC and SSE subscribers on B and C exactly once, at QoS 0 and 1', async () => {
    const [a, b, c] = nodes as [Node, Node, Node];
    const mqttB = await connectMqtt(`mqtt://127.0.0.1:${b.gateway.ports.mqtt}`);
    const mqttC = await connectMqtt(`mqtt://127.0.0.1:${c.gateway.ports.mqtt}`);
    await mqttB.client.subscribeAsync('fan/#', { qos: 1 });
    await mqttC.client.subscribeAsync('fan/#', { qos: 1 });
    const wsB = await wsSubscriber(b.http, 'fan/#');
    sockets.push(wsB);
    const grpcC = new GatewayClient(`127.0.0.1:${c.gateway.ports.grpc}`);
    grpcClients.push(grpcC);
    const stream = grpcC.subscribe('fan/#');
    const grpcTexts: string[] = [];
    stream.on('data', (delivery: Delivery) => grpcTexts.push(delivery.payload.toString()));
    await subscribed(stream);
    const sseB = await subscribeSse(b.http, 'fan/#');
    sse.push(sseB);

    const publisher = await connectMqtt(`mqtt://127.0.0.1:${a.gateway.ports.mqtt}`);
    await publisher.client.publishAsync('fan/x', 'q0', { qos: 0 });
    await publisher.client.publishAsync('fan/x', 'q1', { qos: 1 });
    await publisher.client.publishAsync('fan/x', 'end', { qos: 1 });
    const everyone = {
      mqttB: () => mqttB.texts(), mqttC: () => mqttC.texts(), wsB: () => wsB.texts(), grpcC: () => grpcTexts,
      sseB: () => sseB.messages.map((m) => m.payload),
    };
    for (const [name, texts] of Object.entries(everyone)) {
      await eventually(() => expect(texts(), name).toContain('end'));
    }
    // What arrived before `end` from the same publisher is all that will: each exactly once.
    for (const [name, texts] of Object.entries(everyone)) expect(texts(), name).toEqual(['q0', 'q1', 'end']);
    expect(mqttB.messages.map((m) => m.qos)).toEqual([0, 1, 1]);
  });

  it('a retained message set on A is seen by a new subscriber on C', async () => {
    const [a, , c] = nodes as [Node, Node, Node];
    const publisher = await connectMqtt(`mqtt://127.0.0.1:${a.gateway.ports.mqtt}`);
    await publisher.client.publishAsync('state/lamp', 'on', { qos: 1, retain: true });
    await eventually(async () => {
      const late = await connectMqtt(`mqtt://127.0.0.1:${c.gateway.ports.mqtt}`);
      try {
        await late.client.subscribeAsync('state/#', { qos: 1 });
        await eventually(() => expect(late.messages).toMatchObject([{ topic: 'state/lamp', retain: true }]), 1000);
        expect(late.texts()).toEqual(['on']);
      } finally {
        await late.client.endAsync(true);
      }
    });
  });

  it('a node started after a retained message was set has it too, and does not queue it again for the sessions that had it', async () => {
    const [a] = nodes as [Node, Node, Node];
    const device = await connectMqtt(`mqtt://127.0.0.1:${a.gateway.ports.mqtt}`, { clientId: 'device-3', clean: false });
    await device.client.subscribeAsync('state/door', { qos: 1 });
    await device.client.endAsync();
    const publisher = await connectMqtt(`mqtt://127.0.0.1:${a.gateway.ports.mqtt}`);
    await publisher.client.publishAsync('state/door', 'closed', { qos: 1, retain: true });
    const nodeDir = join(dir, 'd');
    await mkdir(nodeDir);
    const late = await startCli(await writeConfig(nodeDir, `{ redis: "\${REDIS_URL}", nodeId: d }`), { REDIS_URL: redis.url });
    try {
      const subscriber = await connectMqtt(`mqtt://127.0.0.1:${late.ports.mqtt}`);
      await subscriber.client.subscribeAsync('state/door', { qos: 1 });
      await eventually(() => expect(subscriber.messages).toMatchObject([{ topic: 'state/door', retain: true }]));
      expect(subscriber.texts()).toEqual(['closed']);
      await subscriber.client.endAsync(true);
      // The new node restored the retained message before its listeners opened: stored, not queued again.
      const resumed = await connectMqtt(`mqtt://127.0.0.1:${late.ports.mqtt}`, { clientId: 'device-3', clean: false });
      expect(resumed.sessionPresent).toBe(true);
      await eventually(() => expect(resumed.texts()).toContain('closed'));
      // Whatever else would come has come by the time a message published after it arrives.
      await publisher.client.publishAsync('state/door', 'open', { qos: 1, retain: true });
      await eventually(() => expect(resumed.texts()).toContain('open'));
      expect(resumed.texts()).toEqual(['closed', 'open']);
      await resumed.client.endAsync();
    } finally {
      late.child.kill('SIGTERM');
      await late.exited;
    }
  });

  it('a persistent MQTT session opened on A resumes on B with the QoS 1 messages queued for it meanwhile', async () => {
    const [a, b, c] = nodes as [Node, Node, Node];
    const device = await connectMqtt(`mqtt://127.0.0.1:${a.gateway.ports.mqtt}`, { clientId: 'device-1', clean: false });
    await device.client.subscribeAsync('cmd/device-1', { qos: 1 });
    await device.client.endAsync();
    // A watcher on A: once it has the last command, A's broker has queued all three for the device.
    const watcher = await connectMqtt(`mqtt://127.0.0.1:${a.gateway.ports.mqtt}`);
    await watcher.client.subscribeAsync('cmd/#', { qos: 1 });
    for (const text of ['one', 'two', 'three']) {
      const response = await fetch(`${c.http}/v1/messages/cmd/device-1`, { method: 'POST', body: text, headers: { 'x-qos': '1' } });
      expect(response.status).toBeLessThan(300);
    }
    await eventually(() => expect(watcher.texts()).toEqual(['one', 'two', 'three']));
    const resumed = await connectMqtt(`mqtt://127.0.0.1:${b.gateway.ports.mqtt}`, { clientId: 'device-1', clean: false });
    expect(resumed.sessionPresent).toBe(true);
    await eventually(() => expect(resumed.texts()).toEqual(['one', 'two', 'three']));
    // The session lives on B now: what is published next reaches the device there.
    await fetch(`${a.http}/v1/messages/cmd/device-1`, { method: 'POST', body: 'four', headers: { 'x-qos': '1' } });
    await eventually(() => expect(resumed.texts()).toEqual(['one', 'two', 'three', 'four']));
    await resumed.client.endAsync();
  });

  it('a persistent MQTT session whose node is killed with kill -9 resumes on B with every QoS 1 message queued for it, before and after the kill', async () => {
    const [, b, c] = nodes as [Node, Node, Node];
    const nodeDir = join(dir, 'e');
    await mkdir(nodeDir);
    const doomed = await startCli(await writeConfig(nodeDir, `{ redis: "\${REDIS_URL}", nodeId: e }`), { REDIS_URL: redis.url });
    try {
      const device = await connectMqtt(`mqtt://127.0.0.1:${doomed.ports.mqtt}`, { clientId: 'device-2', clean: false });
      await device.client.subscribeAsync('cmd/device-2', { qos: 1 });
      await device.client.endAsync();
      // A watcher on B: B queues each message for the device before it sends it on to its clients.
      const watcher = await connectMqtt(`mqtt://127.0.0.1:${b.gateway.ports.mqtt}`);
      await watcher.client.subscribeAsync('cmd/device-2', { qos: 1 });
      const before = Array.from({ length: 40 }, (_, i) => `before-${i}`);
      const after = Array.from({ length: 20 }, (_, i) => `after-${i}`);
      for (const text of before) {
        const response = await fetch(`${c.http}/v1/messages/cmd/device-2`, { method: 'POST', body: text, headers: { 'x-qos': '1' } });
        expect(response.status).toBeLessThan(300);
      }
      await eventually(() => expect(watcher.texts()).toHaveLength(before.length));
      doomed.child.kill('SIGKILL');
      await doomed.exited;
      // Published once the session's node is gone: the survivors queue them for it.
      for (const text of after) {
        const response = await fetch(`${c.http}/v1/messages/cmd/device-2`, { method: 'POST', body: text, headers: { 'x-qos': '1' } });
        expect(response.status).toBeLessThan(300);
      }
      await eventually(() => expect(watcher.texts()).toHaveLength(before.length + after.length));
      await watcher.client.endAsync();

      const resumed = await connectMqtt(`mqtt://127.0.0.1:${b.gateway.ports.mqtt}`, { clientId: 'device-2', clean: false });
      expect(resumed.sessionPresent).toBe(true);
      const expected = [...before, ...after];
      await eventually(() => expect(new Set(resumed.texts())).toEqual(new Set(expected)));
      // Nothing was in flight to the device when its node died: nothing comes twice, and in order.
      expect(resumed.texts()).toEqual(expected);
      await resumed.client.endAsync();
    } finally {
      doomed.child.kill('SIGKILL');
      await doomed.exited;
    }
  });

  it('a client id connected on a second node ends its connection on the first', async () => {
    const [a, b] = nodes as [Node, Node, Node];
    const first = await connectMqtt(`mqtt://127.0.0.1:${a.gateway.ports.mqtt}`, { clientId: 'twice' });
    const closed = new Promise<void>((resolve) => first.client.once('close', () => resolve()));
    const second = await connectMqtt(`mqtt://127.0.0.1:${b.gateway.ports.mqtt}`, { clientId: 'twice' });
    await closed;
    expect(second.client.connected).toBe(true);
    await second.client.endAsync();
  });

  it('a request on A is answered by a responder on B, over HTTP and gRPC', async () => {
    const [a, b, c] = nodes as [Node, Node, Node];
    const responder = await connectWs(b.http);
    sockets.push(responder);
    responder.send({ op: 'subscribe', id: 'r', key: 'rpc/#', responder: true });
    await responder.next((f) => f.op === 'ack' && f.id === 'r');
    responder.socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as MessageFrame;
      if (frame.op === 'message' && frame.replyTo) responder.send({ op: 'publish', key: frame.replyTo, correlationId: frame.correlationId, payload: `pong:${String(frame.payload)}` });
    });
    const response = await fetch(`${a.http}/v1/requests/rpc/ping`, { method: 'POST', body: 'x' });
    expect([response.status, await response.text()]).toEqual([200, 'pong:x']);
    const client = new GatewayClient(`127.0.0.1:${c.gateway.ports.grpc}`);
    grpcClients.push(client);
    const reply = await client.request({ key: 'rpc/ping', payload: 'y' });
    expect(reply.payload.toString()).toBe('pong:y');
    // Nobody answers `nothing/…` on any node.
    expect((await fetch(`${a.http}/v1/requests/nothing/here`, { method: 'POST', body: 'z' })).status).toBe(404);
  });

  it('a route bucket of 50/s hammered from the three nodes admits 50/s plus its burst in total, not three times that', async () => {
    const windowMs = 3000;
    let admitted = 0;
    let limited = 0;
    const started = Date.now();
    const hammer = (node: Node) => async () => {
      // Bounded by the window: each round is one request.
      while (Date.now() - started < windowMs) {
        const response = await fetch(`${node.http}/v1/messages/limited/in`, { method: 'POST', body: 'x', headers: { 'x-qos': '0' } });
        await response.arrayBuffer();
        if (response.status === 429) limited++;
        else if (response.status < 300) admitted++;
        else throw new Error(`unexpected ${response.status}`);
      }
    };
    await Promise.all(nodes.flatMap((node) => Array.from({ length: 10 }, hammer(node))));
    const seconds = (Date.now() - started) / 1000;
    expect(limited).toBeGreaterThan(0);
    expect(admitted).toBeLessThanOrEqual(BUCKET_BURST + Math.ceil(BUCKET_RATE * seconds));
    expect(admitted).toBeGreaterThanOrEqual(Math.floor(BUCKET_RATE * (seconds - 1)));
  });

  it('/admin/cluster on any node lists the three, each ready', async () => {
    for (const node of nodes) {
      await eventually(async () => {
        const listed = await clusterNodes(node.admin);
        expect(listed.map((n) => n.id).sort()).toEqual(['a', 'b', 'c']);
        expect(listed.every((n) => n.ready)).toBe(true);
        expect(listed.find((n) => n.self)?.id).toBe(node.name);
      });
    }
  });

  it('a reload on A tells B and C to read their own config files again', async () => {
    const [a, b, c] = nodes as [Node, Node, Node];
    // A tells the nodes it knows from its last heartbeat round.
    await eventually(async () => expect(await clusterNodes(a.admin)).toHaveLength(3));
    // B's and C's files stay as they were: they answer that nothing changed. A's file gains a rule.
    await writeFile(a.config, `${await readFile(a.config, 'utf8')}  - { name: extra, match: { key: "extra/#" }, to: [sink] }\n`);
    // A's own file watcher may have reloaded it first: then this one finds nothing new.
    const response = await fetch(`${a.admin}/admin/reload`, { method: 'POST' });
    expect(['reloaded', 'unchanged']).toContain(((await response.json()) as { status: string }).status);
    for (const node of [b, c]) {
      await eventually(() => expect(node.gateway.logs.filter((e) => e.trigger === 'cluster (node a)').map((e) => e.msg)).toEqual(['reload: nothing changed']));
    }
  });

  it('Redis down: not ready, QoS 1 refused with overloaded, QoS 0 still delivered on the node; all back by itself, one log line each way', async () => {
    const [a] = nodes as [Node, Node, Node];
    const local = await wsSubscriber(a.http, 'local/#');
    sockets.push(local);
    await redis.kill();
    await eventually(async () => expect(await readyz(a)).toEqual({ code: 503, status: 'redis_unreachable' }));
    const refused = await fetch(`${a.http}/v1/messages/local/x`, { method: 'POST', body: 'q1', headers: { 'x-qos': '1' } });
    expect(refused.status).toBe(503);
    expect(await refused.text()).toMatch(/overloaded/);
    const accepted = await fetch(`${a.http}/v1/messages/local/x`, { method: 'POST', body: 'q0', headers: { 'x-qos': '0' } });
    expect(accepted.status).toBeLessThan(300);
    await eventually(() => expect(local.texts()).toEqual(['q0']));

    await redis.start();
    for (const node of nodes) await eventually(async () => expect(await readyz(node)).toEqual({ code: 200, status: 'ready' }), 15_000);
    const again = await fetch(`${a.http}/v1/messages/local/x`, { method: 'POST', body: 'back', headers: { 'x-qos': '1' } });
    expect(again.status).toBeLessThan(300);
    await eventually(() => expect(local.texts()).toEqual(['q0', 'back']));
    // Redis came back empty: the heartbeats fill it again.
    await eventually(async () => expect((await clusterNodes(a.admin)).map((n) => n.id).sort()).toEqual(['a', 'b', 'c']));
    for (const node of nodes) {
      expect(logged(node, 'Redis unreachable: not ready, QoS 1 refused with overloaded, QoS 0 delivered on this node only')).toBe(1);
      expect(logged(node, 'Redis reachable again: ready, QoS 1 accepted')).toBe(1);
    }
  });

  // The figure: about 20 s on a quiet 2-core machine, 70 s at load 15 (CLUSTER_KILL_MESSAGES changes it).
  const killMessages = Number(process.env.CLUSTER_KILL_MESSAGES ?? 10_000);
  it(`kill -9 of node C in the middle of ${killMessages} QoS 1 messages to a slow downstream: the others deliver every acknowledged one, duplicates bounded by what C had in flight`, async () => {
    const [a, b, c] = nodes as [Node, Node, Node];
    const total = killMessages;
    const acked = new Set<string>();
    let next = 0;
    let killed = false;
    const publisher = (node: Node) => async () => {
      // Each round takes the next token, so this ends within `total` rounds; a killed node's publisher stops.
      while (next < total) {
        const token = `t${next++}`;
        try {
          const response = await fetch(`${node.http}/v1/messages/jobs/x`, { method: 'POST', body: token, headers: { 'x-qos': '1' } });
          await response.arrayBuffer();
          if (response.status < 300) acked.add(token);
          else next--;
        } catch {
          if (node === c && killed) return;
          throw new Error(`publish to ${node.name} failed`);
        }
        if (!killed && acked.size >= total * 0.4) {
          killed = true;
          c.gateway.child.kill('SIGKILL');
        }
      }
    };
    await Promise.all([a, b, c].flatMap((node) => Array.from({ length: 8 }, publisher(node))));
    await c.gateway.exited;
    // C's records wait for the takeover: its liveness key expires, then a sweep of A or B claims them.
    await eventually(() => {
      const missing = [...acked].filter((token) => !deliveries.has(token));
      expect(missing.slice(0, 10), `${missing.length} acknowledged tokens not delivered yet`).toEqual([]);
    }, 40_000);
    const duplicates = [...deliveries.values()].reduce((sum, n) => sum + n - 1, 0);
    expect(duplicates).toBeLessThanOrEqual(IN_FLIGHT_WINDOW);
    expect(acked.size).toBeGreaterThan(total * 0.9);
    await eventually(async () => expect((await clusterNodes(a.admin)).map((n) => n.id).sort()).toEqual(['a', 'b']), 15_000);
    const subscriber = await wsSubscriber(b.http, 'after/#');
    sockets.push(subscriber);
    await fetch(`${a.http}/v1/messages/after/kill`, { method: 'POST', body: 'still', headers: { 'x-qos': '1' } });
    await eventually(() => expect(subscriber.texts()).toEqual(['still']));
  });
});

describe('junction start --workers', { timeout: 60_000 }, () => {
  let redis: RedisServer;
  let dir: string;

  beforeAll(async () => {
    redis = await startRedis();
    dir = await mkdtemp(join(tmpdir(), 'junction-workers-'));
  });

  afterAll(async () => {
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('is refused above 1 without cluster.redis, naming it', async () => {
    const config = join(dir, 'embedded.yaml');
    await writeFile(config, LISTENERS);
    const result = await runCli(['start', '-c', config, '--workers', '2']);
    expect(result.code).toBe(1);
    expect(result.stderr).toMatch(/--workers 2: several workers need cluster\.redis/);
  });

  it('runs two workers on the same listeners, as two nodes of one gateway; a killed worker comes back', async () => {
    const config = await writeConfig(dir, `{ redis: "\${REDIS_URL}", keyPrefix: "w:" }`);
    const running = await startCli(config, { REDIS_URL: redis.url }, { args: ['--workers', '2'], readyLines: 2 });
    try {
      const httpPorts = new Set(running.logs.filter((e) => e.msg === 'listener up' && e.listener === 'http').map((e) => String(e.address)));
      expect(httpPorts.size).toBe(1);
      const http = `http://127.0.0.1:${running.ports.http}`;
      const admin = `http://127.0.0.1:${running.ports.admin}`;
      await eventually(async () => expect((await clusterNodes(admin)).map((n) => n.id.replace(/.*-/, '')).sort()).toEqual(['1', '2']));
      const subscriber = await wsSubscriber(http, 'work/#');
      try {
        // A connection each: node:cluster spreads them over both workers.
        const sent = Array.from({ length: 20 }, (_, i) => `m${i}`);
        for (const text of sent) {
          expect((await fresh(`${http}/v1/messages/work/x`, 'POST', text, { 'x-qos': '1' })).status).toBeLessThan(300);
        }
        await eventually(() => expect(subscriber.texts().sort()).toEqual([...sent].sort()));
        // Ten connections to the admin listener: both workers answer some.
        const served = new Set<string>();
        for (let i = 0; i < 10; i++) {
          const { nodes } = JSON.parse((await fresh(`${admin}/admin/cluster`, 'GET')).text) as { nodes: { id: string; self: boolean }[] };
          served.add(nodes.find((n) => n.self)!.id);
        }
        expect(served.size).toBe(2);
      } finally {
        await subscriber.close();
      }

      const [victim] = (await (await fetch(`${admin}/admin/cluster`)).json() as { nodes: { pid: number }[] }).nodes;
      process.kill(victim!.pid, 'SIGKILL');
      await eventually(() => expect(running.logs.filter((e) => e.msg === 'gateway ready')).toHaveLength(3), 20_000);
      running.child.kill('SIGTERM');
      expect(await running.exited).toBe(0);
    } finally {
      running.child.kill('SIGKILL');
    }
  });
});
