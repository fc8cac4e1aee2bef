import type { Metadata } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import type { MessageFrame } from '../../src/client/protocol.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { GatewayClient, type Delivery } from '../helpers/grpc.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { sample, scrape } from '../helpers/prometheus.js';
import { subscribeSse } from '../helpers/sse.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

/** What one member handled: the ids it acknowledged, in order. */
interface Worker {
  name: string;
  acked: string[];
  /** stops acknowledging (and, for WebSocket, goes away) */
  stop(): Promise<void>;
}

interface GroupStatsJson {
  groups: { name: string; pattern: string; members: number; queued: number; inFlight: number; accepted: number; delivered: number; redelivered: number; deadLettered: number }[];
}

describe('groups of competing consumers across protocols', () => {
  let gw: TestGateway | undefined;
  const closers: (() => void | Promise<void>)[] = [];

  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await closeClients();
    await gw?.stop();
    gw = undefined;
  });

  async function mqttWorker(gateway: TestGateway, group: string): Promise<Worker> {
    const { client, messages } = await connectMqtt(gateway.mqtt, { clientId: `worker-mqtt-${group}` });
    await client.subscribeAsync(`$share/${group}/jobs/#`, { qos: 1 });
    // mqtt.js acknowledges each QoS 1 PUBLISH as it takes it.
    return {
      name: 'mqtt',
      get acked() { return messages.map((m) => m.payload.toString()); },
      stop: async () => { client.stream.destroy(); },
    };
  }

  async function wsWorker(gateway: TestGateway, group: string): Promise<Worker & { ws: WsTestClient; acking: boolean }> {
    const ws = await connectWs(gateway.http);
    closers.push(() => ws.close());
    const worker = {
      name: 'ws', ws, acking: true, acked: [] as string[],
      stop: async () => { ws.socket.terminate(); },
    };
    ws.socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as MessageFrame;
      if (frame.op !== 'message' || !worker.acking) return;
      ws.send({ op: 'ack', sub: frame.sub, id: frame.id });
      worker.acked.push(String(frame.payload));
    });
    ws.send({ op: 'subscribe', id: 'w', key: 'jobs/#', group });
    await ws.next((f) => f.op === 'ack' && f.id === 'w');
    return worker;
  }

  async function grpcWorker(gateway: TestGateway, group: string): Promise<Worker> {
    const client = new GatewayClient(gateway.grpc);
    closers.push(() => client.close());
    const stream = client.subscribe('jobs/#', { group });
    closers.push(() => stream.cancel());
    stream.on('error', () => undefined);
    const headers = await new Promise<Metadata>((resolve, reject) => {
      stream.once('metadata', resolve);
      stream.once('error', reject);
    });
    const subscription = String(headers.get('junction-subscription')[0]);
    const acked: string[] = [];
    stream.on('data', (delivery: Delivery) => {
      void client.ack(subscription, [delivery.id]).then(() => acked.push(Buffer.from(delivery.payload).toString()));
    });
    return { name: 'grpc', acked, stop: async () => { stream.cancel(); } };
  }

  /** Publishes over HTTP, one request at a time per key, `x-qos: 1`: each is in the group once acknowledged. */
  async function publish(gateway: TestGateway, texts: string[], headers: Record<string, string> = {}): Promise<void> {
    for (const text of texts) {
      const response = await fetch(`${gateway.http}/v1/messages/jobs/${text}`, { method: 'POST', body: text, headers: { 'x-qos': '1', ...headers } });
      expect(response.status).toBe(202);
    }
  }

  /** Publishes many over one WebSocket, qos 1, pipelined; resolves once every one is acknowledged. */
  async function publishMany(gateway: TestGateway, texts: string[]): Promise<void> {
    const ws = await connectWs(gateway.http);
    for (const text of texts) ws.send({ op: 'publish', id: text, key: `jobs/${text}`, payload: text, qos: 1 });
    await eventually(() => expect(ws.frames.filter((f) => f.op === 'ack')).toHaveLength(texts.length), 30_000);
    await ws.close();
  }

  const texts = (n: number, from = 0) => Array.from({ length: n }, (_, i) => `m${from + i}`);

  it('gives each of 3,000 QoS 1 messages to exactly one of an MQTT, a WebSocket and a gRPC member, evenly', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['mqtt', 'grpc'] });
    const workers = [await mqttWorker(gw, 'g'), await wsWorker(gw, 'g'), await grpcWorker(gw, 'g')];
    const sent = texts(3000);
    // In batches of 45 that the members finish before the next: no member is ever full or backed
    // up, whatever the machine's speed, so the split is the round robin's alone. Skipping full and
    // slow members has a test of its own below.
    for (let from = 0; from < sent.length; from += 45) {
      await publishMany(gw, sent.slice(from, from + 45));
      await eventually(() => expect(workers.reduce((n, w) => n + w.acked.length, 0)).toBe(Math.min(from + 45, sent.length)), 10_000);
    }
    const all = workers.flatMap((w) => w.acked);
    expect(new Set(all).size).toBe(3000);
    expect(new Set(all)).toEqual(new Set(sent));
    for (const worker of workers) expect(Math.abs(worker.acked.length - 1000), worker.name).toBeLessThanOrEqual(100);
    // The last acknowledgements may still be on their way to the gateway.
    await eventually(async () => {
      const stats = await (await fetch(`${gw!.admin}/admin/stats`)).json() as GroupStatsJson;
      expect(stats.groups).toEqual([expect.objectContaining({ name: 'g', pattern: 'jobs/#', members: 3, accepted: 3000, delivered: 3000, queued: 0, inFlight: 0, deadLettered: 0 })]);
    }, 10_000);
    const metrics = await scrape(gw.admin);
    expect(sample(metrics, 'junction_group_delivered_total', { group: 'g' })).toBe(3000);
    expect(sample(metrics, 'junction_group_members', { group: 'g' })).toBe(3);
  }, 60_000);

  it('hands what a member that dies mid-stream had not acknowledged to the others: none lost', async () => {
    gw = await startGateway('defaultRoute: publish\ngroups: { ackTimeout: 60s }', undefined, { listeners: ['mqtt', 'grpc'] });
    const ws = await wsWorker(gw, 'g');
    const others = [await mqttWorker(gw, 'g'), await grpcWorker(gw, 'g')];
    const sending = publishMany(gw, texts(3000));
    // Dies having received some, and with some received but never acknowledged.
    await eventually(() => expect(ws.acked.length).toBeGreaterThan(200));
    ws.acking = false;
    await eventually(() => expect(ws.ws.frames.filter((f) => f.op === 'message').length).toBeGreaterThan(ws.acked.length));
    await ws.stop();
    await sending;
    const survivors = () => others.flatMap((w) => w.acked);
    await eventually(() => expect(new Set([...ws.acked, ...survivors()]).size).toBe(3000), 30_000);
    // A live member gets each message at most once; only what the dead one took can come twice.
    expect(new Set(survivors()).size).toBe(survivors().length);
    await eventually(async () => {
      const stats = await (await fetch(`${gw!.admin}/admin/stats`)).json() as GroupStatsJson;
      expect(stats.groups[0]!.redelivered).toBeGreaterThan(0);
      expect(stats.groups[0]).toMatchObject({ members: 2, queued: 0, inFlight: 0, deadLettered: 0 });
    }, 10_000);
  }, 60_000);

  it('does not let a member that stops acknowledging hold the others back', async () => {
    gw = await startGateway('defaultRoute: publish\ngroups: { maxInflight: 16, ackTimeout: 60s }', undefined, { listeners: ['grpc'] });
    const stuck = await wsWorker(gw, 'g');
    stuck.acking = false;
    const fine = await grpcWorker(gw, 'g');
    await publishMany(gw, texts(500));
    await eventually(() => expect(fine.acked.length).toBe(500 - 16), 20_000);
    expect(stuck.ws.frames.filter((f) => f.op === 'message')).toHaveLength(16);
  });

  it('queues while the group has no member, sheds the lowest priority to the dead-letter store when full, and serves late members', async () => {
    gw = await startGateway('defaultRoute: publish\ngroups: { maxQueue: 5 }', undefined, { listeners: ['grpc'] });
    const first = await wsWorker(gw, 'g');
    await first.ws.close();
    for (let priority = 0; priority < 10; priority++) await publish(gw, [`p${priority}`], { 'x-priority': String(priority) });
    await eventually(async () => {
      const listing = await (await fetch(`${gw!.admin}/admin/deadletter?target=group:g`)).json() as { count: number; records: { reason: string; message: { key: string } }[] };
      expect(listing.records.map((r) => [r.message.key, r.reason]).sort()).toEqual([0, 1, 2, 3, 4].map((p) => [`jobs/p${p}`, 'shed']));
    });
    const late = await grpcWorker(gw, 'g');
    await eventually(() => expect(late.acked).toEqual(['p9', 'p8', 'p7', 'p6', 'p5']));
  });

  it('does not let a client that opens and leaves groups under made-up names lock the others out', async () => {
    gw = await startGateway('defaultRoute: publish\ngroups: { maxGroups: 3 }', undefined, { listeners: ['mqtt'] });
    const ws = await connectWs(gw.http);
    closers.push(() => ws.close());
    for (let i = 0; i < 6; i++) {
      ws.send({ op: 'subscribe', id: `s${i}`, key: 'jobs/#', group: `junk${i}` });
      await ws.next((f) => f.op === 'ack' && f.id === `s${i}`);
      ws.send({ op: 'unsubscribe', id: `u${i}`, key: 'jobs/#', group: `junk${i}` });
      await ws.next((f) => f.op === 'ack' && f.id === `u${i}`);
    }
    const worker = await mqttWorker(gw, 'real');
    await publish(gw, ['after']);
    await eventually(() => expect(worker.acked).toEqual(['after']));
    const metrics = await scrape(gw.admin);
    expect(sample(metrics, 'junction_groups_evicted_total')).toBe(4);
  });

  it('takes SSE members too, and keeps plain subscribers receiving everything', async () => {
    gw = await startGateway('defaultRoute: publish');
    const sseA = await subscribeSse(gw.http, 'jobs/#', '?group=s');
    const sseB = await subscribeSse(gw.http, 'jobs/#', '?group=s');
    const plain = await subscribeSse(gw.http, 'jobs/#');
    closers.push(() => sseA.close(), () => sseB.close(), () => plain.close());
    await publish(gw, texts(20));
    await eventually(() => expect(plain.messages).toHaveLength(20));
    await eventually(() => expect(sseA.messages.length + sseB.messages.length).toBe(20));
    expect(sseA.messages.length).toBe(10);
    expect(new Set([...sseA.messages, ...sseB.messages].map((m) => m.payload)).size).toBe(20);
  });

  it('refuses a bad group name in the protocol\'s own terms', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['mqtt'] });
    const ws = await connectWs(gw.http);
    closers.push(() => ws.close());
    ws.send({ op: 'subscribe', id: 1, key: 'jobs/#', group: 'a/b' });
    expect(await ws.next((f) => f.op === 'error')).toMatchObject({ code: 'bad_request', field: 'group' });
    const sse = await fetch(`${gw.http}/v1/subscribe/jobs/%23?group=a%2Bb`);
    expect(sse.status).toBe(400);
    const { client } = await connectMqtt(gw.mqtt);
    await expect(client.subscribeAsync('$share/g', { qos: 1 })).rejects.toThrow();
  });
});
