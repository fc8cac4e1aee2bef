import { randomBytes } from 'node:crypto';
import type { ServerResponse } from 'node:http';
import { constants as http2 } from 'node:http2';
import { createServer, type AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import { Client, credentials, Metadata, status as Status, type ClientReadableStream, type ServiceError } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { protoPath as HEALTH_PROTO } from 'grpc-health-check';
import { afterEach, describe, expect, it } from 'vitest';
import { grpcProtocol } from '../../adapters/grpc/index.js';
import { Registry } from '../../src/registry.js';
import { hashPassword } from '../../src/auth/password.js';
import { loadConfigText } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';
import { silentLogger } from '../../src/log.js';
import { startDownstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { adapterCounts, startGateway, type TestGateway } from '../helpers/gateway.js';
import { ended, failure, GatewayClient, rawCall, service, subscribed, type Ack, type Delivery } from '../helpers/grpc.js';
import { payloadBytes, subscribeSse, type SseSubscriber } from '../helpers/sse.js';

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const REFLECTION_PROTO = createRequire(import.meta.url).resolve('@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto');

/** The gRPC adapter's counters and levels now (docs/grpc.md). */
function grpcStats(gw: TestGateway) {
  return adapterCounts(gw.gateway, 'grpc', ['shed', 'disconnected', 'expired', 'pastDeadline', 'peakBytes', 'subscribers', 'publishStreams']);
}

/** Collects a stream's messages as they come. */
function collect<T>(stream: ClientReadableStream<T>): T[] {
  const items: T[] = [];
  stream.on('data', (item: T) => items.push(item));
  // A stream's end is asserted through its status; errors must not escape as unhandled.
  stream.on('error', () => undefined);
  return items;
}

/** A count once it has not moved for five polls 100 ms apart (ten seconds at most). */
async function steady(count: () => number): Promise<number> {
  let last = count();
  let unchanged = 0;
  for (let poll = 0; poll < 100 && unchanged < 5; poll++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    const now = count();
    unchanged = now === last ? unchanged + 1 : 0;
    last = now;
  }
  if (unchanged < 5) throw new Error(`the count kept moving for ten seconds (last ${last})`);
  return last;
}

describe('gRPC adapter', () => {
  let gw: TestGateway | undefined;
  const clients: { close(): void }[] = [];
  const sses: SseSubscriber[] = [];

  function client(): GatewayClient {
    const c = new GatewayClient(gw!.grpc);
    clients.push(c);
    return c;
  }

  afterEach(async () => {
    for (const sse of sses.splice(0)) sse.close();
    for (const c of clients.splice(0)) c.close();
    await gw?.stop();
    gw = undefined;
  });

  it('Publish: metadata, trace context and fields reach an SSE subscriber; the ack names the id', async () => {
    gw = await startGateway(`
defaultRoute: publish
auth:
  anonymous: true
  users: [{ username: svc, password: "${await hashPassword('pw')}" }]
`, undefined, { listeners: ['grpc'] });
    const sse = await subscribeSse(gw.http, 'sensors/#');
    sses.push(sse);
    const binary = randomBytes(300);
    const ack = await client().publish(
      { key: 'sensors/a1/temp', payload: '{"c":21.5}', contentType: 'application/json', headers: { 'X-Unit': 'celsius' }, priority: 7 },
      { metadata: { traceparent: TRACEPARENT, 'x-tenant': 'acme', authorization: 'Bearer svc:pw' } },
    );
    expect(ack.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7/);
    expect(ack.error).toBeNull();
    const given = await client().publish({ key: 'sensors/b2/raw', payload: binary, id: 'client-id-1', priority: 0 });
    expect(given.id).toBe('client-id-1');

    await eventually(() => expect(sse.messages).toHaveLength(2));
    const [first, second] = sse.messages;
    expect(first).toMatchObject({ id: ack.id, key: 'sensors/a1/temp', payload: '{"c":21.5}', contentType: 'application/json', priority: 7, traceparent: TRACEPARENT });
    expect(first!.headers).toMatchObject({ 'x-tenant': 'acme', 'x-unit': 'celsius', 'content-type': 'application/json' });
    // Credentials, gRPC's own metadata and the user agent are not message headers.
    expect(Object.keys(first!.headers).filter((h) => h === 'authorization' || h.startsWith('grpc-') || h === 'user-agent')).toEqual([]);
    expect(second).toMatchObject({ id: 'client-id-1', key: 'sensors/b2/raw', priority: 0 });
    expect(payloadBytes(second!).equals(binary)).toBe(true);
  });

  it('Publish: refusals are statuses with the error code in the trailers', async () => {
    gw = await startGateway(`
limits: { maxPayloadSize: 1kb }
defaultRoute: drop
routes:
  - { name: known, match: { key: "known/#" }, to: [publish] }
`, undefined, { listeners: ['grpc'] });
    const c = client();
    const badKey = await failure(c.publish({ key: 'known/+/x', payload: 'x' }));
    expect(badKey.code).toBe(Status.INVALID_ARGUMENT);
    expect(badKey.details).toMatch(/wildcards/);
    expect(badKey.metadata.get('junction-error-code')).toEqual(['bad_request']);
    expect(badKey.metadata.get('junction-error-field')).toEqual(['key']);

    const empty = await failure(c.publish({ key: '' }));
    expect(empty.code).toBe(Status.INVALID_ARGUMENT);

    const badPriority = await failure(c.publish({ key: 'known/a', priority: 12 }));
    expect(badPriority.code).toBe(Status.INVALID_ARGUMENT);
    expect(badPriority.metadata.get('junction-error-field')).toEqual(['priority']);

    const tooLarge = await failure(c.publish({ key: 'known/a', payload: Buffer.alloc(1025) }));
    expect(tooLarge.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(tooLarge.metadata.get('junction-error-code')).toEqual(['too_large']);

    const noRoute = await failure(c.publish({ key: 'unknown/a', payload: 'x' }));
    expect(noRoute.code).toBe(Status.NOT_FOUND);
    expect(noRoute.metadata.get('junction-error-code')).toEqual(['no_route']);

    expect((await c.publish({ key: 'known/a', payload: Buffer.alloc(1024) })).id).not.toBe('');
  });

  it('answers a request that is not valid protobuf with INVALID_ARGUMENT, on every method', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc'] });
    // A field tag whose varint never ends.
    const garbage = Buffer.from([0xff, 0xff, 0xff]);
    for (const method of [service.Publish, service.Request, service.Subscribe, service.Ack]) {
      const call = rawCall(gw.grpc, method.path, garbage);
      const trailers = await call.trailers;
      call.close();
      expect(Number(trailers['grpc-status']), method.path).toBe(Status.INVALID_ARGUMENT);
      expect(trailers['junction-error-code'], method.path).toBe('bad_request');
    }
    const stream = rawCall(gw.grpc, service.PublishStream.path, garbage);
    await eventually(() => expect(stream.messages).toHaveLength(1));
    stream.close();
    expect(service.PublishStream.responseDeserialize(stream.messages[0]!)).toMatchObject({ sequence: 1, error: { code: 'bad_request' } });
    expect(gw.gateway.metrics.rejections().grpc).toEqual({ bad_request: 5 });
  });

  it('rejects a message larger than grpc.maxReceiveMessageSize before decoding it', async () => {
    gw = await startGateway('grpc: { maxReceiveMessageSize: 2kb }', undefined, { listeners: ['grpc'] });
    const err = await failure(client().publish({ key: 'a/b', payload: Buffer.alloc(4096) }));
    expect(err.code).toBe(Status.RESOURCE_EXHAUSTED);
  });

  it('PublishStream: one ack per message, errors per message, and the stream goes on', async () => {
    gw = await startGateway(`
limits: { maxPayloadSize: 1kb }
defaultRoute: drop
routes:
  - { name: known, match: { key: "known/#" }, to: [publish] }
`, undefined, { listeners: ['grpc'] });
    const subscriber = client().subscribe('known/#');
    const deliveries = collect(subscriber);
    await subscribed(subscriber);

    const stream = client().publishStream({ metadata: { traceparent: TRACEPARENT } });
    const acks: Ack[] = [];
    stream.on('data', (ack: Ack) => acks.push(ack));
    const status = ended(stream);
    stream.write({ key: 'known/1', payload: 'one', id: 'm1' });
    stream.write({ key: 'known/+', payload: 'bad key' });
    stream.write({ key: 'known/3', payload: Buffer.alloc(2048), id: 'big' });
    stream.write({ key: 'elsewhere', payload: 'no route', id: 'lost' });
    stream.write({ key: 'known/5', payload: 'five', qos: 0 });
    stream.end();

    expect((await status).code).toBe(Status.OK);
    expect(acks).toHaveLength(5);
    const bySequence = new Map(acks.map((a) => [a.sequence, a]));
    expect(bySequence.get(1)).toMatchObject({ id: 'm1', error: null });
    expect(bySequence.get(2)!.error).toMatchObject({ code: 'bad_request', field: 'key' });
    expect(bySequence.get(2)!.id).not.toBe('');
    expect(bySequence.get(3)).toMatchObject({ id: 'big', error: { code: 'too_large' } });
    expect(bySequence.get(4)).toMatchObject({ id: 'lost', error: { code: 'no_route' } });
    expect(bySequence.get(5)!.error).toBeNull();

    await eventually(() => expect(deliveries.map((d) => d.key)).toEqual(['known/1', 'known/5']));
    expect(deliveries[0]).toMatchObject({ id: 'm1', traceparent: TRACEPARENT, qos: 1 });
    expect(deliveries[1]!.id).toBe(bySequence.get(5)!.id);
    expect(deliveries[1]!.qos).toBe(0);
  });

  it('PublishStream: many messages, all acked, each delivered once', async () => {
    gw = await startGateway('grpc: { publishWindow: { messages: 8 } }', undefined, { listeners: ['grpc'] });
    const subscriber = client().subscribe('load/#');
    const deliveries = collect(subscriber);
    await subscribed(subscriber);
    const stream = client().publishStream();
    const acks: Ack[] = [];
    stream.on('data', (ack: Ack) => acks.push(ack));
    const status = ended(stream);
    const total = 2000;
    for (let i = 0; i < total; i++) stream.write({ key: `load/${i % 7}`, payload: Buffer.alloc(100, i % 256), id: `m${i}` });
    stream.end();
    expect((await status).code).toBe(Status.OK);
    expect(acks.filter((a) => a.error === null)).toHaveLength(total);
    expect(new Set(acks.map((a) => a.id)).size).toBe(total);
    await eventually(() => expect(deliveries).toHaveLength(total));
    expect(new Set(deliveries.map((d) => d.id)).size).toBe(total);
  });

  it('PublishStream stops reading while the window of unacked messages is full', async () => {
    const held: ServerResponse[] = [];
    const downstream = await startDownstream((_req, res) => held.push(res));
    try {
      gw = await startGateway(`
grpc: { publishWindow: { messages: 8 } }
targets:
  slow: { type: http, url: "${downstream.url}/slow", timeout: 10s }
routes:
  - { name: slow, match: { key: "slow/#" }, mode: request, timeout: 10s, to: [slow] }
`, undefined, { listeners: ['grpc'] });
      const { counters } = gw.gateway.dispatcher;
      const stream = client().publishStream();
      const acks: Ack[] = [];
      stream.on('data', (ack: Ack) => acks.push(ack));
      const status = ended(stream);
      const total = 200;
      for (let i = 0; i < total; i++) stream.write({ key: `slow/${i}`, payload: 'x' });
      stream.end();
      // Each message waits for the downstream's reply, so 8 are in flight and nothing more is read.
      await eventually(() => expect(held).toHaveLength(8));
      expect(counters.received).toBe(8);
      expect(acks).toHaveLength(0);

      downstream.handler = (_req, res) => res.writeHead(200).end('ok');
      for (const res of held.splice(0)) res.writeHead(200).end('ok');
      expect((await status).code).toBe(Status.OK);
      expect(acks.filter((a) => a.error === null)).toHaveLength(total);
      expect(counters.received).toBe(total);
    } finally {
      await downstream.close();
    }
  });

  it('PublishStream stops reading a client that does not read its acks, and goes on once it does', async () => {
    gw = await startGateway('grpc: { publishWindow: { messages: 8 } }\ndefaultRoute: publish', undefined, { listeners: ['grpc'] });
    const { counters } = gw.gateway.dispatcher;
    const stream = client().publishStream();
    const status = ended(stream);
    const acks: Ack[] = [];
    stream.on('data', (ack: Ack) => acks.push(ack));
    // It reads the first ack and stops: grpc-js buffers 16 more for it, then leaves the rest in HTTP/2.
    stream.once('data', () => stream.pause());
    const total = 5000;
    // Acks echo the ids: at about 130 bytes each, some hundreds fill the client's HTTP/2 window and buffers.
    for (let i = 0; i < total; i++) stream.write({ key: `held/${i}`, payload: 'x', id: `${i}-`.padEnd(120, 'x') });
    stream.end();
    await eventually(() => expect(counters.received).toBeGreaterThan(0));
    const held = await steady(() => counters.received);
    expect(held).toBeLessThan(total / 2);

    stream.resume();
    expect((await status).code).toBe(Status.OK);
    expect(acks.filter((a) => a.error === null)).toHaveLength(total);
    expect(acks.map((a) => a.sequence)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  });

  it('authenticates every call through the shared auth layer and applies its ACL', async () => {
    const hash = await hashPassword('pw');
    gw = await startGateway(`
defaultRoute: publish
auth:
  anonymous: false
  users:
    - { username: svc, password: "${hash}" }
    - { username: worker, password: "${hash}" }
  acl:
    - { principal: svc, publish: ["svc/#", "rpc/#"], subscribe: ["svc/#"] }
    - { principal: worker, subscribe: ["rpc/#"], respond: ["rpc/#"] }
`, undefined, { listeners: ['grpc'] });
    const c = client();
    const svc = { metadata: { authorization: 'Bearer svc:pw' } };
    const basic = { metadata: { authorization: `Basic ${Buffer.from('svc:pw').toString('base64')}` } };

    const anonymous = await failure(c.publish({ key: 'svc/a', payload: 'x' }));
    expect(anonymous.code).toBe(Status.UNAUTHENTICATED);
    expect(anonymous.metadata.get('junction-error-code')).toEqual(['unauthenticated']);
    expect((await failure(c.publish({ key: 'svc/a' }, { metadata: { authorization: 'Bearer svc:wrong' } }))).code).toBe(Status.UNAUTHENTICATED);
    expect((await failure(c.publish({ key: 'svc/a' }, { metadata: { authorization: 'Digest x' } }))).code).toBe(Status.UNAUTHENTICATED);

    expect((await c.publish({ key: 'svc/a', payload: 'x' }, svc)).error).toBeNull();
    expect((await c.publish({ key: 'svc/b', payload: 'x' }, basic)).error).toBeNull();
    const elsewhere = await failure(c.publish({ key: 'other/a', payload: 'x' }, svc));
    expect(elsewhere.code).toBe(Status.PERMISSION_DENIED);
    expect(elsewhere.metadata.get('junction-error-code')).toEqual(['forbidden']);

    const denied = c.subscribe('other/#', svc);
    collect(denied);
    expect((await ended(denied)).code).toBe(Status.PERMISSION_DENIED);
    const unauthenticated = c.subscribe('svc/#');
    collect(unauthenticated);
    expect((await ended(unauthenticated)).code).toBe(Status.UNAUTHENTICATED);

    // PublishStream: the caller is checked once, each message's key against the ACL.
    const refusedStream = c.publishStream();
    refusedStream.on('data', () => undefined);
    refusedStream.on('error', () => undefined);
    const refusedStatus = ended(refusedStream);
    refusedStream.write({ key: 'svc/a' });
    expect((await refusedStatus).code).toBe(Status.UNAUTHENTICATED);
    const stream = c.publishStream(svc);
    const acks: Ack[] = [];
    stream.on('data', (ack: Ack) => acks.push(ack));
    const status = ended(stream);
    stream.write({ key: 'svc/ok', id: 'ok' });
    stream.write({ key: 'other/no', id: 'no' });
    stream.end();
    expect((await status).code).toBe(Status.OK);
    expect(acks.find((a) => a.id === 'ok')!.error).toBeNull();
    expect(acks.find((a) => a.id === 'no')!.error).toMatchObject({ code: 'forbidden' });

    // A responder may answer the requests it is handed, though no rule lets it publish there.
    const worker = { metadata: { authorization: 'Bearer worker:pw' } };
    const responder = c.subscribe('rpc/+', { ...worker, responder: true });
    responder.on('data', (request: Delivery) => {
      void c.publish({ key: request.replyTo, correlationId: request.correlationId, payload: 'pong' }, worker);
    });
    await subscribed(responder);
    expect((await c.request({ key: 'rpc/ping', payload: 'ping' }, svc)).payload.toString()).toBe('pong');
    expect((await failure(c.publish({ key: 'rpc/ping', payload: 'x' }, worker))).code).toBe(Status.PERMISSION_DENIED);
  });

  it('does not route a call whose deadline passed before the gateway read it', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc'] });
    const { counters } = gw.gateway.dispatcher;
    const received = counters.received;
    // Headers and message arrive together with no time left (grpc-timeout 0).
    const call = rawCall(gw.grpc, service.Publish.path, service.Publish.requestSerialize({ key: 'late/a', payload: Buffer.from('late') }), { 'grpc-timeout': '0m' });
    const trailers = await call.trailers;
    call.close();
    expect(Number(trailers['grpc-status'])).toBe(Status.DEADLINE_EXCEEDED);
    expect(counters.received).toBe(received);
  });

  it('Subscribe receives what HTTP publishes; a bad pattern is INVALID_ARGUMENT', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc'] });
    const stream = client().subscribe('devices/+/alarm');
    const deliveries = collect(stream);
    const headers = await subscribed(stream);
    expect(headers.get('junction-subscribed')).toEqual(['devices/+/alarm']);
    const response = await fetch(`${gw.http}/v1/messages/devices/d7/alarm`, {
      method: 'POST', body: 'smoke', headers: { 'content-type': 'text/plain', 'x-priority': '9', traceparent: TRACEPARENT, 'x-expires-in': '60' },
    });
    expect(response.status).toBe(202);
    const { id } = (await response.json()) as { id: string };
    await fetch(`${gw.http}/v1/messages/devices/d7/status`, { method: 'POST', body: 'ignored' });
    await eventually(() => expect(deliveries).toHaveLength(1));
    const delivery = deliveries[0]!;
    expect(delivery).toMatchObject({ id, key: 'devices/d7/alarm', contentType: 'text/plain', priority: 9, qos: 1, traceparent: TRACEPARENT, dropped: 0 });
    expect(delivery.payload.toString()).toBe('smoke');
    expect(delivery.ttlMs).toBeGreaterThan(0);
    expect(delivery.ttlMs).toBeLessThanOrEqual(60_000);
    expect(delivery.timestampMs).toBeGreaterThan(0);

    // Keys are UTF-8; the subscribed header is ASCII, so it carries the pattern percent-encoded.
    const accented = client().subscribe('capteurs/température/#');
    const accentedDeliveries = collect(accented);
    expect((await subscribed(accented)).get('junction-subscribed')).toEqual(['capteurs/temp%C3%A9rature/#']);
    expect((await fetch(`${gw.http}/v1/messages/capteurs/temp%C3%A9rature/salon`, { method: 'POST', body: '19.5' })).status).toBe(202);
    await eventually(() => expect(accentedDeliveries.map((d) => d.key)).toEqual(['capteurs/température/salon']));

    const bad = client().subscribe('devices/#/x');
    collect(bad);
    const status = await ended(bad);
    expect(status.code).toBe(Status.INVALID_ARGUMENT);
    expect(status.metadata.get('junction-error-field')).toEqual(['pattern']);
  });

  it('Request is answered by a gRPC Subscribe responder, and times out or finds no route without one', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc'] });
    const c = client();
    const none = await failure(c.request({ key: 'rpc/echo', payload: 'hi' }));
    expect(none.code).toBe(Status.NOT_FOUND);

    const responder = c.subscribe('rpc/+', { responder: true });
    // A plain subscriber of the same key must not receive requests meant for one responder.
    const bystander = c.subscribe('rpc/+');
    const seenByBystander = collect(bystander);
    await Promise.all([subscribed(responder), subscribed(bystander)]);
    responder.on('data', (request: Delivery) => {
      void c.publish({ key: request.replyTo, correlationId: request.correlationId, payload: `echo:${request.payload.toString()}`, contentType: 'text/plain' });
    });
    const reply = await c.request({ key: 'rpc/echo', payload: 'hi' });
    expect(reply.payload.toString()).toBe('echo:hi');
    expect(reply.contentType).toBe('text/plain');
    expect(reply.id).not.toBe('');
    expect(seenByBystander).toEqual([]);

    const silent = c.subscribe('quiet/+', { responder: true });
    collect(silent);
    await subscribed(silent);
    const timedOut = await failure(c.request({ key: 'quiet/x', payload: 'hi' }, { deadline: Date.now() + 300 }));
    expect(timedOut.code).toBe(Status.DEADLINE_EXCEEDED);
  });

  it('HTTP /v1/requests is answered by a gRPC responder', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc'] });
    const c = client();
    const responder = c.subscribe('calc/double', { responder: true });
    responder.on('data', (request: Delivery) => {
      void c.publish({ key: request.replyTo, correlationId: request.correlationId, payload: String(Number(request.payload.toString()) * 2) });
    });
    await subscribed(responder);
    const response = await fetch(`${gw.http}/v1/requests/calc/double`, { method: 'POST', body: '21' });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe('42');
  });

  it('a subscriber that stops reading is cut off with RESOURCE_EXHAUSTED while gateway memory stays bounded', async () => {
    gw = await startGateway(`
defaultRoute: publish
grpc: { subscriberBuffer: { messages: 256, bytes: 1mb } }
`, undefined, { listeners: ['grpc'] });
    const stats = () => grpcStats(gw!);
    const slow = rawCall(gw.grpc, service.Subscribe.path, service.Subscribe.requestSerialize({ pattern: 'flood/#' }));
    expect((await slow.headers)['junction-subscribed']).toBe('flood/#');
    // Stop reading: the HTTP/2 stream's window closes and the gateway's writes stop completing.
    slow.pause();

    const publisher = client().publishStream();
    publisher.on('data', () => undefined);
    const payload = randomBytes(16 * 1024);
    // 32 MiB: qos 0 telemetry (droppable) with some qos 1 messages that may not be dropped.
    for (let i = 0; i < 2048; i++) {
      if (!publisher.write({ key: `flood/${i % 4}`, payload, qos: i % 8 === 0 ? 1 : 0, priority: i % 10 })) {
        await new Promise((resolve) => publisher.once('drain', resolve));
      }
    }
    publisher.end();
    expect((await ended(publisher)).code).toBe(Status.OK);
    expect(stats().disconnected).toBe(1);
    expect(stats().shed).toBeGreaterThan(0);
    // What the gateway held for the subscriber stayed within its buffer plus a quarter of it in
    // flight (and one payload over, the one that did not fit).
    expect(stats().peakBytes).toBeLessThanOrEqual(1024 * 1024 + 256 * 1024 + payload.length);
    await eventually(() => expect(stats().subscribers).toBe(0));

    // The stream is reset with what it had not read (gRPC clients report RESOURCE_EXHAUSTED);
    // its connection stays open.
    expect(await slow.closedWith).toBe(http2.NGHTTP2_ENHANCE_YOUR_CALM);
    expect(slow.session.closed).toBe(false);
    slow.close();
  });

  it('a slow qos 0 subscriber loses the oldest lowest-priority deliveries and is told how many', async () => {
    gw = await startGateway(`
defaultRoute: publish
grpc: { subscriberBuffer: { messages: 4, bytes: 1mb } }
`, undefined, { listeners: ['grpc'] });
    const stats = () => grpcStats(gw!);
    const slow = rawCall(gw.grpc, service.Subscribe.path, service.Subscribe.requestSerialize({ pattern: 'telemetry/#' }));
    await slow.headers;
    slow.pause();
    const publisher = client().publishStream();
    const acks: Ack[] = [];
    publisher.on('data', (ack: Ack) => acks.push(ack));
    const total = 100;
    for (let i = 0; i < total; i++) publisher.write({ key: 'telemetry/t1', payload: Buffer.alloc(16 * 1024, i), qos: 0, priority: i % 10 });
    publisher.end();
    await ended(publisher);
    expect(acks.filter((a) => a.error === null)).toHaveLength(total);
    expect(stats().shed).toBeGreaterThan(0);

    slow.resume();
    await eventually(() => expect(slow.messages.length + stats().shed).toBe(total));
    const deliveries = slow.messages.map((bytes) => service.Subscribe.responseDeserialize(bytes));
    // Every gap is reported in the delivery after it, and the stream is still open.
    expect(deliveries.reduce((sum, d) => sum + d.dropped, 0)).toBe(stats().shed);
    expect(stats().disconnected).toBe(0);
    expect(stats().subscribers).toBe(1);
    // The buffer kept the highest priority, and those come last.
    expect(deliveries.slice(-4).map((d) => d.priority)).toEqual([9, 9, 9, 9]);
    slow.close();
  });

  it('serves the standard health service: SERVING, then NOT_SERVING while draining', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc'] });
    const health = loadSync(HEALTH_PROTO, { keepCase: false, enums: String, defaults: true });
    const methods = health['grpc.health.v1.Health'] as unknown as Record<'Check' | 'Watch', { path: string; requestSerialize(m: object): Buffer; responseDeserialize(b: Buffer): { status: string } }>;
    const raw = new Client(gw.grpc, credentials.createInsecure());
    clients.push(raw);
    const check = (service: string) => new Promise<string>((resolve, reject) => {
      raw.makeUnaryRequest(methods.Check.path, methods.Check.requestSerialize, methods.Check.responseDeserialize, { service }, new Metadata(), {},
        (err: ServiceError | null, res?: { status: string }) => (err ? reject(err) : resolve(res!.status)));
    });
    expect(await check('')).toBe('SERVING');
    expect(await check('junction.v1.Gateway')).toBe('SERVING');

    const watch = raw.makeServerStreamRequest(methods.Watch.path, methods.Watch.requestSerialize, methods.Watch.responseDeserialize, { service: '' }, new Metadata(), {});
    const statuses = collect(watch);
    await eventually(() => expect(statuses.map((s) => s.status)).toEqual(['SERVING']));
    const stopping = gw.stop();
    await eventually(() => expect(statuses.map((s) => s.status)).toEqual(['SERVING', 'NOT_SERVING']));
    watch.cancel();
    await stopping;
    gw = undefined;
  });

  it('server reflection lists junction.v1.Gateway and describes it', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['grpc'] });
    const reflection = loadSync(REFLECTION_PROTO, { keepCase: false, defaults: true });
    const info = (reflection['grpc.reflection.v1.ServerReflection'] as unknown as Record<string, { path: string; requestSerialize(m: object): Buffer; responseDeserialize(b: Buffer): ReflectionResponse }>).ServerReflectionInfo!;
    interface ReflectionResponse {
      listServicesResponse: { service: { name: string }[] } | null;
      fileDescriptorResponse: { fileDescriptorProto: Buffer[] } | null;
    }
    const raw = new Client(gw.grpc, credentials.createInsecure());
    clients.push(raw);
    const call = raw.makeBidiStreamRequest(info.path, info.requestSerialize, info.responseDeserialize, new Metadata(), {});
    const responses: ReflectionResponse[] = [];
    call.on('data', (r: ReflectionResponse) => responses.push(r));
    call.write({ listServices: '' });
    call.write({ fileContainingSymbol: 'junction.v1.Gateway' });
    await eventually(() => expect(responses).toHaveLength(2));
    call.end();
    const names = responses[0]!.listServicesResponse!.service.map((s) => s.name);
    expect(names).toEqual(expect.arrayContaining(['junction.v1.Gateway', 'grpc.health.v1.Health']));
    const files = responses[1]!.fileDescriptorResponse!.fileDescriptorProto;
    const descriptors = Buffer.concat(files).toString('latin1');
    expect(descriptors).toContain('PublishStream');
    // The published file's own field names, not the camelCase the gateway uses internally.
    expect(descriptors).toContain('content_type');
  });

  it('says which key to change when the gRPC port is taken', async () => {
    const blocker = createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    const { port } = blocker.address() as AddressInfo;
    try {
      const { config } = loadConfigText(`listeners: { grpc: { host: 127.0.0.1, port: ${port} } }`, '');
      await expect(Gateway.start(config, { logger: silentLogger(), registry: new Registry({ protocols: [grpcProtocol] }) }))
        .rejects.toThrow(`listeners.grpc: 127.0.0.1:${port} is already in use; change listeners.grpc.host/port in the config file`);
    } finally {
      await new Promise((resolve) => blocker.close(resolve));
    }
  });

  it('drains on stop: subscriptions end, new calls are refused, publish streams finish what they read', async () => {
    const held: ServerResponse[] = [];
    const downstream = await startDownstream((_req, res) => held.push(res));
    try {
      gw = await startGateway(`
targets:
  slow: { type: http, url: "${downstream.url}/slow", timeout: 10s }
routes:
  - { name: slow, match: { key: "slow/#" }, mode: request, timeout: 10s, to: [slow] }
`, undefined, { listeners: ['grpc'] });
      const subscription = client().subscribe('a/#');
      collect(subscription);
      await subscribed(subscription);
      const subscriptionStatus = ended(subscription);

      const stream = client().publishStream();
      const acks: Ack[] = [];
      stream.on('data', (ack: Ack) => acks.push(ack));
      stream.on('error', () => undefined);
      const streamStatus = ended(stream);
      stream.write({ key: 'slow/1', payload: 'x', id: 'in-flight' });
      await eventually(() => expect(held).toHaveLength(1));

      const stopping = gw.stop();
      expect((await subscriptionStatus).code).toBe(Status.UNAVAILABLE);
      // The stream's message is still in flight, so the server is up and refusing new calls.
      const refused = await failure(client().publish({ key: 'a/b', payload: 'late' }));
      expect(refused.code).toBe(Status.UNAVAILABLE);
      expect(refused.metadata.get('junction-error-code')).toEqual(['overloaded']);

      held.shift()!.writeHead(200).end('ok');
      const status = await streamStatus;
      expect(status.code).toBe(Status.UNAVAILABLE);
      expect(acks).toMatchObject([{ id: 'in-flight', error: null }]);
      await stopping;
      gw = undefined;
    } finally {
      await downstream.close();
    }
  });
});
