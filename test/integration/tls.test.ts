/**
 * TLS on every listener, proved with real clients: Mosquitto's mosquitto_pub, curl, a wss://
 * client, grpc-js with SSL credentials, mqtt.js, and headless Chromium; mutual TLS naming the
 * principal; certificates renewed in place; bad files refused at start.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect as tlsConnect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { Client, credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import type { Browser } from 'playwright-core';
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from '../helpers/browser.js';
import { fingerprint, makePki, spkiHash, type TestPki } from '../helpers/certs.js';
import { runCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { service, type Ack } from '../helpers/grpc.js';
import { closeClients, connectMqtt, rawConnection, connectPacket, runMosquitto } from '../helpers/mqtt.js';

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['--silent', '--show-error', '--max-time', '10', ...args], (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The SHA-256 fingerprint of the certificate a new TLS connection to `port` is served. */
function servedFingerprint(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: readFileSync(ca), servername: 'localhost' }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.end();
    });
    socket.on('error', reject);
  });
}

describe('TLS on every listener', () => {
  let dir = '';
  let pki: TestPki;
  let gw: TestGateway | undefined;
  let browser: Browser | undefined;
  const grpcClients: Client[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-tls-'));
    pki = makePki(dir);
  });

  afterEach(async () => {
    for (const client of grpcClients.splice(0)) client.close();
    await closeClients();
    await gw?.stop();
    gw = undefined;
  });

  afterAll(async () => {
    await browser?.close();
    await rm(dir, { recursive: true, force: true });
  });

  function tlsKeys(clientCert: 'none' | 'request' | 'require' = 'request'): string {
    return `tls: { cert: "${pki.serverCert}", key: "${pki.serverKey}", ca: "${pki.ca}", clientCert: ${clientCert} }`;
  }

  async function start(clientCert: 'none' | 'request' | 'require' = 'request'): Promise<TestGateway> {
    const keys = tlsKeys(clientCert);
    return startGateway(`
defaultRoute: publish
auth:
  anonymous: true
  acl:
    - { principal: anonymous, publish: ["tls/#"], subscribe: ["tls/#", "+/#"] }
    - { principal: "*", publish: ["{principal}/#"], subscribe: ["{principal}/#"] }
`, undefined, { listeners: ['mqtt', 'grpc'], listenerKeys: { http: keys, admin: `tls: { cert: "${pki.serverCert}", key: "${pki.serverKey}" }`, mqtt: keys, grpc: keys } });
  }

  function grpcTls(address: string, cert?: { cert: string; key: string }): Client {
    const creds = credentials.createSsl(readFileSync(pki.ca), cert ? readFileSync(cert.key) : null, cert ? readFileSync(cert.cert) : null);
    const client = new Client(address, creds, { 'grpc.ssl_target_name_override': 'localhost' });
    grpcClients.push(client);
    return client;
  }

  function grpcPublish(client: Client, key: string, payload: string): Promise<Ack> {
    return new Promise((resolve, reject) => {
      client.makeUnaryRequest(service.Publish.path, service.Publish.requestSerialize, service.Publish.responseDeserialize,
        { key, payload: Buffer.from(payload), qos: 1 }, new Metadata(), {}, (err: ServiceError | null, ack?: Ack) => (err ? reject(err) : resolve(ack!)));
    });
  }

  it('serves MQTT, HTTPS, WSS, gRPC and the admin listener over TLS to real clients', async () => {
    gw = await start();
    const mqttsUrl = `mqtts://127.0.0.1:${gw.mqttPort}`;
    const subscriber = await connectMqtt(mqttsUrl, { ca: readFileSync(pki.ca), servername: 'localhost' });
    await subscriber.client.subscribeAsync('tls/#', { qos: 1 });

    const pub = await runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(gw.mqttPort), '--cafile', pki.ca, '-V', 'mqttv311', '-t', 'tls/mosquitto', '-m', 'from mosquitto_pub', '-q', '1']);
    expect(pub.stderr).toBe('');
    expect(pub.code).toBe(0);

    const https = await curl(['--cacert', pki.ca, '-X', 'POST', '--data', 'from curl', '-w', '%{http_code}', '-o', '/dev/null', `${gw.http}/v1/messages/tls/curl`]);
    expect([https.code, https.stdout, https.stderr]).toEqual([0, '202', '']);

    const wss = new WebSocket(`${gw.http.replace('https', 'wss')}/ws`, { ca: readFileSync(pki.ca) });
    await new Promise((resolve, reject) => { wss.once('open', resolve); wss.once('error', reject); });
    const frames: unknown[] = [];
    wss.on('message', (data: Buffer) => frames.push(JSON.parse(data.toString())));
    wss.send(JSON.stringify({ op: 'subscribe', id: 's', key: 'tls/wss' }));
    await eventually(() => expect(frames).toContainEqual({ op: 'ack', id: 's' }));
    wss.send(JSON.stringify({ op: 'publish', id: 'w', key: 'tls/wss', payload: 'from wss', qos: 1 }));
    // A delivery is written to the TLS socket under the WebSocket, not through ws.
    await eventually(() => expect(frames).toContainEqual(expect.objectContaining({ op: 'message', sub: 's', key: 'tls/wss', payload: 'from wss' })));
    await eventually(() => expect(frames).toContainEqual(expect.objectContaining({ op: 'ack', id: 'w' })));
    wss.close();

    const ack = await grpcPublish(grpcTls(gw.grpc), 'tls/grpc', 'from grpc-js');
    expect(ack.error).toBeNull();

    await eventually(() => expect(subscriber.texts().sort()).toEqual(['from curl', 'from grpc-js', 'from mosquitto_pub', 'from wss']));

    const health = await curl(['--cacert', pki.ca, `${gw.admin}/healthz`]);
    expect([health.code, health.stdout]).toEqual([0, '{"status":"ok"}']);
    // TLS 1.1 and older are refused.
    const old = await curl(['--cacert', pki.ca, '--tls-max', '1.1', `${gw.admin}/healthz`]);
    expect(old.code).not.toBe(0);
  });

  it('names the client by its certificate on mutual TLS, and refuses a certificate the CA did not sign', async () => {
    gw = await start();
    const device = pki.client('device-1');
    const stranger = pki.client('device-1', { untrusted: true });
    const watcher = await connectMqtt(`mqtts://127.0.0.1:${gw.mqttPort}`, { ca: readFileSync(pki.ca), servername: 'localhost', key: readFileSync(device.key), cert: readFileSync(device.cert) });
    await watcher.client.subscribeAsync('device-1/#', { qos: 1 });
    const host = ['-h', '127.0.0.1', '-p', String(gw.mqttPort), '--cafile', pki.ca, '-V', 'mqttv311', '-q', '1'];
    const allowed = await runMosquitto('mosquitto_pub', [...host, '--cert', device.cert, '--key', device.key, '-t', 'device-1/temp', '-m', '21.5']);
    expect(allowed.code).toBe(0);
    await eventually(() => expect(watcher.texts()).toEqual(['21.5']));
    // Its principal is device-1: another device's keys are not its own.
    expect((await runMosquitto('mosquitto_pub', [...host, '--cert', device.cert, '--key', device.key, '-t', 'device-2/temp', '-m', 'x'])).code).toBe(0);
    const refused = await runMosquitto('mosquitto_pub', [...host, '--cert', stranger.cert, '--key', stranger.key, '-t', 'device-1/temp', '-m', 'forged']);
    expect(refused.code).not.toBe(0);

    // HTTPS and gRPC take the certificate the same way.
    const https = await curl(['--cacert', pki.ca, '--cert', device.cert, '--key', device.key, '-X', 'POST', '--data', 'via https', '-w', '%{http_code}', '-o', '/dev/null', `${gw.http}/v1/messages/device-1/https`]);
    expect(https.stdout).toBe('202');
    const denied = await curl(['--cacert', pki.ca, '--cert', device.cert, '--key', device.key, '-X', 'POST', '--data', 'x', '-w', '%{http_code}', '-o', '/dev/null', `${gw.http}/v1/messages/device-2/https`]);
    expect(denied.stdout).toBe('403');
    expect((await grpcPublish(grpcTls(gw.grpc, device), 'device-1/grpc', 'via grpc')).error).toBeNull();
    await eventually(() => expect(watcher.texts()).toEqual(['21.5', 'via https', 'via grpc']));
  });

  it('refuses a client without a certificate where one is required, and counts a plaintext client', async () => {
    gw = await start('require');
    const none = await runMosquitto('mosquitto_pub', ['-h', '127.0.0.1', '-p', String(gw.mqttPort), '--cafile', pki.ca, '-t', 'tls/x', '-m', 'x']);
    expect(none.code).not.toBe(0);
    const plaintext = await rawConnection(gw.mqttPort);
    plaintext.socket.write(connectPacket('plain'));
    await plaintext.closed;
    await eventually(() => expect(gw!.gateway.securityStats().tlsHandshakeFailures.mqtt?.plaintext).toBe(1));
  });

  it('serves a certificate replaced on disk to new connections while open ones stay, and keeps the old one when the new files are bad', async () => {
    gw = await start();
    const before = await servedFingerprint(gw.mqttPort, pki.ca);
    expect(before).toBe(fingerprint(pki.serverCert));
    const open = await connectMqtt(`mqtts://127.0.0.1:${gw.mqttPort}`, { ca: readFileSync(pki.ca), servername: 'localhost' });
    await open.client.subscribeAsync('tls/#', { qos: 1 });
    const wss = new WebSocket(`${gw.http.replace('https', 'wss')}/ws`, { ca: readFileSync(pki.ca) });
    await new Promise((resolve, reject) => { wss.once('open', resolve); wss.once('error', reject); });

    const renewed = pki.renewServer();
    for (const port of [gw.mqttPort, Number(new URL(gw.http).port), Number(gw.grpc.split(':')[1]), Number(new URL(gw.admin).port)]) {
      await eventually(async () => expect(await servedFingerprint(port, pki.ca)).toBe(renewed), 10_000);
    }
    expect(open.client.connected).toBe(true);
    expect(wss.readyState).toBe(WebSocket.OPEN);
    const response = await curl(['--cacert', pki.ca, '-X', 'POST', '--data', 'after renewal', '-o', '/dev/null', `${gw.http}/v1/messages/tls/renewed`]);
    expect(response.code).toBe(0);
    await eventually(() => expect(open.texts()).toEqual(['after renewal']));

    // A key that does not match its certificate is refused; the renewed certificate stays.
    await writeFile(pki.serverKey, readFileSync(pki.client('not-the-server').key));
    gw.gateway.renewCertificates('test');
    expect(await servedFingerprint(gw.mqttPort, pki.ca)).toBe(renewed);
    wss.close();
    pki.renewServer();
  });

  it('lets headless Chromium talk to wss:// with a certificate of the test CA', async () => {
    gw = await start('none');
    browser ??= await launchChromiumTrusting(pki.serverCert);
    const page = await browser.newPage();
    const result = await page.evaluate(async (url) => {
      const socket = new (globalThis as unknown as { WebSocket: new (u: string) => { onopen: () => void; onmessage: (e: { data: string }) => void; onerror: () => void; send(d: string): void } }).WebSocket(url);
      return new Promise<string>((resolve) => {
        socket.onerror = () => resolve('error');
        socket.onopen = () => socket.send(JSON.stringify({ op: 'publish', id: 'b', key: 'tls/browser', payload: 'from chromium', qos: 1 }));
        socket.onmessage = (event) => resolve(event.data);
      });
    }, `${gw.http.replace('https', 'wss')}/ws`);
    expect(JSON.parse(result)).toMatchObject({ op: 'ack', id: 'b' });
    await page.close();
  }, 60_000);

  it('refuses to start with a missing or unusable key file: one line naming the key, exit 1', async () => {
    const config = join(dir, 'bad.yaml');
    const garbage = join(dir, 'garbage.key');
    await writeFile(garbage, 'not a key\n');
    for (const [key, file, expected] of [['key', garbage, 'listeners.mqtt.tls.key'], ['cert', join(dir, 'missing.crt'), 'listeners.mqtt.tls.cert']] as const) {
      const tls = key === 'key' ? `{ cert: "${pki.serverCert}", key: "${file}" }` : `{ cert: "${file}", key: "${pki.serverKey}" }`;
      await writeFile(config, `listeners:\n  mqtt: { host: 127.0.0.1, port: 0, tls: ${tls} }\nauth: { anonymous: true }\ndeadletter: { path: dl.jsonl }\n`);
      const result = await runCli(['start', '-c', config]);
      expect(result.code).toBe(1);
      const lines = result.stderr.trim().split('\n');
      expect(lines.at(-1)).toContain(`${expected}:`);
    }
  });
});

/**
 * Chromium with the test server certificate trusted by its public key (Chromium's own switch
 * for a test CA's leaf); everything else about TLS stays checked.
 */
async function launchChromiumTrusting(certFile: string): Promise<Browser> {
  return launchChromium([`--ignore-certificate-errors-spki-list=${spkiHash(certFile)}`]);
}
