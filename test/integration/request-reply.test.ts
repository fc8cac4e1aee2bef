/**
 * Request/reply across the protocols (issue 16): every requester (HTTP, WebSocket, gRPC, MQTT)
 * against every responder (WebSocket, gRPC, MQTT; HTTP has no responder side), each answered;
 * and each requester told, in its protocol's terms, when nobody answers in time or nobody is
 * there to answer. MQTT 3.1.1 carries the reply address in the topic (docs/mqtt.md).
 */
import type { ServiceError } from '@grpc/grpc-js';
import { status as GrpcStatus } from '@grpc/grpc-js';
import type { MqttClient } from 'mqtt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MessageFrame, ReplyFrame, ErrorFrame } from '../../src/client/protocol.js';
import { eventually } from '../helpers/eventually.js';
import { closeClients, connectMqtt, mqttStats, subscribeCodes, type TestClient } from '../helpers/mqtt.js';
import { GatewayClient, subscribed, type Delivery } from '../helpers/grpc.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

const RESPONDERS = ['ws', 'grpc', 'mqtt'] as const;

/** What a requester got: the answer's text, or the error code its protocol gave. */
type Outcome = { answer: string } | { code: string };

describe('request/reply between every pair of protocols', () => {
  let gw: TestGateway;
  let grpc: GatewayClient;
  let wsResponder: WsTestClient;
  let wsRequester: WsTestClient;
  let mqttResponder: TestClient;
  let mqttRequester: TestClient;
  let grpcResponder: ReturnType<GatewayClient['subscribe']>;

  beforeAll(async () => {
    gw = await startGateway('requests: { timeout: 1s }\ndefaultRoute: publish', undefined, { listeners: ['grpc', 'mqtt'] });
    grpc = new GatewayClient(gw.grpc);

    // Each responder answers `<protocol>:<request>` on rpc/<protocol>; rpc/silent is answered by nobody.
    wsResponder = await connectWs(gw.http);
    wsResponder.send({ op: 'subscribe', id: 's', key: 'rpc/ws', responder: true });
    wsResponder.send({ op: 'subscribe', id: 'q', key: 'rpc/silent', responder: true });
    await wsResponder.next((f) => f.op === 'ack' && f.id === 's');
    await wsResponder.next((f) => f.op === 'ack' && f.id === 'q');
    wsResponder.socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as MessageFrame;
      if (frame.op === 'message' && frame.key === 'rpc/ws' && frame.replyTo) {
        wsResponder.send({ op: 'publish', key: frame.replyTo, correlationId: frame.correlationId, payload: `ws:${String(frame.payload)}` });
      }
    });

    grpcResponder = grpc.subscribe('rpc/grpc', { responder: true });
    grpcResponder.on('data', (d: Delivery) => {
      void grpc.publish({ key: d.replyTo, correlationId: d.correlationId, payload: Buffer.from(`grpc:${d.payload.toString()}`) });
    });
    await subscribed(grpcResponder);

    mqttResponder = await connectMqtt(gw.mqtt);
    // A plain subscription beside the responder's: it gets messages, never requests.
    await mqttResponder.client.subscribeAsync({ '_inbox/+/rpc/mqtt': { qos: 1 }, 'rpc/mqtt': { qos: 1 } });
    mqttResponder.client.on('message', (topic, payload) => {
      // `_inbox/<token>/<key>`: the answer goes to the first two levels
      const [prefix, token, ...key] = topic.split('/');
      if (prefix === '_inbox' && key.join('/') === 'rpc/mqtt' && token) void mqttResponder.client.publishAsync(`_inbox/${token}`, `mqtt:${payload.toString()}`, { qos: 1 });
    });

    wsRequester = await connectWs(gw.http);
    mqttRequester = await connectMqtt(gw.mqtt);
  });

  afterAll(async () => {
    grpcResponder.cancel();
    grpc.close();
    await wsResponder.close();
    await wsRequester.close();
    await closeClients();
    await gw.stop();
  });

  let seq = 0;
  const requesters: Record<string, (key: string, payload: string) => Promise<Outcome>> = {
    async http(key, payload) {
      const response = await fetch(`${gw.http}/v1/requests/${key}`, { method: 'POST', body: payload });
      const body = await response.text();
      return response.status === 200 ? { answer: body } : { code: (JSON.parse(body) as { code: string }).code };
    },
    async ws(key, payload) {
      const id = `r${seq++}`;
      wsRequester.send({ op: 'request', id, key, payload });
      const frame = await wsRequester.next<ReplyFrame | ErrorFrame>((f) => (f.op === 'reply' || f.op === 'error') && f.id === id);
      return frame.op === 'reply' ? { answer: String(frame.payload) } : { code: frame.code };
    },
    async grpc(key, payload) {
      try {
        return { answer: (await grpc.request({ key, payload })).payload.toString() };
      } catch (err) {
        return { code: grpcCodes[(err as ServiceError).code] ?? String((err as ServiceError).code) };
      }
    },
    async mqtt(key, payload) {
      const id = `m${seq++}`;
      const answered = replyOn(mqttRequester.client, id);
      await mqttRequester.client.publishAsync(`_request/${id}/${key}`, payload, { qos: 1 });
      return answered;
    },
  };

  for (const requester of Object.keys(requesters)) {
    for (const responder of RESPONDERS) {
      it(`${requester} asks, ${responder} answers`, async () => {
        expect(await requesters[requester]!(`rpc/${responder}`, `${requester}-question`)).toEqual({ answer: `${responder}:${requester}-question` });
      });
    }

    it(`${requester} asks where nobody answers in time: upstream_timeout; where nobody listens: no_route`, async () => {
      expect(await requesters[requester]!('rpc/silent', 'hello?')).toEqual({ code: 'upstream_timeout' });
      expect(await requesters[requester]!('rpc/nobody', 'hello?')).toEqual({ code: 'no_route' });
    });
  }

  it('an MQTT responder is handed requests, not the messages published on its filter', async () => {
    const before = mqttResponder.messages.length;
    expect((await fetch(`${gw.http}/v1/messages/rpc/mqtt`, { method: 'POST', body: 'plain' })).status).toBe(202);
    await eventually(() => expect(mqttResponder.messages.slice(before).map((m) => m.payload.toString())).toEqual(['plain']));
    expect(mqttResponder.messages[before]!.topic).toBe('rpc/mqtt');
    const handed = mqttStats(gw.gateway).requestsHanded;
    expect(await requesters.http!('rpc/mqtt', 'counted')).toEqual({ answer: 'mqtt:counted' });
    expect(mqttStats(gw.gateway).requestsHanded).toBe(handed + 1);
  });

  it('an MQTT subscription may answer requests only where the ACL says respond', async () => {
    const restricted = await startGateway([
      'auth: { anonymous: true, acl: [ { principal: anonymous, publish: ["#"], subscribe: ["#"], respond: ["rpc/#"] } ] }',
      'defaultRoute: publish',
    ].join('\n'), undefined, { listeners: ['mqtt'] });
    try {
      const client = await connectMqtt(restricted.mqtt);
      expect(await subscribeCodes(client.client, { '_inbox/+/rpc/#': { qos: 1 }, '_inbox/+/other/#': { qos: 1 }, '#': { qos: 0 } })).toEqual([1, 0x80, 0]);
      client.client.on('message', (topic) => {
        if (topic.startsWith('_inbox/')) void client.client.publishAsync(topic.split('/').slice(0, 2).join('/'), 'yes');
      });
      expect((await fetch(`${restricted.http}/v1/requests/rpc/x`, { method: 'POST', body: '?' })).status).toBe(200);
      expect((await fetch(`${restricted.http}/v1/requests/other/x`, { method: 'POST', body: '?' })).status).toBe(404);
    } finally {
      await restricted.stop();
    }
  });

  it('an MQTT responder with a persistent session answers again once it resumes, and not while away', async () => {
    const options = { clientId: 'persistent-responder', clean: false };
    const first = await connectMqtt(gw.mqtt, options);
    await first.client.subscribeAsync('_inbox/+/rpc/persistent', { qos: 1 });
    await first.client.endAsync();
    expect(await requesters.http!('rpc/persistent', '?')).toEqual({ code: 'no_route' });
    const resumed = await connectMqtt(gw.mqtt, options);
    expect(resumed.sessionPresent).toBe(true);
    resumed.client.on('message', (topic, payload) => {
      void resumed.client.publishAsync(topic.split('/').slice(0, 2).join('/'), `resumed:${payload.toString()}`);
    });
    await eventually(async () => expect(await requesters.http!('rpc/persistent', '?')).toEqual({ answer: 'resumed:?' }));
  });

  it('an MQTT answer to an inbox it was not handed, or a second answer, is dropped', async () => {
    const intruder = await connectMqtt(gw.mqtt);
    let inbox = '';
    const stolen = new Promise<void>((resolve) => {
      mqttResponder.client.once('message', (topic) => {
        inbox = topic.split('/').slice(0, 2).join('/');
        resolve();
      });
    });
    const pending = requesters.http!('rpc/mqtt', 'once');
    await stolen;
    expect(await pending).toEqual({ answer: 'mqtt:once' });
    // The responder's answer was taken; another answer, from anyone, settles nothing and reaches nobody.
    const refusedBefore = mqttStats(gw.gateway).refused.forbidden ?? 0;
    await intruder.client.publishAsync(inbox, 'late', { qos: 1 });
    await mqttResponder.client.publishAsync(inbox, 'again', { qos: 1 });
    await eventually(() => expect(mqttStats(gw.gateway).refused.forbidden).toBe(refusedBefore + 2));
  });

  it('an MQTT request with a malformed key or one it may not send is answered on _reply/<id>/error', async () => {
    const id = `bad${seq++}`;
    const answered = replyOn(mqttRequester.client, id);
    await mqttRequester.client.publishAsync(`_request/${id}/$SYS/x`, 'x', { qos: 1 });
    expect(await answered).toEqual({ code: 'forbidden' });
    const empty = `empty${seq++}`;
    const answeredEmpty = replyOn(mqttRequester.client, empty);
    await mqttRequester.client.publishAsync(`_request/${empty}`, 'x', { qos: 0 });
    expect(await answeredEmpty).toEqual({ code: 'bad_request' });
  });

  it('requests and answers stay out of every subscriber of #', async () => {
    const watcher = await connectMqtt(gw.mqtt);
    await watcher.client.subscribeAsync('#', { qos: 1 });
    const socket = await connectWs(gw.http);
    socket.send({ op: 'subscribe', id: 'all', key: '#', responder: false });
    await socket.next((f) => f.op === 'ack' && f.id === 'all');
    expect(await requesters.mqtt!('rpc/ws', 'private')).toEqual({ answer: 'ws:private' });
    expect(await requesters.ws!('rpc/mqtt', 'private')).toEqual({ answer: 'mqtt:private' });
    // a marker published after both requests shows the watchers are caught up
    expect((await fetch(`${gw.http}/v1/messages/marker`, { method: 'POST', body: 'm' })).status).toBe(202);
    await eventually(() => expect(watcher.texts()).toContain('m'));
    await socket.next((f) => f.op === 'message' && f.key === 'marker');
    expect(watcher.texts()).toEqual(['m']);
    expect(socket.frames.filter((f) => f.op === 'message').map((f) => (f as MessageFrame).key)).toEqual(['marker']);
    await socket.close();
  });
});

const grpcCodes: Record<number, string> = {
  [GrpcStatus.DEADLINE_EXCEEDED]: 'upstream_timeout',
  [GrpcStatus.NOT_FOUND]: 'no_route',
};

/** The answer an MQTT requester gets for request `id`: on `_reply/<id>`, or a failure on `_reply/<id>/error`. */
function replyOn(client: MqttClient, id: string): Promise<Outcome> {
  return new Promise((resolve) => {
    const listener = (topic: string, payload: Buffer) => {
      if (topic === `_reply/${id}`) resolve({ answer: payload.toString() });
      else if (topic === `_reply/${id}/error`) resolve({ code: (JSON.parse(payload.toString()) as { code: string }).code });
      else return;
      client.off('message', listener);
    };
    client.on('message', listener);
  });
}
