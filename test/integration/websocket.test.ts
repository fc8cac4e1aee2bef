import { randomBytes } from 'node:crypto';
import mqtt from 'mqtt';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { AckFrame, ErrorFrame, MessageFrame, ReplyFrame } from '../../src/client/protocol.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { refusals, startGateway, type TestGateway } from '../helpers/gateway.js';
import { payloadBytes, subscribeSse, type SseSubscriber } from '../helpers/sse.js';
import { connectWs, upgradeAnswer, type WsTestClient } from '../helpers/ws.js';

const isAck = (id: unknown) => (f: { op: string; id?: unknown }) => f.op === 'ack' && f.id === id;
const isError = (id?: unknown) => (f: { op: string; id?: unknown }) => f.op === 'error' && f.id === id;
const isMessage = (f: { op: string }) => f.op === 'message';

describe('WebSocket adapter', () => {
  let gw: TestGateway | undefined;
  let downstream: Downstream | undefined;
  let sse: SseSubscriber | undefined;
  let mqttClient: mqtt.MqttClient | undefined;
  const clients: WsTestClient[] = [];

  async function client(options: Parameters<typeof connectWs>[1] = {}): Promise<WsTestClient> {
    const c = await connectWs(gw!.http, options);
    clients.push(c);
    return c;
  }

  async function subscribed(c: WsTestClient, id: string, key: string, extra: Record<string, unknown> = {}): Promise<void> {
    c.send({ op: 'subscribe', id, key, ...extra });
    await c.next(isAck(id));
  }

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    sse?.close();
    await mqttClient?.endAsync();
    await gw?.stop();
    await downstream?.close();
    gw = undefined;
    downstream = undefined;
    sse = undefined;
    mqttClient = undefined;
  });

  it('publishes with qos 1 (ack with the message id) to subscribers of matching patterns, wildcards included', async () => {
    gw = await startGateway('defaultRoute: publish');
    const sub = await client();
    await subscribed(sub, 'plus', 'sensors/+/temp');
    await subscribed(sub, 'hash', 'sensors/#');
    await subscribed(sub, 'other', 'other/#');
    const pub = await client();

    pub.send({ op: 'publish', id: 'p1', key: 'sensors/a1/temp', payload: 'hot', qos: 1, priority: 7, headers: { 'x-site': 'north' } });
    const ack = await pub.next<AckFrame>(isAck('p1'));
    expect(ack.messageId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);

    const first = await sub.next<MessageFrame>((f) => isMessage(f) && (f as MessageFrame).sub === 'plus');
    const second = await sub.next<MessageFrame>((f) => isMessage(f) && (f as MessageFrame).sub === 'hash');
    for (const delivery of [first, second]) {
      expect(delivery).toMatchObject({ op: 'message', id: ack.messageId, key: 'sensors/a1/temp', payload: 'hot', priority: 7, qos: 1, headers: { 'x-site': 'north' } });
      expect(delivery.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/);
    }
    expect(sub.frames.filter(isMessage)).toHaveLength(2);
  });

  it('keeps JSON payloads JSON, text as text and binary as base64, both ways', async () => {
    gw = await startGateway('defaultRoute: publish');
    const sub = await client();
    await subscribed(sub, 's', 'data/#');
    const pub = await client();
    const binary = Buffer.concat([Buffer.from([0xff, 0xfe, 0x00]), randomBytes(64)]);

    pub.send({ op: 'publish', id: 1, key: 'data/json', payload: { c: 21.5, tags: ['a'] }, qos: 1 });
    pub.send({ op: 'publish', id: 2, key: 'data/text', payload: '{"not":"parsed"}', qos: 1 });
    pub.send({ op: 'publish', id: 3, key: 'data/bin', payload: binary.toString('base64'), encoding: 'base64', qos: 1 });
    pub.send({ op: 'publish', id: 4, key: 'data/number', payload: 42, qos: 1 });
    for (const id of [1, 2, 3, 4]) await pub.next(isAck(id));

    const json = await sub.next<MessageFrame>((f) => isMessage(f) && (f as MessageFrame).key === 'data/json');
    expect(json.payload).toEqual({ c: 21.5, tags: ['a'] });
    expect(json.contentType).toBe('application/json');
    expect(json.encoding).toBeUndefined();
    const text = await sub.next<MessageFrame>((f) => isMessage(f) && (f as MessageFrame).key === 'data/text');
    expect(text.payload).toBe('{"not":"parsed"}');
    expect(text.contentType).toBeUndefined();
    const bin = await sub.next<MessageFrame>((f) => isMessage(f) && (f as MessageFrame).key === 'data/bin');
    expect(bin.encoding).toBe('base64');
    expect(Buffer.from(bin.payload as string, 'base64').equals(binary)).toBe(true);
    const number = await sub.next<MessageFrame>((f) => isMessage(f) && (f as MessageFrame).key === 'data/number');
    expect(number.payload).toBe(42);
  });

  it('delivers frames of every header length whole and in order, with and without permessage-deflate', async () => {
    // Text payloads whose frames take a 16-bit length, its largest value, and a 64-bit one (RFC 6455 §5.2).
    const sizes = [10, 65535 - 300, 65535 - 250, 70_000];
    for (const perMessageDeflate of [false, true]) {
      gw = await startGateway(`defaultRoute: publish\nwebsocket: { perMessageDeflate: ${perMessageDeflate} }`);
      const sub = await client();
      expect(sub.socket.extensions).toBe(perMessageDeflate ? 'permessage-deflate' : '');
      await subscribed(sub, 's', 'big/#');
      const pub = await client();
      for (const [i, size] of sizes.entries()) pub.send({ op: 'publish', id: i, key: `big/${i}`, payload: 'x'.repeat(size), qos: 1 });
      for (let i = 0; i < sizes.length; i++) await pub.next(isAck(i));
      await eventually(() => expect(sub.frames.filter(isMessage)).toHaveLength(sizes.length));
      expect(sub.frames.filter(isMessage).map((f) => ((f as MessageFrame).payload as string).length)).toEqual(sizes);
      await Promise.all(clients.splice(0).map((c) => c.close()));
      await gw.stop();
    }
  });

  it('unsubscribes, answers ping with pong, and replaces a repeated subscription instead of doubling it', async () => {
    gw = await startGateway('defaultRoute: publish');
    const sub = await client();
    await subscribed(sub, 'a', 'news/#');
    await subscribed(sub, 'b', 'news/#');
    await subscribed(sub, 'marker', 'marker');
    const pub = await client();

    pub.send({ op: 'publish', id: 'n1', key: 'news/1', payload: 'one', qos: 1 });
    await pub.next(isAck('n1'));
    const delivery = await sub.next<MessageFrame>(isMessage);
    expect(delivery.sub).toBe('b');

    sub.send({ op: 'unsubscribe', id: 'u', key: 'news/#' });
    await sub.next(isAck('u'));
    pub.send({ op: 'publish', id: 'n2', key: 'news/2', payload: 'two', qos: 1 });
    pub.send({ op: 'publish', id: 'm', key: 'marker', payload: 'after', qos: 1 });
    await sub.next((f) => isMessage(f) && (f as MessageFrame).sub === 'marker');
    expect(sub.frames.filter(isMessage).map((f) => (f as MessageFrame).key)).toEqual(['news/1', 'marker']);

    sub.send({ op: 'ping', id: 'p' });
    expect(await sub.next((f) => f.op === 'pong')).toEqual({ op: 'pong', id: 'p' });
    sub.send({ op: 'ping' });
    expect(await sub.next((f) => f.op === 'pong')).toEqual({ op: 'pong' });
  });

  it('answers a request from another WebSocket responder, which gets replyTo and correlationId', async () => {
    gw = await startGateway('defaultRoute: publish');
    const responder = await client();
    await subscribed(responder, 'svc', 'svc/echo');
    const requester = await client();

    requester.send({ op: 'request', id: 'r1', key: 'svc/echo', payload: { q: 1 }, timeout: 5000 });
    const request = await responder.next<MessageFrame>(isMessage);
    expect(request.payload).toEqual({ q: 1 });
    expect(request.replyTo).toMatch(/^_inbox\//);
    expect(request.correlationId).toBeDefined();
    responder.send({ op: 'publish', id: 'ans', key: request.replyTo, correlationId: request.correlationId, payload: { a: 2 }, qos: 1 });
    await responder.next(isAck('ans'));

    const reply = await requester.next<ReplyFrame>((f) => f.op === 'reply');
    expect(reply).toMatchObject({ op: 'reply', id: 'r1', payload: { a: 2 }, contentType: 'application/json' });
  });

  it('times out a request nobody answers (upstream_timeout), and refuses one nobody can answer (no_route)', async () => {
    gw = await startGateway('defaultRoute: publish');
    const silent = await client();
    await subscribed(silent, 'svc', 'svc/slow');
    await subscribed(silent, 'dash', 'svc/dashboard', { responder: false });
    const requester = await client();

    requester.send({ op: 'request', id: 'slow', key: 'svc/slow', payload: 'x', timeout: 100 });
    expect(await requester.next<ErrorFrame>(isError('slow'))).toMatchObject({ code: 'upstream_timeout' });
    requester.send({ op: 'request', id: 'none', key: 'svc/nobody', payload: 'x' });
    expect(await requester.next<ErrorFrame>(isError('none'))).toMatchObject({ code: 'no_route' });
    // A subscription with responder: false gets publishes but no requests.
    requester.send({ op: 'request', id: 'dash', key: 'svc/dashboard', payload: 'x' });
    expect(await requester.next<ErrorFrame>(isError('dash'))).toMatchObject({ code: 'no_route' });
  });

  it('names the bad field of an invalid frame, and says which ops exist', async () => {
    gw = await startGateway('defaultRoute: publish\nlimits: { maxPayloadSize: 1kb }');
    const c = await client();
    const cases: [unknown, string, string][] = [
      [{ op: 'teleport', id: 1 }, 'op', 'unknown op "teleport"; use publish, subscribe, unsubscribe, request, ping'],
      [{ id: 2 }, 'op', 'op is missing'],
      [{ op: 'publish', id: 3 }, 'key', 'key must be a string'],
      [{ op: 'publish', id: 4, key: 'a/+' }, 'key', 'wildcards'],
      [{ op: 'publish', id: 5, key: 'a', qos: 2 }, 'qos', 'qos must be 0 or 1'],
      [{ op: 'publish', id: 6, key: 'a', priority: 10 }, 'priority', 'priority must be an integer from 0 to 9'],
      [{ op: 'publish', id: 7, key: 'a', payload: 'x', encoding: 'hex' }, 'encoding', 'encoding must be "base64"'],
      [{ op: 'publish', id: 8, key: 'a', payload: 'not base64!', encoding: 'base64' }, 'payload', 'not valid base64'],
      [{ op: 'publish', id: 9, key: 'a', headers: { n: 1 } }, 'headers.n', 'headers.n must be a string'],
      [{ op: 'publish', key: 'a', qos: 1 }, 'id', 'id must be'],
      [{ op: 'subscribe', id: 11, key: 'a/#/b' }, 'key', '# must be a whole level'],
      [{ op: 'subscribe', key: 'a' }, 'id', 'id must be'],
      [{ op: 'request', id: 13, key: 'a', timeout: -1 }, 'timeout', 'timeout must be a positive integer'],
      [{ op: 'publish', id: 14, key: 'a', ttl: 'soon' }, 'ttl', 'ttl must be a positive integer'],
      [{ op: 'subscribe', id: 15, key: 'a', responder: 'yes' }, 'responder', 'responder must be true or false'],
    ];
    for (const [frame, field, message] of cases) {
      c.send(frame);
      const id = (frame as { id?: unknown }).id;
      const error = await c.next<ErrorFrame>(isError(field === 'id' ? undefined : id));
      expect(error).toMatchObject({ code: 'bad_request', field });
      expect(error.message).toContain(message);
    }
    c.send([1, 2]);
    expect(await c.next<ErrorFrame>(isError(undefined))).toMatchObject({ code: 'bad_request', field: 'op' });

    c.send({ op: 'publish', id: 'big', key: 'a', payload: 'x'.repeat(1025), qos: 1 });
    expect(await c.next<ErrorFrame>(isError('big'))).toMatchObject({ code: 'too_large', field: 'payload' });
    c.send({ op: 'publish', id: 'big64', key: 'a', payload: randomBytes(1100).toString('base64'), encoding: 'base64', qos: 1 });
    expect(await c.next<ErrorFrame>(isError('big64'))).toMatchObject({ code: 'too_large' });
    // Errors leave the socket open.
    c.send({ op: 'ping', id: 'still' });
    await c.next((f) => f.op === 'pong');
  });

  it('refuses a payload nested deeper than 128 levels as bad_request, without an error log line, and stays open', async () => {
    gw = await startGateway('defaultRoute: publish');
    const errors = vi.spyOn(gw.gateway.logger, 'error');
    const c = await client();
    const nested = (depth: number) => `{"op":"publish","id":"deep${depth}","key":"a","qos":1,"payload":${'['.repeat(depth)}${']'.repeat(depth)}}`;
    for (const depth of [129, 10_000, 100_000]) {
      c.send(nested(depth));
      expect(await c.next<ErrorFrame>(isError(`deep${depth}`))).toMatchObject({ code: 'bad_request', field: 'payload' });
    }
    c.send(nested(128));
    await c.next(isAck('deep128'));
    expect(refusals(gw.gateway, 'ws')).toEqual({ bad_request: 3 });
    expect(errors).not.toHaveBeenCalled();
    c.send({ op: 'ping', id: 'still' });
    await c.next((f) => f.op === 'pong');
  });

  it('closes with 1007 on a frame that is not JSON and 1003 on a binary frame', async () => {
    gw = await startGateway('defaultRoute: publish');
    const notJson = await client();
    notJson.send('{"op": "publish",');
    expect(await notJson.closed).toMatchObject({ code: 1007, reason: 'frame is not valid JSON' });
    const binary = await client();
    binary.socket.send(Buffer.from('{"op":"ping"}'), { binary: true });
    expect((await binary.closed).code).toBe(1003);
  });

  it('closes with 1009 on a frame over websocket.maxFrameSize, whichever layer catches it', async () => {
    gw = await startGateway('defaultRoute: publish\nwebsocket: { maxFrameSize: 8kb }');
    // Over /ws's limit but under the WebSocket server's (which /mqtt shares): caught by the adapter.
    const overAdapter = await client();
    overAdapter.send({ op: 'publish', key: 'a', payload: 'x'.repeat(10 * 1024) });
    expect((await overAdapter.closed).code).toBe(1009);
    // Over the WebSocket server's own limit: ws closes before buffering it.
    const overServer = await client();
    overServer.send({ op: 'publish', key: 'a', payload: 'x'.repeat(2 * 1024 * 1024) });
    expect((await overServer.closed).code).toBe(1009);
  });

  it('reports no_route and rate_limited with retryAfterMs, as errors on the frame', async () => {
    gw = await startGateway(`
defaultRoute: drop
routes:
  - name: limited
    match: { key: "limited/#" }
    rateLimit: { rate: 1, per: 1m, burst: 1, scope: client }
    to: [publish]
`);
    const c = await client();
    c.send({ op: 'publish', id: 'lost', key: 'nowhere', payload: 'x', qos: 1 });
    expect(await c.next<ErrorFrame>(isError('lost'))).toMatchObject({ code: 'no_route' });
    c.send({ op: 'publish', id: 'first', key: 'limited/a', payload: 'x', qos: 1 });
    await c.next(isAck('first'));
    c.send({ op: 'publish', id: 'second', key: 'limited/a', payload: 'x', qos: 1 });
    const limited = await c.next<ErrorFrame>(isError('second'));
    expect(limited.code).toBe('rate_limited');
    expect(limited.retryAfterMs).toBeGreaterThan(0);
    // A qos 0 publish gets errors too, without an id when it had none.
    c.send({ op: 'publish', key: 'limited/a', payload: 'x' });
    expect(await c.next<ErrorFrame>(isError(undefined))).toMatchObject({ code: 'rate_limited' });
  });

  it('delivers an HTTP POST to a WebSocket subscriber, a JSON body as a JSON value', async () => {
    gw = await startGateway('defaultRoute: publish');
    const sub = await client();
    await subscribed(sub, 's', 'orders/+');
    const response = await fetch(`${gw.http}/v1/messages/orders/42`, { method: 'POST', body: '{"total": 9.5}', headers: { 'content-type': 'application/json', 'x-priority': '8' } });
    expect(response.status).toBe(202);
    const { id } = (await response.json()) as { id: string };
    const delivery = await sub.next<MessageFrame>(isMessage);
    expect(delivery).toMatchObject({ id, key: 'orders/42', payload: { total: 9.5 }, contentType: 'application/json', priority: 8, qos: 1 });
  });

  it('delivers a WebSocket publish to an SSE subscriber and to an MQTT subscriber', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['mqtt'] });
    sse = await subscribeSse(gw.http, 'rooms/#');
    mqttClient = await mqtt.connectAsync(gw.mqtt);
    const mqttMessages: { topic: string; payload: Buffer }[] = [];
    mqttClient.on('message', (topic, payload) => mqttMessages.push({ topic, payload }));
    await mqttClient.subscribeAsync('rooms/#', { qos: 1 });

    const pub = await client();
    pub.send({ op: 'publish', id: 'j', key: 'rooms/kitchen', payload: { lux: 300 }, qos: 1 });
    pub.send({ op: 'publish', id: 'b', key: 'rooms/cellar', payload: Buffer.from([0xc0, 0xff, 0xee]).toString('base64'), encoding: 'base64', qos: 1 });
    await pub.next(isAck('j'));
    await pub.next(isAck('b'));

    await eventually(() => expect(sse!.messages).toHaveLength(2));
    expect(sse.messages[0]).toMatchObject({ key: 'rooms/kitchen', payload: '{"lux":300}', contentType: 'application/json' });
    expect(payloadBytes(sse.messages[1]!).equals(Buffer.from([0xc0, 0xff, 0xee]))).toBe(true);
    await eventually(() => expect(mqttMessages).toHaveLength(2));
    const kitchen = mqttMessages.find((m) => m.topic === 'rooms/kitchen')!;
    expect(kitchen.payload.toString()).toBe('{"lux":300}');
    expect(mqttMessages.find((m) => m.topic === 'rooms/cellar')!.payload.equals(Buffer.from([0xc0, 0xff, 0xee]))).toBe(true);
  });

  it('takes an upgrade on /ws and /mqtt only: one to any other path is answered 404 problem+json and the connection closed', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['mqtt'] });
    for (const path of ['/nope', '/v1/subscribe/rooms/%23', '/v1/messages/rooms/a?x=1', '/ws/', '/mqtt/x']) {
      const answer = await upgradeAnswer(gw.http, path);
      expect(answer).toMatch(/^HTTP\/1\.1 404 Not Found\r\n/);
      expect(answer).toContain('Content-Type: application/problem+json');
      const problem = JSON.parse(answer.slice(answer.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
      expect(problem).toMatchObject({ status: 404, code: 'not_found', instance: path });
      expect(problem.detail).toBe(`no WebSocket endpoint at ${path.split('?')[0]}; WebSocket paths: /mqtt, /ws`);
    }
    expect(refusals(gw.gateway, 'http').not_found).toBe(5);

    const ws = await client();
    await subscribed(ws, 's', 'rooms/#');
    mqttClient = await mqtt.connectAsync(gw.mqttWs);
    await mqttClient.publishAsync('rooms/hall', 'on', { qos: 1 });
    expect((await ws.next<MessageFrame>(isMessage)).payload).toBe('on');
    // An HTTP request without an upgrade is still answered on the WebSocket paths, as before.
    expect((await fetch(`${gw.http}/ws`)).status).toBe(404);
  });

  it('stops reading a socket with maxInflight frames in flight until one of them completes', async () => {
    gw = await startGateway('defaultRoute: publish\nwebsocket: { maxInflight: 1 }');
    const responder = await client();
    await subscribed(responder, 'svc', 'svc/slow');
    const requester = await client();
    requester.send({ op: 'request', id: 'r', key: 'svc/slow', payload: 'x' });
    requester.send({ op: 'ping', id: 'queued' });
    const request = await responder.next<MessageFrame>(isMessage);
    responder.send({ op: 'publish', key: request.replyTo, correlationId: request.correlationId, payload: 'done' });
    await requester.next((f) => f.op === 'pong');
    // Read right away, the ping would have been answered before the request was even handed on.
    expect(requester.frames.map((f) => f.op)).toEqual(['reply', 'pong']);
  });

  it('sends a WebSocket request to a downstream HTTP target and returns its reply', async () => {
    downstream = await startDownstream((request, res) => {
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ charged: JSON.parse(request.body.toString()).amount }));
    });
    gw = await startGateway(`
targets:
  billing: { type: http, url: "${downstream.url}/charge" }
routes:
  - { name: charge, match: { key: "billing/charge" }, mode: request, to: [billing] }
`);
    const c = await client();
    c.send({ op: 'request', id: 'c1', key: 'billing/charge', payload: { amount: 12 }, headers: { 'x-tenant': 'acme' } });
    const reply = await c.next<ReplyFrame>((f) => f.op === 'reply');
    expect(reply).toMatchObject({ id: 'c1', payload: { charged: 12 }, contentType: 'application/json', status: 201 });
    expect(downstream.received[0]!.headers['x-tenant']).toBe('acme');
    expect(downstream.received[0]!.headers['content-type']).toBe('application/json');
  });

  it('answers a request whose downstream is down with upstream_unavailable', async () => {
    downstream = await startDownstream();
    await downstream.pause();
    gw = await startGateway(`
targets:
  billing: { type: http, url: "${downstream.url}/charge" }
routes:
  - { name: charge, match: { key: "billing/charge" }, mode: request, to: [billing] }
`);
    const c = await client();
    c.send({ op: 'request', id: 'down', key: 'billing/charge', payload: { amount: 1 } });
    expect(await c.next<ErrorFrame>(isError('down'))).toMatchObject({ code: 'upstream_unavailable' });
  });
});
