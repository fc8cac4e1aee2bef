import { afterEach, describe, expect, it, vi } from 'vitest';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { adapterCounts, startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { sample, scrape } from '../helpers/prometheus.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

/**
 * Runs `publish` with the clock the gateway reads (Date: it runs in this process) held a second
 * back, then puts the clock right: a ttl of 100 ms cannot run out before the message is routed,
 * however slowly the machine gets there (it would be dropped at ingress, counted elsewhere),
 * and has run out once `publish` returns.
 */
async function publishedInThePast(publish: () => Promise<void>): Promise<void> {
  vi.useFakeTimers({ toFake: ['Date'], now: Date.now() - 1000 });
  try {
    await publish();
  } finally {
    vi.useRealTimers();
  }
}

describe('message expiry in every queue', () => {
  let gw: TestGateway | undefined;
  let downstream: Downstream | undefined;
  const sockets: WsTestClient[] = [];

  afterEach(async () => {
    await Promise.all(sockets.splice(0).map((s) => s.close()));
    await closeClients();
    await gw?.stop();
    await downstream?.close();
    gw = undefined;
    downstream = undefined;
  });

  async function publisher(gateway: TestGateway): Promise<WsTestClient> {
    const ws = await connectWs(gateway.http);
    sockets.push(ws);
    return ws;
  }

  /**
   * Starts a gateway whose target `slow` (one call at a time) is stuck on the first message,
   * sends what `queue` publishes behind it, then, their expiry past, lets the downstream answer
   * everything.
   */
  async function behindAStuckCall(routes: string, first: string, queue: (ws: WsTestClient) => Promise<void>): Promise<TestGateway> {
    const held: (() => void)[] = [];
    downstream = await startDownstream((_req, res) => held.push(() => res.writeHead(204).end()));
    gw = await startGateway(`
targets:
  slow: { type: http, url: "${downstream.url}/in", concurrency: 1, timeout: 30s }
routes:
${routes}
`);
    const ws = await publisher(gw);
    ws.send({ op: 'publish', id: 0, key: first, payload: 'first', qos: 1 });
    await eventually(() => expect(held).toHaveLength(1));
    await publishedInThePast(() => queue(ws));
    downstream.handler = (_req, res) => res.writeHead(204).end();
    held[0]!();
    return gw;
  }

  it('never delivers to a downstream what expired while it waited behind a stuck call, and counts it', async () => {
    const gateway = await behindAStuckCall('  - { name: r, match: { key: "jobs/#" }, to: [slow] }', 'jobs/first', async (ws) => {
      ws.send({ op: 'publish', id: 1, key: 'jobs/short', payload: 'short', qos: 1, ttl: 100 });
      ws.send({ op: 'publish', id: 2, key: 'jobs/long', payload: 'long', qos: 1 });
      await ws.next((f) => f.op === 'ack' && f.id === 2);
    });
    await eventually(() => expect(downstream!.received.map((r) => r.body.toString())).toEqual(['first', 'long']), 10_000);
    await eventually(async () => expect(sample(await scrape(gateway.admin), 'junction_target_expired_total', { target: 'slow' })).toBe(1));
  });

  it('dead-letters with reason expired what expired in a target queue when the rule says expired: deadletter', async () => {
    const routes = `  - { name: kept, match: { key: "jobs/kept/#" }, expired: deadletter, to: [slow] }
  - { name: dropped, match: { key: "jobs/dropped/#" }, to: [slow] }`;
    const gateway = await behindAStuckCall(routes, 'jobs/kept/first', async (ws) => {
      ws.send({ op: 'publish', id: 1, key: 'jobs/kept/short', payload: 'kept-short', qos: 1, ttl: 100 });
      ws.send({ op: 'publish', id: 2, key: 'jobs/dropped/short', payload: 'dropped-short', qos: 1, ttl: 100 });
      ws.send({ op: 'publish', id: 3, key: 'jobs/kept/long', payload: 'long', qos: 1 });
      await ws.next((f) => f.op === 'ack' && f.id === 3);
    });
    await eventually(() => expect(downstream!.received.map((r) => r.body.toString())).toEqual(['first', 'long']), 10_000);
    const listed = (await (await fetch(`${gateway.admin}/admin/deadletter?reason=expired`)).json()) as { records: { target: string; reason: string; message: { key: string } }[] };
    expect(listed.records.map((r) => [r.message.key, r.target, r.reason])).toEqual([['jobs/kept/short', 'slow', 'expired']]);
    const metrics = await scrape(gateway.admin);
    expect(sample(metrics, 'junction_dead_lettered_total', { target: 'slow', reason: 'expired' })).toBe(1);
    expect(sample(metrics, 'junction_target_expired_total', { target: 'slow' })).toBe(1);
    const stats = (await (await fetch(`${gateway.admin}/admin/stats`)).json()) as { targets: Record<string, { expired: number; deadLettered: number; delivered: number }> };
    expect(stats.targets.slow).toMatchObject({ delivered: 2, expired: 1, deadLettered: 1 });
  });

  it('never hands a persistent MQTT session what expired while it was offline, and counts it', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['mqtt'] });
    const first = await connectMqtt(gw.mqtt, { clientId: 'offline-1', clean: false });
    await first.client.subscribeAsync('alerts/#', { qos: 1 });
    await first.client.endAsync();
    const ws = await publisher(gw);
    await publishedInThePast(async () => {
      ws.send({ op: 'publish', id: 1, key: 'alerts/a', payload: 'stale', qos: 1, ttl: 100 });
      ws.send({ op: 'publish', id: 2, key: 'alerts/b', payload: 'fresh', qos: 1 });
      await ws.next((f) => f.op === 'ack' && f.id === 2);
    });
    const back = await connectMqtt(gw.mqtt, { clientId: 'offline-1', clean: false });
    expect(back.sessionPresent).toBe(true);
    await eventually(() => expect(back.texts()).toEqual(['fresh']));
    expect(adapterCounts(gw.gateway, 'mqtt', ['expired']).expired).toBe(1);
  });

  it('drops what expires while it waits for a slow WebSocket subscriber, and counts it', async () => {
    gw = await startGateway('defaultRoute: publish\nlimits: { maxPayloadSize: 1mb }\nwebsocket: { maxOutboundBuffer: 64mb }');
    const reader = await publisher(gw);
    reader.send({ op: 'subscribe', id: 's', key: 'feed/#' });
    await reader.next((f) => f.op === 'ack');
    reader.socket.pause();
    const ws = await publisher(gw);
    const big = 'x'.repeat(512 * 1024);
    // More than loopback socket buffers take (a few MB), so the paused reader backs up and later
    // deliveries wait in its queue.
    for (let i = 0; i < 32; i++) ws.send({ op: 'publish', key: `feed/fill${i}`, payload: big });
    await publishedInThePast(async () => {
      ws.send({ op: 'publish', id: 'e', key: 'feed/expiring', payload: 'gone', qos: 1, ttl: 100 });
      await ws.next((f) => f.op === 'ack' && f.id === 'e');
    });
    reader.socket.resume();
    await eventually(() => expect(reader.frames.filter((f) => f.op === 'message')).toHaveLength(32), 10_000);
    expect(reader.frames.some((f) => f.op === 'message' && f.key === 'feed/expiring')).toBe(false);
    expect(adapterCounts(gw.gateway, 'ws', ['expired']).expired).toBe(1);
  });
});
