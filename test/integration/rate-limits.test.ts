import { status as Status } from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { failure, GatewayClient } from '../helpers/grpc.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connectMqtt, mqttStats } from '../helpers/mqtt.js';
import { hashPassword } from '../../src/auth/password.js';

/** A per-client bucket of one message a minute (or a short period, for pacing). */
const LIMITED = (per: string) => `
routes:
  - name: devices
    match: { key: "devices/#" }
    rateLimit: { rate: 1, per: ${per}, burst: 1, scope: client }
    to: [publish]
`;

describe('rate limits per client on gRPC and MQTT (HTTP and WebSocket have their own tests)', () => {
  let gw: TestGateway | undefined;
  const clients: GatewayClient[] = [];

  afterEach(async () => {
    for (const client of clients.splice(0)) client.close();
    await closeClients();
    await gw?.stop();
    gw = undefined;
  });

  it('gRPC: an empty bucket is RESOURCE_EXHAUSTED with rate_limited and a retry delay; another client is unaffected', async () => {
    const hash = await hashPassword('pw');
    gw = await startGateway(`${LIMITED('1m')}
auth:
  users:
    - { username: alice, password: "${hash}" }
    - { username: bob, password: "${hash}" }
  acl: [ { principal: "*", publish: ["#"], subscribe: ["#"] } ]
`, undefined, { listeners: ['grpc'] });
    // grpc-js clients to one address share a connection, so the clients here are told apart by principal.
    const client = new GatewayClient(gw.grpc);
    clients.push(client);
    const as = (user: string) => ({ metadata: { authorization: `Bearer ${user}:pw` } });
    expect((await client.publish({ key: 'devices/a', payload: 'x' }, as('alice'))).error).toBeNull();
    const err = await failure(client.publish({ key: 'devices/a', payload: 'x' }, as('alice')));
    expect(err.code).toBe(Status.RESOURCE_EXHAUSTED);
    expect(err.metadata.get('junction-error-code')).toEqual(['rate_limited']);
    expect(Number(err.metadata.get('junction-retry-after-ms')[0])).toBeGreaterThan(0);
    expect((await client.publish({ key: 'devices/b', payload: 'x' }, as('bob'))).error).toBeNull();
  });

  it('MQTT 3.1.1: a QoS 1 publisher over its bucket is paced by a held PUBACK, nothing is lost, others flow', async () => {
    gw = await startGateway(LIMITED('300ms'), undefined, { listeners: ['mqtt'] });
    const subscriber = await connectMqtt(gw.mqtt);
    await subscriber.client.subscribeAsync('devices/#', { qos: 1 });
    const fast = await connectMqtt(gw.mqtt);
    const other = await connectMqtt(gw.mqtt);
    const sends = [1, 2, 3].map((n) => fast.client.publishAsync('devices/fast', `fast-${n}`, { qos: 1 }));
    await other.client.publishAsync('devices/other', 'other-1', { qos: 1 });
    await Promise.all(sends);
    await eventually(() => expect(subscriber.texts()).toHaveLength(4));
    expect(subscriber.texts().filter((t) => t.startsWith('fast'))).toEqual(['fast-1', 'fast-2', 'fast-3']);
    expect(mqttStats(gw.gateway).held).toBeGreaterThanOrEqual(1);
    expect(mqttStats(gw.gateway).holdTimeouts).toBe(0);
  });
});
