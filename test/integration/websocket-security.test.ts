import { randomBytes } from 'node:crypto';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/auth/password.js';
import type { ErrorFrame, MessageFrame } from '../../src/client/protocol.js';
import { eventually } from '../helpers/eventually.js';
import { adapterCounts, refusals, startGateway, type TestGateway } from '../helpers/gateway.js';
import { connectWs, refusedStatus, type WsTestClient } from '../helpers/ws.js';

const isAck = (id: unknown) => (f: { op: string; id?: unknown }) => f.op === 'ack' && f.id === id;
const isError = (id: unknown) => (f: { op: string; id?: unknown }) => f.op === 'error' && f.id === id;

/** The WebSocket adapter's counters and levels now (docs/websocket.md). */
function wsStats(gw: TestGateway) {
  return adapterCounts(gw.gateway, 'ws', ['handshakesRefused']);
}

describe('WebSocket authentication, ACL and limits', () => {
  let gw: TestGateway | undefined;
  let aliceHash = '';
  const clients: WsTestClient[] = [];

  beforeAll(async () => {
    aliceHash = await hashPassword('wonderland');
  });

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

  function authConfig(): string {
    return `
defaultRoute: publish
auth:
  anonymous: false
  users:
    - { username: alice, password: "${aliceHash}" }
  acl:
    - { principal: alice, publish: ["alice/#"], subscribe: ["alice/#", "public/#"], respond: ["alice/svc"] }
`;
  }

  it('refuses a handshake without credentials or with bad ones with 401', async () => {
    gw = await startGateway(authConfig());
    expect(await refusedStatus(gw.http)).toBe(401);
    expect(await refusedStatus(gw.http, { headers: { authorization: 'Bearer alice:wrong' } })).toBe(401);
    expect(await refusedStatus(gw.http, { headers: { authorization: 'Digest x' } })).toBe(401);
    expect(await refusedStatus(gw.http, { query: '?access_token=mallory%3Ax' })).toBe(401);
    expect(refusals(gw.gateway, 'ws').unauthenticated).toBe(4);
    expect(wsStats(gw).handshakesRefused).toBe(4);
  });

  it('takes the token from the Authorization header, a subprotocol or the query string', async () => {
    gw = await startGateway(authConfig());
    const bearer = await client({ headers: { authorization: 'Bearer alice:wonderland' } });
    const basic = await client({ headers: { authorization: `Basic ${Buffer.from('alice:wonderland').toString('base64')}` } });
    const subprotocol = await client({ protocols: ['junction.v1', `junction.token.${Buffer.from('alice:wonderland').toString('base64url')}`] });
    // The gateway selects the protocol offered first, so the token is not echoed back.
    expect(subprotocol.socket.protocol).toBe('junction.v1');
    const query = await client({ query: `?access_token=${encodeURIComponent('alice:wonderland')}` });
    for (const c of [bearer, basic, subprotocol, query]) {
      c.send({ op: 'publish', id: 'p', key: 'alice/notes', payload: 'x', qos: 1 });
      await c.next(isAck('p'));
    }
  });

  it('answers a frame the ACL denies with forbidden, and lets a responder answer the request it was handed', async () => {
    gw = await startGateway(authConfig());
    const alice = await client({ headers: { authorization: 'Bearer alice:wonderland' } });
    alice.send({ op: 'publish', id: 'denied', key: 'bob/notes', payload: 'x', qos: 1 });
    expect(await alice.next<ErrorFrame>(isError('denied'))).toMatchObject({ code: 'forbidden', field: 'key' });
    alice.send({ op: 'subscribe', id: 'all', key: '#' });
    expect(await alice.next<ErrorFrame>(isError('all'))).toMatchObject({ code: 'forbidden' });
    alice.send({ op: 'request', id: 'req', key: 'bob/svc', payload: 'x' });
    expect(await alice.next<ErrorFrame>(isError('req'))).toMatchObject({ code: 'forbidden' });
    alice.send({ op: 'subscribe', id: 'pub', key: 'public/+' });
    await alice.next(isAck('pub'));

    // The ACL grants nothing under _inbox/: only the request handed to this socket may be answered.
    alice.send({ op: 'publish', id: 'forged', key: '_inbox/someone', correlationId: 'c', payload: 'x', qos: 1 });
    expect(await alice.next<ErrorFrame>(isError('forged'))).toMatchObject({ code: 'forbidden' });
    alice.send({ op: 'subscribe', id: 'svc', key: 'alice/svc' });
    await alice.next(isAck('svc'));
    const requester = await client({ headers: { authorization: 'Bearer alice:wonderland' } });
    requester.send({ op: 'request', id: 'r', key: 'alice/svc', payload: 'ping' });
    const request = await alice.next<MessageFrame>((f) => f.op === 'message');
    alice.send({ op: 'publish', id: 'answer', key: request.replyTo, correlationId: request.correlationId, payload: 'pong', qos: 1 });
    await alice.next(isAck('answer'));
    expect(await requester.next((f) => f.op === 'reply')).toMatchObject({ id: 'r', payload: 'pong' });
    // The grant is used up.
    alice.send({ op: 'publish', id: 'again', key: request.replyTo, correlationId: request.correlationId, payload: 'pong', qos: 1 });
    expect(await alice.next<ErrorFrame>(isError('again'))).toMatchObject({ code: 'forbidden' });
  });

  it('refuses a handshake whose credentials take longer than handshakeTimeout to check, with 503', async () => {
    // A hash whose check takes a while (scrypt N=2^17: 128 MiB, hundreds of ms); the key is random, so it fails anyway.
    const slow = `scrypt:131072:8:1:${randomBytes(16).toString('base64')}:${randomBytes(32).toString('base64')}`;
    gw = await startGateway(`
defaultRoute: publish
websocket: { handshakeTimeout: 20ms }
auth:
  users: [ { username: slow, password: "${slow}" } ]
`);
    expect(await refusedStatus(gw.http, { headers: { authorization: 'Bearer slow:x' } })).toBe(503);
  });

  it('counts sockets against the HTTP listener\'s limits, and limits subscriptions per socket', async () => {
    gw = await startGateway('defaultRoute: publish\nwebsocket: { maxSubscriptions: 2 }', undefined, { listenerKeys: { http: 'maxConnections: 3, maxConnectionsPerIp: 2' } });
    const first = await client();
    await client();
    // One more from the address is closed at accept, before its upgrade request is read.
    await expect(connectWs(gw.http)).rejects.toThrow();
    // Another address still gets in, up to the listener's limit.
    await client({ localAddress: '127.0.0.2' });
    await expect(connectWs(gw.http, { localAddress: '127.0.0.3' })).rejects.toThrow();
    expect(gw.gateway.admission.refusals().http).toMatchObject({ connections_per_ip: 1, connections: 1 });

    first.send({ op: 'subscribe', id: 1, key: 'a' });
    first.send({ op: 'subscribe', id: 2, key: 'b' });
    first.send({ op: 'subscribe', id: 3, key: 'c' });
    await first.next(isAck(1));
    await first.next(isAck(2));
    expect(await first.next<ErrorFrame>(isError(3))).toMatchObject({ code: 'overloaded', field: 'key' });
    // Subscribing again to a held pattern is not one more.
    first.send({ op: 'subscribe', id: 4, key: 'a' });
    await first.next(isAck(4));

    // A closed socket frees its slot.
    await first.close();
    await eventually(async () => { await client(); });
  });
});
