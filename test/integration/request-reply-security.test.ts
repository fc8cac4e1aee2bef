/**
 * Request/reply and reserved keys as an attacker tries them (issue 18, "Holes"): each case
 * failed before its fix.
 */
import { status as GrpcStatus } from '@grpc/grpc-js';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/auth/password.js';
import type { ErrorFrame, MessageFrame } from '../../src/client/protocol.js';
import { eventually } from '../helpers/eventually.js';
import { failure, GatewayClient } from '../helpers/grpc.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt } from '../helpers/mqtt.js';
import { subscribeSse } from '../helpers/sse.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

const isAck = (id: unknown) => (f: { op: string; id?: unknown }) => f.op === 'ack' && f.id === id;
const isError = (id: unknown) => (f: { op: string; id?: unknown }) => f.op === 'error' && f.id === id;

describe('request/reply correlation and reserved keys', () => {
  let gw: TestGateway | undefined;
  const clients: WsTestClient[] = [];
  const grpcClients: GatewayClient[] = [];
  let hash = '';

  beforeAll(async () => {
    hash = await hashPassword('pw');
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    for (const c of grpcClients.splice(0)) c.close();
    await closeClients();
    await gw?.stop();
    gw = undefined;
  });

  async function ws(user?: string): Promise<WsTestClient> {
    const c = await connectWs(gw!.http, user ? { headers: { authorization: `Bearer ${user}:pw` } } : {});
    clients.push(c);
    return c;
  }

  function config(): string {
    return `
defaultRoute: publish
auth:
  anonymous: true
  users:
    - { username: alice, password: "${hash}" }
    - { username: bob, password: "${hash}" }
  acl:
    - { principal: "*", publish: ["{principal}/#"], subscribe: ["{principal}/#"], respond: ["{principal}/#"] }
    - { principal: anonymous, publish: ["#", "$SYS/#"], subscribe: ["#", "$SYS/#"] }
`;
  }

  /** A responder that answers every request with `answer`. */
  async function responder(user: string, key: string, answer: string): Promise<WsTestClient> {
    const c = await ws(user);
    c.send({ op: 'subscribe', id: 's', key, responder: true });
    await c.next(isAck('s'));
    c.socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as MessageFrame;
      if (frame.op !== 'message' || frame.replyTo === undefined) return;
      c.send({ op: 'publish', id: `a-${frame.correlationId}`, key: frame.replyTo, correlationId: frame.correlationId, payload: answer });
    });
    return c;
  }

  it('gives each request its own inbox: two requests with the same x-message-id get their own answers', async () => {
    gw = await startGateway(config());
    await responder('alice', 'alice/svc', 'from alice');
    await responder('bob', 'bob/svc', 'from bob');
    const ask = (user: string) => fetch(`${gw!.http}/v1/requests/${user}/svc`, {
      method: 'POST', body: 'q', headers: { authorization: `Bearer ${user}:pw`, 'x-message-id': 'same-id', 'x-correlation-id': 'same-correlation' },
    });
    const [alice, bob] = await Promise.all([ask('alice'), ask('bob')]);
    expect([alice.status, await alice.text()]).toEqual([200, 'from alice']);
    expect([bob.status, await bob.text()]).toEqual([200, 'from bob']);
  });

  it('hands the responder an inbox and a correlation id of the gateway\'s own, and no subscriber of # sees the answer', async () => {
    gw = await startGateway(config());
    const watcher = await subscribeSse(gw.http, '#');
    const listener = await ws();
    listener.send({ op: 'subscribe', id: 'all', key: '#', responder: false });
    await listener.next(isAck('all'));
    const alice = await ws('alice');
    alice.send({ op: 'subscribe', id: 's', key: 'alice/svc', responder: true });
    await alice.next(isAck('s'));
    const requester = await ws('alice');
    requester.send({ op: 'request', id: 'r', key: 'alice/svc', payload: 'q' });
    const request = await alice.next<MessageFrame>((f) => f.op === 'message');
    expect(request.replyTo).toMatch(/^_inbox\/[A-Za-z0-9_-]{22}$/);
    expect(request.correlationId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(request.replyTo).not.toContain(request.id);
    // A wrong correlation id does not answer it.
    alice.send({ op: 'publish', id: 'wrong', key: request.replyTo, correlationId: 'guess', payload: 'forged', qos: 1 });
    expect(await alice.next<ErrorFrame>(isError('wrong'))).toMatchObject({ code: 'forbidden' });
    alice.send({ op: 'publish', id: 'answer', key: request.replyTo, correlationId: request.correlationId, payload: 'pong', qos: 1 });
    await alice.next(isAck('answer'));
    expect(await requester.next((f) => f.op === 'reply')).toMatchObject({ id: 'r', payload: 'pong' });
    // The request went to the responder only, and the answer to the requester only.
    listener.send({ op: 'ping', id: 'sync' });
    await listener.next((f) => f.op === 'pong');
    expect(listener.frames.filter((f) => f.op === 'message')).toEqual([]);
    expect(watcher.messages).toEqual([]);
    watcher.close();
  });

  it('refuses a replyTo the sender may not publish to: a request-mode rule would publish the reply there', async () => {
    gw = await startGateway(config().replace('acl:', `acl:
    - { principal: "*", effect: deny, publish: ["bob/#"] }`));
    const http = await fetch(`${gw.http}/v1/messages/alice/svc`, { method: 'POST', body: 'q', headers: { authorization: 'Bearer alice:pw', 'x-reply-to': 'bob/inbox' } });
    expect(http.status).toBe(403);
    const alice = await ws('alice');
    alice.send({ op: 'publish', id: 'p', key: 'alice/svc', replyTo: 'bob/inbox', payload: 'q', qos: 1 });
    expect(await alice.next<ErrorFrame>(isError('p'))).toMatchObject({ code: 'forbidden' });
    alice.send({ op: 'publish', id: 'own', key: 'alice/svc', replyTo: 'alice/inbox', payload: 'q', qos: 1 });
    await alice.next(isAck('own'));
  });

  it('refuses message ids and correlation ids with wildcards or NUL at once, as bad_request', async () => {
    gw = await startGateway(config(), undefined, { listeners: ['grpc'] });
    for (const id of ['a#b', 'a+b']) {
      const started = Date.now();
      const response = await fetch(`${gw.http}/v1/requests/public/svc`, { method: 'POST', body: 'q', headers: { 'x-message-id': id } });
      expect(response.status).toBe(400);
      expect(await response.json()).toMatchObject({ code: 'bad_request', field: 'id' });
      expect(Date.now() - started).toBeLessThan(4000);
    }
    const correlation = await fetch(`${gw.http}/v1/messages/public/x`, { method: 'POST', body: 'q', headers: { 'x-correlation-id': 'c#1' } });
    expect(correlation.status).toBe(400);
    const client = new GatewayClient(gw.grpc);
    grpcClients.push(client);
    const nul = await failure(client.request({ key: 'public/svc', payload: 'q', id: 'a\u0000b' }));
    expect(nul.code).toBe(GrpcStatus.INVALID_ARGUMENT);
    expect(nul.metadata.get('junction-error-field')).toEqual(['id']);
  });

  it('refuses $SYS/ and inbox keys on every protocol alike, whatever the ACL allows, and delivers none of them', async () => {
    gw = await startGateway(config(), undefined, { listeners: ['grpc', 'mqtt'] });
    const sys = await connectMqtt(gw.mqtt);
    await sys.client.subscribeAsync('$SYS/#', { qos: 1 });
    const inbox = await connectMqtt(gw.mqtt);
    await inbox.client.subscribeAsync('_inbox/#', { qos: 1 });
    for (const key of ['$SYS/broker/uptime', '_inbox/abc']) {
      const http = await fetch(`${gw.http}/v1/messages/${key}`, { method: 'POST', body: 'forged' });
      expect(http.status).toBe(403);
      const socket = await ws();
      socket.send({ op: 'publish', id: 'p', key, payload: 'forged', qos: 1 });
      expect(await socket.next<ErrorFrame>(isError('p'))).toMatchObject({ code: 'forbidden' });
      const client = new GatewayClient(gw.grpc);
      grpcClients.push(client);
      expect((await failure(client.publish({ key, payload: 'forged' }))).code).toBe(GrpcStatus.PERMISSION_DENIED);
      // MQTT 3.1.1 cannot say no: acknowledged and dropped, as any publish the ACL refuses.
      const publisher = await connectMqtt(gw.mqtt);
      await publisher.client.publishAsync(key, 'forged', { qos: 1 });
    }
    const marker = await connectMqtt(gw.mqtt);
    await marker.client.subscribeAsync('after', { qos: 1 });
    await marker.client.publishAsync('after', 'x', { qos: 1 });
    // Deliveries keep their order: once this arrived, the forged ones would have too.
    await eventually(() => expect(marker.texts()).toEqual(['x']));
    expect(sys.texts().filter((t) => t === 'forged')).toEqual([]);
    expect(inbox.texts()).toEqual([]);
  });
});
