import { afterEach, describe, expect, it } from 'vitest';
import type { MessageFrame } from '../../src/client/protocol.js';
import { eventually } from '../helpers/eventually.js';
import { adapterCounts, startGateway, type TestGateway } from '../helpers/gateway.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

/** The WebSocket adapter's counters and levels now (docs/websocket.md). */
function wsStats(gw: TestGateway) {
  return adapterCounts(gw.gateway, 'ws', ['shed', 'disconnected', 'peakOutboundBytes']);
}

const MB = 1024 * 1024;

/**
 * Publishes `count` frames from `make(i)`, a batch at a time: each batch ends with a qos 1
 * publish to an unsubscribed key whose ack paces the publisher, so what this process buffers
 * on the publishing side stays small and the gateway's memory is what is measured.
 */
async function publishPaced(publisher: WsTestClient, count: number, make: (i: number) => object, batch = 16): Promise<void> {
  for (let i = 0; i < count; i += batch) {
    for (let j = i; j < Math.min(count, i + batch); j++) publisher.send(make(j));
    publisher.send({ op: 'publish', id: `sync-${i}`, key: 'sync', payload: '', qos: 1 });
    await publisher.next((f) => f.op === 'ack' && f.id === `sync-${i}`, 20_000);
  }
}

describe('WebSocket backpressure', () => {
  let gw: TestGateway | undefined;
  const clients: WsTestClient[] = [];

  afterEach(async () => {
    for (const c of clients.splice(0)) c.socket.terminate();
    await gw?.stop();
    gw = undefined;
  });

  async function client(): Promise<WsTestClient> {
    const c = await connectWs(gw!.http);
    clients.push(c);
    return c;
  }

  async function slowSubscriber(key: string): Promise<WsTestClient> {
    const sub = await client();
    sub.send({ op: 'subscribe', id: 's', key });
    await sub.next((f) => f.op === 'ack');
    // It stops reading: TCP fills up, then the gateway's buffers for it.
    sub.socket.pause();
    return sub;
  }

  it('drops a slow consumer\'s lowest-priority qos 0 messages first, and counts them', async () => {
    gw = await startGateway('defaultRoute: publish\nwebsocket: { maxOutboundBuffer: 1mb, drainTimeout: 1m }');
    const sub = await slowSubscriber('feed/#');
    const publisher = await client();
    const payload = 'x'.repeat(8 * 1024);
    // 3,000 priority 0 messages (24 MB: more than loopback TCP and the 1 MB buffer hold) with
    // 100 priority 9 ones among them (800 kB: they fit).
    const total = 3100;
    const isHigh = (i: number) => i % 31 === 30;
    await publishPaced(publisher, total, (i) => ({ op: 'publish', key: `feed/${i}`, payload, priority: isHigh(i) ? 9 : 0 }));
    const { shed } = wsStats(gw);
    expect(shed).toBeGreaterThan(0);

    sub.socket.resume();
    const received = () => sub.frames.filter((f): f is MessageFrame => f.op === 'message');
    await eventually(() => expect(received().length + wsStats(gw!).shed).toBe(total), 20_000);
    const high = received().filter((m) => m.priority === 9).length;
    const low = received().filter((m) => m.priority === 0).length;
    expect(high).toBe(100);
    expect(low).toBe(3000 - wsStats(gw).shed);
  });

  it('keeps memory bounded while 50 MB are published at a client that never reads, then closes it with 1013', async () => {
    gw = await startGateway('defaultRoute: publish\nlimits: { maxPayloadSize: 128kb }\nwebsocket: { maxOutboundBuffer: 1mb, drainTimeout: 1m }');
    const sub = await slowSubscriber('firehose');
    const publisher = await client();
    const payload = 'y'.repeat(64 * 1024);
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 20);
    try {
      // 50 MB of qos 0: the gateway may drop these for a slow consumer, so it does.
      await publishPaced(publisher, 800, () => ({ op: 'publish', key: 'firehose', payload }));
      const stats = wsStats(gw);
      expect(stats.shed).toBeGreaterThan(0);
      expect(stats.disconnected).toBe(0);
      // Then qos 1, which may not be dropped: once the buffer holds nothing droppable, the consumer is closed.
      let i = 0;
      await eventually(async () => {
        await publishPaced(publisher, 4, () => ({ op: 'publish', id: `q${i++}`, key: 'firehose', payload, qos: 1 }), 4);
        expect(wsStats(gw!).disconnected).toBe(1);
      }, 20_000, 0);
    } finally {
      clearInterval(sampler);
    }
    // What the gateway buffered for the consumer is bounded by maxOutboundBuffer: the growth
    // here is garbage not yet collected, far below the 50 MB an unbounded buffer would hold.
    expect(peak - before).toBeLessThan(45 * MB);
    expect(wsStats(gw).peakOutboundBytes).toBeLessThanOrEqual(1 * MB + 128 * 1024);

    sub.socket.resume();
    expect(await sub.closed).toMatchObject({ code: 1013, reason: 'slow consumer: outbound buffer full (websocket.maxOutboundBuffer)' });
  });

  it('closes a consumer that takes nothing for drainTimeout with 1013, even when only qos 0 waits', async () => {
    gw = await startGateway('defaultRoute: publish\nwebsocket: { maxOutboundBuffer: 256kb, drainTimeout: 300ms }');
    const sub = await slowSubscriber('ticks');
    const publisher = await client();
    const payload = 'z'.repeat(32 * 1024);
    await eventually(async () => {
      await publishPaced(publisher, 64, () => ({ op: 'publish', key: 'ticks', payload }));
      expect(wsStats(gw!).disconnected).toBe(1);
    }, 20_000, 0);
    sub.socket.resume();
    const closed = await sub.closed;
    expect(closed.code).toBe(1013);
    expect(closed.reason).toContain('websocket.drainTimeout');
  });
});
