import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { adapterCounts, startGateway, type TestGateway } from '../helpers/gateway.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

/** The WebSocket adapter's counters and levels now (docs/websocket.md). */
function wsStats(gw: TestGateway) {
  return adapterCounts(gw.gateway, 'ws', ['reaped', 'idleClosed']);
}

describe('WebSocket liveness', () => {
  let gw: TestGateway | undefined;
  const clients: WsTestClient[] = [];

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await gw?.stop();
    gw = undefined;
  });

  async function client(options: Parameters<typeof connectWs>[1] = {}): Promise<WsTestClient> {
    const c = await connectWs(gw!.http, options);
    clients.push(c);
    return c;
  }

  it('pings quiet sockets and terminates one that stops answering, leaving live ones alone', async () => {
    // A live socket must answer within one interval; long enough that a busy machine's pause is not a missed pong.
    gw = await startGateway('defaultRoute: publish\nwebsocket: { pingInterval: 500ms }');
    const live = await client();
    let pings = 0;
    live.socket.on('ping', () => pings++);
    const dead = await client({ autoPong: false });

    // terminate() sends no close frame: the client sees the connection drop (1006).
    expect((await dead.closed).code).toBe(1006);
    expect(wsStats(gw).reaped).toBe(1);
    expect(live.socket.readyState).toBe(live.socket.OPEN);
    expect(pings).toBeGreaterThan(0);
    await eventually(() => expect(gw!.gateway.adapter('ws')!.connections()).toBe(1));
  });

  it('closes a socket without subscriptions that sends nothing for idleTimeout with 4408', async () => {
    // The listening socket must subscribe within idleTimeout of connecting: long enough for a busy machine.
    gw = await startGateway('defaultRoute: publish\nwebsocket: { idleTimeout: 1s }');
    const listening = await client();
    listening.send({ op: 'subscribe', id: 's', key: 'news/#' });
    await listening.next((f) => f.op === 'ack');
    const idle = await client();

    expect(await idle.closed).toMatchObject({ code: 4408, reason: 'idle for 1000 ms (websocket.idleTimeout)' });
    expect(listening.socket.readyState).toBe(listening.socket.OPEN);
    expect(wsStats(gw).idleClosed).toBe(1);
  });

  it('closes sockets with 1001 when the gateway stops, after answering what it had read', async () => {
    gw = await startGateway('defaultRoute: publish');
    const c = await client();
    c.send({ op: 'subscribe', id: 's', key: 'a' });
    c.send({ op: 'publish', id: 'p', key: 'a', payload: 'last', qos: 1 });
    await c.next((f) => f.op === 'ack' && f.id === 'p');
    const stopping = gw.gateway.stop();
    expect(await c.closed).toMatchObject({ code: 1001, reason: 'the gateway is shutting down' });
    await stopping;
  });
});
