import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { GatewayClient } from '../helpers/grpc.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { wsUrl } from '../helpers/ws.js';

interface TargetStats { accepted: number; delivered: number; deadLettered: number; queued: number; inFlight: number; unsettled: number; balanced: boolean }

const PER_PROTOCOL = 5000;

/**
 * 20,000 QoS 1 messages, 5,000 over each protocol, while the downstream fails 30 % of calls at
 * random and goes down for a while. Every acknowledged message must end delivered or
 * dead-lettered (none missing, none dead-lettered twice), the per-target accounting must balance
 * at every sample, and a replay must then deliver the dead-lettered ones.
 */
describe('fault injection across all four protocols', () => {
  let gw: TestGateway | undefined;
  let downstream: Downstream | undefined;

  afterEach(async () => {
    await closeClients();
    await gw?.stop();
    await downstream?.close();
  });

  it('accounts for every acknowledged message through failures and an outage, then replays them', async () => {
    downstream = await startDownstream();
    let failing = true;
    downstream.handler = (_req, res) => (failing && Math.random() < 0.3 ? res.writeHead(500).end() : res.writeHead(204).end());
    gw = await startGateway(`
breakers:
  b: { volumeThreshold: 50, errorThresholdPercentage: 90, resetTimeout: 300ms, halfOpenProbes: 2 }
targets:
  ingest: { type: http, url: "${downstream.url}/in", breaker: b, concurrency: 16, queue: { maxSize: 100000 }, retry: { attempts: 2, backoff: 5ms }, timeout: 1s }
routes:
  - { name: load, match: { key: "load/#" }, to: [ingest], fallback: [deadletter] }
`, undefined, { listeners: ['mqtt', 'grpc'] });
    const acknowledged = new Set<string>();
    let total = 0;
    const onAck = (payload: string) => {
      acknowledged.add(payload);
      total++;
      if (total === 6000) void downstream!.pause();
      if (total === 10000) void downstream!.resume();
    };

    const http = async () => {
      for (let i = 0; i < PER_PROTOCOL; i += 8) {
        await Promise.all(Array.from({ length: Math.min(8, PER_PROTOCOL - i) }, async (_, j) => {
          const payload = `http-${i + j}`;
          const response = await fetch(`${gw!.http}/v1/messages/load/http`, { method: 'POST', body: payload, headers: { 'x-qos': '1' } });
          expect(response.status).toBe(202);
          onAck(payload);
        }));
      }
    };
    const mqtt = async () => {
      const { client } = await connectMqtt(gw!.mqtt);
      for (let i = 0; i < PER_PROTOCOL; i += 32) {
        await Promise.all(Array.from({ length: Math.min(32, PER_PROTOCOL - i) }, async (_, j) => {
          const payload = `mqtt-${i + j}`;
          await client.publishAsync('load/mqtt', payload, { qos: 1 });
          onAck(payload);
        }));
      }
    };
    const ws = async () => {
      const socket = new WebSocket(wsUrl(gw!.http));
      await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject); });
      const pending = new Map<number, { payload: string; done: () => void; fail: (e: Error) => void }>();
      socket.on('message', (data: Buffer) => {
        const frame = JSON.parse(data.toString()) as { op: string; id: number; code?: string };
        const waiting = pending.get(frame.id);
        if (!waiting) return;
        pending.delete(frame.id);
        if (frame.op === 'ack') {
          onAck(waiting.payload);
          waiting.done();
        } else waiting.fail(new Error(`ws ${frame.op} ${frame.code}`));
      });
      for (let i = 0; i < PER_PROTOCOL; i += 32) {
        await Promise.all(Array.from({ length: Math.min(32, PER_PROTOCOL - i) }, (_, j) => new Promise<void>((done, fail) => {
          const id = i + j + 1;
          const payload = `ws-${i + j}`;
          pending.set(id, { payload, done, fail });
          socket.send(JSON.stringify({ op: 'publish', id, key: 'load/ws', payload, qos: 1 }));
        })));
      }
      socket.close();
    };
    const grpc = async () => {
      const client = new GatewayClient(gw!.grpc);
      for (let i = 0; i < PER_PROTOCOL; i += 32) {
        await Promise.all(Array.from({ length: Math.min(32, PER_PROTOCOL - i) }, async (_, j) => {
          const payload = `grpc-${i + j}`;
          const ack = await client.publish({ key: 'load/grpc', payload: Buffer.from(payload), qos: 1 });
          expect(ack.error).toBeNull();
          onAck(payload);
        }));
      }
      client.close();
    };

    let samples = 0;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        const { targets } = (await (await fetch(`${gw!.admin}/admin/stats`)).json()) as { targets: Record<string, TargetStats> };
        expect(targets.ingest!.balanced, JSON.stringify(targets.ingest)).toBe(true);
        samples++;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    await Promise.all([http(), mqtt(), ws(), grpc()]);
    const lane = gw.gateway.lanes().get('ingest')!;
    await lane.idle();
    sampling = false;
    await sampler;
    expect(samples).toBeGreaterThan(5);
    expect(acknowledged.size).toBe(4 * PER_PROTOCOL);

    const stats = lane.stats;
    expect(stats).toMatchObject({ accepted: 4 * PER_PROTOCOL, queued: 0, inFlight: 0, unsettled: 0 });
    // Every record, read in process: /admin/deadletter lists at most 10,000, and a run on a busy
    // machine (more timeouts, the breaker open longer) dead-letters more than that.
    const dead = (await gw.gateway.archive.list({}, Infinity)).map((r) => Buffer.from(r.message.payload, 'base64').toString());
    const deadSet = new Set(dead);
    expect(deadSet.size).toBe(dead.length);
    expect(stats.deadLettered).toBe(dead.length);
    expect(dead.length).toBeGreaterThan(0);
    const delivered = new Set(downstream.received.map((r) => r.body.toString()));
    for (const payload of acknowledged) expect(delivered.has(payload) || deadSet.has(payload), payload).toBe(true);

    failing = false;
    lane.breaker!.force(undefined);
    // The admin API replays at most 10,000 records a call: page until nothing is left.
    let replayed = 0;
    for (let page = 0; page < 5 && replayed < dead.length; page++) {
      const replay = (await (await fetch(`${gw.admin}/admin/deadletter/replay`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ limit: 10000 }),
      })).json()) as { replayed: number; failed: number };
      expect(replay.failed).toBe(0);
      replayed += replay.replayed;
    }
    expect(replayed).toBe(dead.length);
    await lane.idle();
    const after = new Set(downstream.received.map((r) => r.body.toString()));
    for (const payload of acknowledged) expect(after.has(payload), payload).toBe(true);
  }, 180_000);
});
