import { randomBytes } from 'node:crypto';
import { createConnection } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { adapterCounts, refusals, startGateway, type TestGateway } from '../helpers/gateway.js';
import { payloadBytes, subscribeSse, type SseSubscriber } from '../helpers/sse.js';
import { hashPassword } from '../../src/auth/password.js';

const TRACE_ID = '4bf92f3577b34da6a3ce929d0e0e4736';
const TRACEPARENT = `00-${TRACE_ID}-00f067aa0ba902b7-01`;

interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
}

/** Basic credentials of the one user `gatewayWithAlice` knows. */
const ALICE = { authorization: `Basic ${Buffer.from('alice:s3cret').toString('base64')}` };

/** A gateway that admits only alice (password s3cret) under one ACL rule. */
async function gatewayWithAlice(rule: string): Promise<TestGateway> {
  const hash = await hashPassword('s3cret');
  return startGateway(`
auth:
  anonymous: false
  users:
    - { username: alice, password: "${hash}" }
  acl:
    - ${rule}
`);
}

async function problem(response: Response): Promise<ProblemBody> {
  expect(response.headers.get('content-type')).toMatch(/^application\/problem\+json/);
  return (await response.json()) as ProblemBody;
}

describe('HTTP API', () => {
  let gw: TestGateway | undefined;
  let downstream: Downstream | undefined;
  let sse: SseSubscriber | undefined;

  afterEach(async () => {
    sse?.close();
    await gw?.stop();
    await downstream?.close();
    gw = undefined;
    downstream = undefined;
    sse = undefined;
  });

  it('delivers a POST to an SSE subscriber with the payload unchanged, text and binary', async () => {
    gw = await startGateway('defaultRoute: publish');
    sse = await subscribeSse(gw.http, 'sensors/+/temp');
    const binary = randomBytes(512);

    const text = await fetch(`${gw.http}/v1/messages/sensors/a1/temp`, { method: 'POST', body: '{"c": 21.5}', headers: { 'content-type': 'application/json', 'x-priority': '7' } });
    expect(text.status).toBe(202);
    expect(text.headers.get('content-type')).toBe('application/json; charset=utf-8');
    const answer = await text.text();
    const { id } = JSON.parse(answer) as { id: string };
    expect(answer).toBe(JSON.stringify({ id }));
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-/);
    // A client's own id comes back as it was sent, quotes and backslashes escaped as JSON.
    const labelled = await fetch(`${gw.http}/v1/messages/sensors/b2/temp`, { method: 'POST', body: binary, headers: { 'x-message-id': 'batch "7" \\ a' } });
    expect(await labelled.text()).toBe('{"id":"batch \\"7\\" \\\\ a"}');
    const bin = await fetch(`${gw.http}/v1/messages/sensors/b2/temp`, { method: 'POST', body: binary });
    expect(bin.status).toBe(202);

    await eventually(() => expect(sse!.messages).toHaveLength(3));
    const [first, , second] = sse.messages;
    expect(first).toMatchObject({ id, key: 'sensors/a1/temp', payload: '{"c": 21.5}', contentType: 'application/json', priority: 7 });
    expect(second!.key).toBe('sensors/b2/temp');
    expect(second!.encoding).toBe('base64');
    expect(payloadBytes(second!).equals(binary)).toBe(true);
  });

  it('routes by rule: set priority, {1} substitution, and nothing for non-matching subscribers', async () => {
    gw = await startGateway(`
routes:
  - name: alarms
    match: { key: "devices/+/alarm" }
    set: { priority: 9 }
    to: [{ publish: "alerts/{1}" }]
`);
    sse = await subscribeSse(gw.http, 'alerts/#');
    const other = await subscribeSse(gw.http, 'devices/#');
    const response = await fetch(`${gw.http}/v1/messages/devices/d7/alarm`, { method: 'POST', body: 'smoke', headers: { 'x-priority': '1' } });
    expect(response.status).toBe(202);
    await eventually(() => expect(sse!.messages).toHaveLength(1));
    expect(sse.messages[0]).toMatchObject({ key: 'alerts/d7', payload: 'smoke', priority: 9 });
    // A publish that reached alerts/d7 proves routing happened; devices/# must have seen nothing.
    expect(other.messages).toHaveLength(0);
    other.close();
  });

  it('forwards to a downstream HTTP service byte for byte with the same trace id', async () => {
    downstream = await startDownstream();
    gw = await startGateway(`
targets:
  ingest: { type: http, url: "${downstream.url}/ingest?src=junction", timeout: 2s }
routes:
  - name: telemetry
    match: { key: "devices/+/telemetry" }
    to: [ingest]
`);
    const body = randomBytes(4096);
    const response = await fetch(`${gw.http}/v1/messages/devices/d1/telemetry`, {
      method: 'POST', body, headers: { traceparent: TRACEPARENT, 'content-type': 'application/octet-stream', 'x-tenant': 'acme' },
    });
    expect(response.status).toBe(202);
    const { id } = (await response.json()) as { id: string };
    await eventually(() => expect(downstream!.received).toHaveLength(1));
    const received = downstream.received[0]!;
    expect(received.method).toBe('POST');
    expect(received.url).toBe('/ingest?src=junction');
    expect(received.body.equals(body)).toBe(true);
    expect(received.headers.traceparent).toBe(TRACEPARENT);
    expect(received.headers['x-junction-id']).toBe(id);
    expect(received.headers['x-junction-key']).toBe(encodeURIComponent('devices/d1/telemetry'));
    expect(received.headers['x-tenant']).toBe('acme');
  });

  it('creates a traceparent when the client sends none', async () => {
    downstream = await startDownstream();
    gw = await startGateway(`
targets:
  ingest: { type: http, url: "${downstream.url}/in" }
routes:
  - { name: all, match: { key: "#" }, to: [ingest] }
`);
    await fetch(`${gw.http}/v1/messages/a/b`, { method: 'POST', body: 'x' });
    await eventually(() => expect(downstream!.received).toHaveLength(1));
    expect(downstream.received[0]!.headers.traceparent).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
  });

  it('answers a request with the downstream reply in request mode', async () => {
    downstream = await startDownstream((req, res) => {
      res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ charged: JSON.parse(req.body.toString()).amount }));
    });
    gw = await startGateway(`
targets:
  billing: { type: http, url: "${downstream.url}/charge" }
routes:
  - name: charge
    match: { key: "billing/charge", headers: { content-type: application/json } }
    mode: request
    to: [billing]
`);
    const response = await fetch(`${gw.http}/v1/requests/billing/charge`, { method: 'POST', body: '{"amount": 42}', headers: { 'content-type': 'application/json' } });
    expect(response.status).toBe(201);
    expect(response.headers.get('content-type')).toBe('application/json');
    expect(await response.json()).toEqual({ charged: 42 });
  });

  it('maps downstream failures in request mode to 502 and 504 problems', async () => {
    downstream = await startDownstream((req, res) => {
      if (req.url === '/slow') setTimeout(() => res.writeHead(200).end('late'), 1000);
      else res.writeHead(500).end('boom');
    });
    gw = await startGateway(`
targets:
  broken: { type: http, url: "${downstream.url}/broken" }
  slow: { type: http, url: "${downstream.url}/slow", timeout: 200ms }
routes:
  - { name: broken, match: { key: "rpc/broken" }, mode: request, to: [broken] }
  - { name: slow, match: { key: "rpc/slow" }, mode: request, to: [slow] }
`);
    const broken = await fetch(`${gw.http}/v1/requests/rpc/broken`, { method: 'POST', body: '{}' });
    expect(broken.status).toBe(502);
    expect((await problem(broken)).code).toBe('upstream_unavailable');
    const slow = await fetch(`${gw.http}/v1/requests/rpc/slow`, { method: 'POST', body: '{}' });
    expect(slow.status).toBe(504);
    expect((await problem(slow)).code).toBe('upstream_timeout');
  });

  it('rejects bad input as RFC 9457 problems: 404 no route, 400 bad key, 413 too large', async () => {
    gw = await startGateway(`
limits: { maxPayloadSize: 1kb }
defaultRoute: drop
routes:
  - { name: known, match: { key: "known/#" }, to: [publish] }
`);
    const noRoute = await fetch(`${gw.http}/v1/messages/unknown/key`, { method: 'POST', body: 'x' });
    expect(noRoute.status).toBe(404);
    expect(await problem(noRoute)).toMatchObject({ status: 404, code: 'no_route', type: 'urn:junction:error:no_route' });

    const wildcard = await fetch(`${gw.http}/v1/messages/known/${encodeURIComponent('+')}`, { method: 'POST', body: 'x' });
    expect(wildcard.status).toBe(400);
    expect((await problem(wildcard)).detail).toMatch(/wildcards/);

    const badPriority = await fetch(`${gw.http}/v1/messages/known/a`, { method: 'POST', body: 'x', headers: { 'x-priority': '12' } });
    expect(badPriority.status).toBe(400);
    expect((await problem(badPriority)).detail).toMatch(/priority/);

    const tooLarge = await fetch(`${gw.http}/v1/messages/known/a`, { method: 'POST', body: Buffer.alloc(2048) });
    expect(tooLarge.status).toBe(413);
    expect((await problem(tooLarge)).code).toBe('too_large');

    const fine = await fetch(`${gw.http}/v1/messages/known/a`, { method: 'POST', body: Buffer.alloc(1024) });
    expect(fine.status).toBe(202);

    const badPattern = await fetch(`${gw.http}/v1/subscribe/a/${encodeURIComponent('#')}/b`);
    expect(badPattern.status).toBe(400);
    expect((await problem(badPattern)).code).toBe('bad_request');
  });

  it('answers a key or pattern that is not valid percent-encoding 400 bad_request as a problem naming it, on every API path', async () => {
    gw = await startGateway('defaultRoute: publish');
    const cases = [
      { path: '/v1/messages/k/%zz', init: { method: 'POST', body: 'x' }, names: 'key' },
      { path: '/v1/requests/k/%E0%A4', init: { method: 'POST', body: 'x' }, names: 'key' },
      { path: '/v1/subscribe/k/%C0%80/%23', init: {}, names: 'pattern' },
    ];
    for (const { path, init, names } of cases) {
      const answer = await fetch(`${gw.http}${path}`, init);
      expect(answer.status).toBe(400);
      expect(await problem(answer)).toEqual({
        type: 'urn:junction:error:bad_request', title: 'Malformed input', status: 400, code: 'bad_request',
        detail: `the ${names} in the path is not valid percent-encoding`, field: names, instance: path,
      });
    }
    // Under no API path, the listener still answers with a problem.
    const elsewhere = await fetch(`${gw.http}/v2/%zz`, { method: 'POST', body: 'x' });
    expect(elsewhere.status).toBe(400);
    expect(await problem(elsewhere)).toMatchObject({ code: 'bad_request', instance: '/v2/%zz' });
    expect(refusals(gw.gateway, 'http')).toEqual({ bad_request: 4 });
  });

  it('answers unknown paths 404 and wrong methods 405 with Allow, as problems', async () => {
    gw = await startGateway('defaultRoute: publish');
    const unknown = await fetch(`${gw.http}/v2/things`, { method: 'POST', body: 'x' });
    expect(unknown.status).toBe(404);
    expect(await problem(unknown)).toMatchObject({ status: 404, code: 'not_found' });

    const wrongMethod = await fetch(`${gw.http}/v1/messages/a/b`);
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('POST');
    expect(await problem(wrongMethod)).toMatchObject({ status: 405, code: 'method_not_allowed' });

    const postToSubscribe = await fetch(`${gw.http}/v1/subscribe/a`, { method: 'POST', body: 'x' });
    expect(postToSubscribe.status).toBe(405);
    expect(postToSubscribe.headers.get('allow')).toBe('GET');
    expect(await problem(postToSubscribe)).toMatchObject({ code: 'method_not_allowed' });
    expect(refusals(gw.gateway, 'http')).toEqual({ not_found: 1, method_not_allowed: 2 });
  });

  it('takes a key of 65535 bytes however it is encoded, refuses one byte more, and answers an oversized head 431 as a problem', async () => {
    gw = await startGateway('defaultRoute: publish');
    // Two-byte characters percent-encode to six characters: the longest URL a valid key can need.
    const longest = `k/${'é'.repeat(32766)}x`;
    expect(Buffer.byteLength(longest)).toBe(65535);
    const path = (key: string) => key.split('/').map(encodeURIComponent).join('/');
    sse = await subscribeSse(gw.http, 'k/+');
    const accepted = await fetch(`${gw.http}/v1/messages/${path(longest)}`, { method: 'POST', body: 'long' });
    expect(accepted.status).toBe(202);
    await eventually(() => expect(sse!.messages.map((m) => m.key)).toEqual([longest]));

    const tooLong = await fetch(`${gw.http}/v1/messages/${path(`${longest}y`)}`, { method: 'POST', body: 'x' });
    expect(tooLong.status).toBe(400);
    expect((await problem(tooLong)).detail).toMatch(/at most 65535 bytes/);

    const huge = await fetch(`${gw.http}/v1/messages/k/x`, { method: 'POST', body: 'x', headers: { 'x-big': 'b'.repeat(300_000) } });
    expect(huge.status).toBe(431);
    expect(await problem(huge)).toMatchObject({ status: 431, code: 'too_large' });
    expect(refusals(gw.gateway, 'http')).toEqual({ bad_request: 1, too_large: 1 });
  });

  it('refuses x-qos other than 0 or 1 and an x-expires-in that is not positive', async () => {
    gw = await startGateway('defaultRoute: publish');
    const qos2 = await fetch(`${gw.http}/v1/messages/a/b`, { method: 'POST', body: 'x', headers: { 'x-qos': '2' } });
    expect(qos2.status).toBe(400);
    expect(await problem(qos2)).toMatchObject({ code: 'bad_request', detail: 'x-qos must be 0 or 1' });
    for (const value of ['-5', '0']) {
      const expired = await fetch(`${gw.http}/v1/messages/a/b`, { method: 'POST', body: 'x', headers: { 'x-expires-in': value } });
      expect(expired.status).toBe(400);
      expect((await problem(expired)).detail).toBe('x-expires-in must be a positive number of seconds');
    }
    const fine = await fetch(`${gw.http}/v1/messages/a/b`, { method: 'POST', body: 'x', headers: { 'x-qos': '0', 'x-expires-in': '30' } });
    expect(fine.status).toBe(202);
  });

  it('sends a request to one subscribing responder and times out when none answers', async () => {
    gw = await startGateway('defaultRoute: publish');
    const noResponder = await fetch(`${gw.http}/v1/requests/rpc/echo`, { method: 'POST', body: 'hi' });
    expect(noResponder.status).toBe(404);
    expect((await problem(noResponder)).code).toBe('no_route');

    const bus = gw.gateway.bus;
    const dispatcher = gw.gateway.dispatcher;
    // A responder answers as an adapter would: through the dispatcher, to the request's inbox.
    const subscription = await bus.subscribe('rpc/+', (request) => {
      void dispatcher.dispatch({ ...request, id: `${request.id}-r`, key: request.replyTo!, payload: Buffer.from(`echo:${request.payload.toString()}`), replyTo: undefined });
    }, { responder: true });
    const answered = await fetch(`${gw.http}/v1/requests/rpc/echo`, { method: 'POST', body: 'hi' });
    expect(answered.status).toBe(200);
    expect(await answered.text()).toBe('echo:hi');
    await subscription.close();

    const silent = await bus.subscribe('rpc/+', () => undefined, { responder: true });
    const timedOut = await fetch(`${gw.http}/v1/requests/rpc/echo`, { method: 'POST', body: 'hi', headers: { 'x-timeout-ms': '100' } });
    expect(timedOut.status).toBe(504);
    await silent.close();
  });

  it('caps a sender\'s request timeout by requests.timeout when no rule matches', async () => {
    gw = await startGateway('defaultRoute: publish\nrequests: { timeout: 200ms }');
    const silent = await gw.gateway.bus.subscribe('rpc/+', () => undefined, { responder: true });
    // A 10 s wait asked for; the gateway's 200 ms cap answers long before the client gives up at 5 s.
    const timedOut = await fetch(`${gw.http}/v1/requests/rpc/slow`, {
      method: 'POST', body: 'hi', headers: { 'x-timeout-ms': '10000' }, signal: AbortSignal.timeout(5000),
    });
    expect(timedOut.status).toBe(504);
    expect((await problem(timedOut)).detail).toContain('within 200 ms');
    await silent.close();
  });

  it('authenticates with Basic or Bearer credentials and enforces the ACL on publish and subscribe', async () => {
    gw = await gatewayWithAlice('{ principal: alice, publish: ["devices/{principal}/#"], subscribe: ["devices/{principal}/#"] }');
    const none = await fetch(`${gw.http}/v1/messages/devices/alice/x`, { method: 'POST', body: 'x' });
    expect(none.status).toBe(401);
    expect(none.headers.get('www-authenticate')).toContain('Basic');
    expect((await problem(none)).code).toBe('unauthenticated');
    const wrong = await fetch(`${gw.http}/v1/messages/devices/alice/x`, { method: 'POST', body: 'x', headers: { authorization: 'Bearer alice:nope' } });
    expect(wrong.status).toBe(401);
    expect((await fetch(`${gw.http}/v1/messages/devices/alice/x`, { method: 'POST', body: 'x', headers: ALICE })).status).toBe(202);
    expect((await fetch(`${gw.http}/v1/messages/devices/alice/y`, { method: 'POST', body: 'x', headers: { authorization: 'Bearer alice:s3cret' } })).status).toBe(202);
    const denied = await fetch(`${gw.http}/v1/messages/devices/bob/x`, { method: 'POST', body: 'x', headers: ALICE });
    expect(denied.status).toBe(403);
    expect((await problem(denied)).code).toBe('forbidden');
    const deniedSubscribe = await fetch(`${gw.http}/v1/subscribe/devices/${encodeURIComponent('#')}`, { headers: ALICE });
    expect(deniedSubscribe.status).toBe(403);
  });

  it('takes a body whether it came with its head or after it in parts, and counts a chunked body against the limit either way', async () => {
    gw = await startGateway('limits: { maxPayloadSize: 1kb }\ndefaultRoute: publish');
    sse = await subscribeSse(gw.http, 'parts/#');
    const port = Number(new URL(gw.http).port);
    /** Writes `parts` to a new connection, a turn of the event loop apart, and resolves with the answer's status. */
    const send = async (parts: string[]): Promise<number> => {
      const socket = createConnection(port, '127.0.0.1');
      let answer = '';
      socket.on('data', (chunk: Buffer) => (answer += chunk.toString('latin1')));
      await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
      for (const part of parts) {
        socket.write(part);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await eventually(() => expect(answer).toMatch(/\r\n\r\n/));
      socket.destroy();
      return Number(answer.split(' ')[1]);
    };
    const head = (key: string, framing: string) => `POST /v1/messages/parts/${key} HTTP/1.1\r\nHost: j\r\n${framing}\r\n\r\n`;
    const chunk = (data: string) => `${data.length.toString(16)}\r\n${data}\r\n`;

    expect(await send([head('whole', 'Content-Length: 11') + 'hello world'])).toBe(202);
    expect(await send([head('split', 'Content-Length: 11'), 'hello', ' world'])).toBe(202);
    expect(await send([head('chunked', 'Transfer-Encoding: chunked'), chunk('hello'), chunk(' world'), '0\r\n\r\n'])).toBe(202);
    const big = 'x'.repeat(700);
    expect(await send([head('over', 'Transfer-Encoding: chunked') + chunk(big) + chunk(big) + '0\r\n\r\n'])).toBe(413);
    expect(await send([head('over', 'Transfer-Encoding: chunked'), chunk(big), chunk(big), '0\r\n\r\n'])).toBe(413);

    await eventually(() => expect(sse!.messages.map((m) => [m.key, m.payload])).toEqual([
      ['parts/whole', 'hello world'], ['parts/split', 'hello world'], ['parts/chunked', 'hello world'],
    ]));
    expect(refusals(gw.gateway, 'http')).toEqual({ too_large: 2 });
  });

  it('takes a request its client abandoned mid-body for what it is: counted as aborted, not an internal error, and not logged as one', async () => {
    gw = await startGateway('defaultRoute: publish');
    const errors = vi.spyOn(gw.gateway.logger, 'error');
    const socket = createConnection(Number(new URL(gw.http).port), '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
    socket.write('POST /v1/messages/a/b HTTP/1.1\r\nHost: junction\r\nContent-Length: 1000\r\n\r\nthe first bytes');
    await eventually(() => expect(gw!.gateway.admission.open().http).toBe(1));
    socket.destroy();
    await eventually(() => expect(adapterCounts(gw!.gateway, 'http', ['aborted']).aborted).toBe(1));
    expect(refusals(gw.gateway, 'http')).toEqual({});
    expect(errors).not.toHaveBeenCalled();
  });

  it('lets go of an SSE subscription whose client went away while it was being authenticated', async () => {
    gw = await gatewayWithAlice('{ principal: alice, subscribe: ["devices/#"] }');
    const port = Number(new URL(gw.http).port);
    const request = `GET /v1/subscribe/devices/%23 HTTP/1.1\r\nHost: j\r\nAuthorization: ${ALICE.authorization}\r\n\r\n`;
    for (let i = 0; i < 10; i++) {
      // From addresses of their own, past the listener's connection rate per address.
      const socket = createConnection({ port, host: '127.0.0.1', localAddress: `127.0.0.${i + 10}` });
      socket.on('error', () => undefined);
      await new Promise((resolve) => socket.once('connect', resolve));
      // Gone before the password (scrypt) is checked.
      socket.end(request, () => socket.destroy());
    }
    const live = new AbortController();
    const response = await fetch(`${gw.http}/v1/subscribe/devices/%23`, { headers: ALICE, signal: live.signal });
    expect(response.status).toBe(200);
    try {
      // Their passwords were checked before the live one's: once no check is pending, all ten went through.
      await eventually(() => expect(gw!.gateway.guard.pending).toBe(0));
      await eventually(() => expect(gw!.gateway.connections().http).toBe(1));
      expect(gw.gateway.bus.subscriptionCount).toBe(1);
    } finally {
      live.abort();
    }
  });

  it('lets go of an SSE stream queued behind another on a pipelined connection when the connection closes', async () => {
    gw = await startGateway('defaultRoute: publish');
    const socket = createConnection(Number(new URL(gw.http).port), '127.0.0.1');
    socket.on('error', () => undefined);
    await new Promise((resolve) => socket.once('connect', resolve));
    socket.write('GET /v1/subscribe/a HTTP/1.1\r\nHost: j\r\n\r\nGET /v1/subscribe/b HTTP/1.1\r\nHost: j\r\n\r\n');
    await eventually(() => expect(gw!.gateway.connections().http).toBe(2));
    socket.destroy();
    await eventually(() => expect(gw!.gateway.connections().http).toBe(0));
    expect(gw.gateway.bus.subscriptionCount).toBe(0);
  });
});
