import { afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { hashPassword } from '../../src/auth/password.js';
import { connect, JunctionError, type ClientOptions, type ClientState, type Delivery, type JunctionClient } from '../../src/client/index.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { wsUrl } from '../helpers/ws.js';

describe('junction/client', () => {
  let gw: TestGateway | undefined;
  const clients: JunctionClient[] = [];

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await gw?.stop();
    gw = undefined;
  });

  async function client(options: Partial<ClientOptions> = {}): Promise<JunctionClient> {
    const c = await connect({ url: wsUrl(gw!.http), WebSocket, reconnect: { initialDelayMs: 20, maxDelayMs: 200 }, ...options });
    clients.push(c);
    return c;
  }

  async function post(key: string, body: string, headers: Record<string, string> = {}): Promise<void> {
    const response = await fetch(`${gw!.http}/v1/messages/${key}`, { method: 'POST', body, headers });
    expect(response.status).toBe(202);
  }

  it('publishes (resolving on the ack), subscribes with a callback and an async iterator, and keeps payload types', async () => {
    gw = await startGateway('defaultRoute: publish');
    const subscriber = await client();
    const seen: Delivery[] = [];
    const withCallback = subscriber.subscribe('sensors/#', (delivery) => seen.push(delivery));
    const iterated = subscriber.subscribe('sensors/+/temp');
    await Promise.all([withCallback.ready, iterated.ready]);

    const publisher = await client();
    const ack = await publisher.publish('sensors/a/temp', { c: 21.5 }, { priority: 6, headers: { unit: 'C' } });
    expect(ack.messageId).toMatch(/^[0-9a-f-]{36}$/);
    await publisher.publish('sensors/a/raw', new Uint8Array([0, 255, 1]));
    await publisher.publish('sensors/a/note', 'plain text', { qos: 0 });

    const iterator = iterated[Symbol.asyncIterator]();
    const first = (await iterator.next()).value as Delivery;
    expect(first).toMatchObject({ id: ack.messageId, key: 'sensors/a/temp', priority: 6, headers: { unit: 'C' }, contentType: 'application/json' });
    expect(first.json()).toEqual({ c: 21.5 });
    expect(first.text()).toBe('{"c":21.5}');

    await eventually(() => expect(seen).toHaveLength(3));
    expect(Array.from(seen[1]!.bytes())).toEqual([0, 255, 1]);
    expect(seen[2]!.text()).toBe('plain text');
    await iterator.return!();
  });

  it('joins a group: each message goes to one member, acknowledged when its handler is done', async () => {
    gw = await startGateway('defaultRoute: publish');
    const a = await client();
    const b = await client();
    const seenA: string[] = [];
    const seenB: string[] = [];
    const subA = a.subscribe('work/#', (d) => { seenA.push(d.text()); }, { group: 'w' });
    // An async handler: its message counts as handled once the promise resolves.
    const subB = b.subscribe('work/#', async (d) => { seenB.push(d.text()); }, { group: 'w' });
    await Promise.all([subA.ready, subB.ready]);
    for (let i = 0; i < 20; i++) await post(`work/${i}`, String(i), { 'x-qos': '1' });
    await eventually(() => expect(seenA.length + seenB.length).toBe(20));
    expect(seenA).toHaveLength(10);
    expect(new Set([...seenA, ...seenB]).size).toBe(20);
    await eventually(async () => {
      const stats = await (await fetch(`${gw!.admin}/admin/stats`)).json() as { groups: { delivered: number; inFlight: number }[] };
      expect(stats.groups[0]).toMatchObject({ delivered: 20, inFlight: 0 });
    });
    await subA.unsubscribe();
    await post('work/after', 'after', { 'x-qos': '1' });
    await eventually(() => expect(seenB).toContain('after'));
    expect(seenA).not.toContain('after');
  });

  it('makes requests answered by another client, and reports gateway errors as JunctionError', async () => {
    gw = await startGateway(`
defaultRoute: publish
routes:
  - { name: limited, match: { key: "limited" }, rateLimit: { rate: 1, per: 1m, burst: 1, scope: client }, to: [publish] }
`);
    const responder = await client();
    const service = responder.subscribe('svc/add', (request) => {
      const { a, b } = request.json<{ a: number; b: number }>();
      void request.reply({ sum: a + b });
    });
    await service.ready;
    const caller = await client();
    const reply = await caller.request('svc/add', { a: 2, b: 3 });
    expect(reply.json()).toEqual({ sum: 5 });

    const silent = responder.subscribe('svc/silent');
    await silent.ready;
    await expect(caller.request('svc/silent', 'x', { timeoutMs: 100 })).rejects.toMatchObject({ code: 'upstream_timeout' });
    await expect(caller.publish('bad/+', 'x')).rejects.toMatchObject({ name: 'JunctionError', code: 'bad_request', field: 'key' });
    await caller.publish('limited', 'once');
    const limited = await caller.publish('limited', 'twice').catch((err: unknown) => err);
    expect(limited).toBeInstanceOf(JunctionError);
    expect((limited as JunctionError).code).toBe('rate_limited');
    expect((limited as JunctionError).retryAfterMs).toBeGreaterThan(0);
  });

  it('authenticates with a token, and fails to connect without one when reconnecting is off', async () => {
    const hash = await hashPassword('secret');
    gw = await startGateway(`
defaultRoute: publish
auth:
  users: [ { username: app, password: "${hash}" } ]
  acl: [ { principal: "*", publish: ["#"], subscribe: ["#"] } ]
`);
    const authed = await client({ token: 'app:secret' });
    await authed.publish('anything', 'x');
    await expect(connect({ url: wsUrl(gw.http), WebSocket, reconnect: false })).rejects.toMatchObject({ code: 'closed' });
  });

  it('reconnects after the gateway restarts, restores subscriptions, and delivers each message to each handler once', async () => {
    gw = await startGateway('defaultRoute: publish');
    const port = Number(new URL(gw.http).port);
    const states: ClientState[] = [];
    const subscriber = await client({ onStateChange: (state) => states.push(state) });
    const seen: string[] = [];
    const sub = subscriber.subscribe('alerts/#', (delivery) => seen.push(delivery.text()));
    const alsoSeen: string[] = [];
    subscriber.subscribe('alerts/#', (delivery) => alsoSeen.push(delivery.text()));
    await sub.ready;

    for (const round of [1, 2]) {
      await gw.stop();
      await eventually(() => expect(subscriber.state).toBe('reconnecting'));
      // Published while disconnected: sent once the connection is back.
      const queued = subscriber.publish('alerts/queued', `queued ${round}`);
      gw = await startGateway('defaultRoute: publish', undefined, { httpPort: port });
      await eventually(() => expect(subscriber.state).toBe('open'), 10_000);
      await sub.ready;
      await queued;
      await post('alerts/a', `after restart ${round}`);
      await eventually(() => expect(seen).toContain(`after restart ${round}`));
    }
    // Each handler got each message exactly once: no handler was added twice by a reconnect.
    await post('alerts/z', 'last');
    await eventually(() => expect(seen.at(-1)).toBe('last'));
    expect(seen).toEqual(['queued 1', 'after restart 1', 'queued 2', 'after restart 2', 'last']);
    await eventually(() => expect(alsoSeen).toEqual(seen));
    expect(states.filter((s) => s === 'reconnecting').length).toBeGreaterThanOrEqual(2);
  });

  it('fails a request in flight when the connection drops, and ends iterators on unsubscribe', async () => {
    gw = await startGateway('defaultRoute: publish');
    const responder = await client();
    await responder.subscribe('svc/hang').ready;
    const caller = await client();
    const pending = caller.request('svc/hang', 'x', { timeoutMs: 10_000 });
    await eventually(() => expect(gw!.gateway.adapter('ws')!.connections()).toBe(2));
    const stopping = gw.stop();
    await expect(pending).rejects.toMatchObject({ code: 'disconnected' });
    await stopping;
    gw = undefined;

    gw = await startGateway('defaultRoute: publish');
    const c = await client();
    const sub = c.subscribe('x');
    await sub.ready;
    const loop = (async () => {
      const got: Delivery[] = [];
      for await (const delivery of sub) got.push(delivery);
      return got;
    })();
    await c.publish('x', 'one');
    await sub.unsubscribe();
    expect((await loop).length).toBeLessThanOrEqual(1);
  });

  it('goes idle when the gateway closes it for idling, and reconnects on the next call', async () => {
    // The reconnected socket must publish within idleTimeout: long enough for a busy machine.
    gw = await startGateway('defaultRoute: publish\nwebsocket: { idleTimeout: 500ms }');
    const c = await client();
    await eventually(() => expect(c.state).toBe('idle'));
    const ack = await c.publish('wake/up', 'x');
    expect(ack.messageId).toBeDefined();
    expect(c.state).toBe('open');
  });
});
