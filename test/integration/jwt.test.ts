/**
 * JWTs on every protocol, with keys from a JWKS URL: accepted where they verify, refused with a
 * reason otherwise, and a connection that outlives its token is closed with the protocol's own
 * code.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { ended, GatewayClient, subscribed } from '../helpers/grpc.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connackCode, connectMqtt } from '../helpers/mqtt.js';
import { connectWs, refusedStatus } from '../helpers/ws.js';

interface SigningKey {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}

async function signingKey(kid: string): Promise<SigningKey> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return { kid, privateKey, jwk: { ...await exportJWK(publicKey), kid, alg: 'ES256', use: 'sig' } };
}

describe('JWT credentials', () => {
  let jwks: Server;
  let jwksUrl = '';
  /** what the key set serves now */
  let published: JWK[] = [];
  let k1: SigningKey;
  let k2: SigningKey;
  let gw: TestGateway | undefined;
  const grpcClients: GatewayClient[] = [];

  beforeAll(async () => {
    k1 = await signingKey('k1');
    k2 = await signingKey('k2');
    published = [k1.jwk];
    jwks = createServer((_request, response) => response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys: published })));
    await new Promise<void>((resolve) => jwks.listen(0, '127.0.0.1', resolve));
    jwksUrl = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
  });

  afterEach(async () => {
    for (const client of grpcClients.splice(0)) client.close();
    await closeClients();
    await gw?.stop();
    gw = undefined;
  });

  afterAll(async () => {
    await new Promise((resolve) => jwks.close(resolve));
  });

  async function start(): Promise<TestGateway> {
    return startGateway(`
defaultRoute: publish
auth:
  anonymous: false
  jwt: { jwks: "${jwksUrl}", issuer: https://idp.test, audience: junction, jwksCooldown: 0s, clockTolerance: 0s }
  acl:
    - { role: device, publish: ["tenants/{claim.tenant}/{principal}/#"], subscribe: ["tenants/{claim.tenant}/#"] }
`, undefined, { listeners: ['mqtt', 'grpc'] });
  }

  function token(key: SigningKey, claims: Record<string, unknown> = {}, expiresInSeconds = 300): Promise<string> {
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({ roles: ['device'], tenant: 'acme', ...claims }).setProtectedHeader({ alg: 'ES256', kid: key.kid })
      .setIssuer('https://idp.test').setAudience('junction').setSubject('dev-1').setIssuedAt(now).setExpirationTime(now + expiresInSeconds)
      .sign(key.privateKey);
  }

  it('lets a verified token in on every protocol, with principal, role and claims for the ACL; refuses unknown keys until the set has them', async () => {
    gw = await start();
    const good = await token(k1);
    // MQTT: the token is the CONNECT password; the username is not used.
    const mqtt = await connectMqtt(gw.mqtt, { username: 'jwt', password: good });
    await mqtt.client.subscribeAsync('tenants/acme/#', { qos: 1 });
    const http = await fetch(`${gw.http}/v1/messages/tenants/acme/dev-1/http`, { method: 'POST', body: 'over http', headers: { authorization: `Bearer ${good}` } });
    expect(http.status).toBe(202);
    expect((await fetch(`${gw.http}/v1/messages/tenants/other/dev-1/x`, { method: 'POST', body: 'x', headers: { authorization: `Bearer ${good}` } })).status).toBe(403);
    const ws = await connectWs(gw.http, { protocols: ['junction.v1', `junction.token.${Buffer.from(good).toString('base64url')}`] });
    ws.send({ op: 'publish', id: 'p', key: 'tenants/acme/dev-1/ws', payload: 'over ws', qos: 1 });
    await ws.next((f) => f.op === 'ack');
    const grpc = new GatewayClient(gw.grpc);
    grpcClients.push(grpc);
    expect((await grpc.publish({ key: 'tenants/acme/dev-1/grpc', payload: 'over grpc' }, { metadata: { authorization: `Bearer ${good}` } })).error).toBeNull();
    await eventually(() => expect(mqtt.texts().sort()).toEqual(['over grpc', 'over http', 'over ws']));
    await ws.close();

    // A key the set does not have yet: refused; once published, it is fetched and accepted.
    const rotated = await token(k2);
    expect(await connackCode(gw.mqtt, { username: 'jwt', password: rotated })).toBe(4);
    published = [k1.jwk, k2.jwk];
    expect(await connackCode(gw.mqtt, { username: 'jwt', password: rotated })).toBe(0);
    expect(await refusedStatus(gw.http, { headers: { authorization: `Bearer ${await token(k1, {}, -10)}` } })).toBe(401);
  });

  it('closes connections that outlive their token: MQTT, WebSocket 4401, gRPC streams UNAUTHENTICATED, SSE', async () => {
    gw = await start();
    const short = await token(k1, {}, 2);
    const mqtt = await connectMqtt(gw.mqtt, { username: 'jwt', password: short });
    const mqttClosed = new Promise<void>((resolve) => mqtt.client.once('close', () => resolve()));
    const ws = await connectWs(gw.http, { headers: { authorization: `Bearer ${short}` } });
    const grpc = new GatewayClient(gw.grpc);
    grpcClients.push(grpc);
    const stream = grpc.subscribe('tenants/acme/#', { metadata: { authorization: `Bearer ${short}` } });
    stream.on('error', () => undefined);
    const grpcEnded = ended(stream);
    await subscribed(stream);
    const sse = await fetch(`${gw.http}/v1/subscribe/tenants/acme/%23`, { headers: { authorization: `Bearer ${short}` } });
    expect(sse.status).toBe(200);
    const sseEnded = sse.text();

    await mqttClosed;
    expect(await ws.closed).toEqual({ code: 4401, reason: 'the credential expired' });
    expect((await grpcEnded).code).toBe(GrpcStatus.UNAUTHENTICATED);
    await sseEnded;
    await eventually(() => expect(gw!.gateway.adapterStats().get('mqtt')!.counters.credentialsExpired).toBe(1));
  }, 30_000);
});
