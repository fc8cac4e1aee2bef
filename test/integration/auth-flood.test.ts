/**
 * "Failed logins queue everyone's password checks" (issue 18): a flood of bad credentials from
 * one address costs that address, not the fleet. Before the fix every one of the flood's
 * CONNECTs was hashed, one after the other, ahead of everyone else's.
 */
import { createConnection } from 'node:net';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { hashPassword } from '../../src/auth/password.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { closeClients, connackCode } from '../helpers/mqtt.js';
import { sample, scrape } from '../helpers/prometheus.js';

/** CONNECT, MQTT 3.1.1, clean session, with a username and a password [MQTT-3.1]. */
function connectWithPassword(clientId: string, username: string, password: string): Buffer {
  const field = (text: string) => {
    const bytes = Buffer.from(text, 'utf8');
    return Buffer.concat([Buffer.from([bytes.length >> 8, bytes.length & 0xff]), bytes]);
  };
  const body = Buffer.concat([Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, 0xc2, 0, 60]), field(clientId), field(username), field(password)]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

/** The CONNACK return code a CONNECT from `localAddress` gets (undefined when closed without one). */
function connackFrom(port: number, localAddress: string, packet: Buffer): Promise<number | undefined> {
  return new Promise((resolve) => {
    const socket = createConnection({ port, host: '127.0.0.1', localAddress });
    let answered: number | undefined;
    socket.on('connect', () => socket.write(packet));
    socket.on('data', (data: Buffer) => {
      if (data[0] === 0x20 && data.length >= 4) answered = data[3];
      socket.destroy();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(answered));
  });
}

describe('a flood of bad credentials', () => {
  let gw: TestGateway | undefined;
  let hash = '';

  beforeAll(async () => {
    hash = await hashPassword('right');
  });

  afterEach(async () => {
    await closeClients();
    await gw?.stop();
    gw = undefined;
  });

  it('is hashed at most a few times, backs its address off, and leaves other addresses\' logins alone', async () => {
    gw = await startGateway(`
defaultRoute: publish
auth:
  anonymous: false
  users: [ { username: device, password: "${hash}" } ]
  acl: [ { principal: "*", publish: ["#"] } ]
  backoff: { after: 5, initial: 1m, max: 1m }
  verification: { concurrency: 2, maxPending: 1000, maxPendingPerIp: 8 }
`, undefined, { listeners: ['mqtt'], listenerKeys: { mqtt: 'maxConnectionsPerIp: 1000, connectRate: { rate: 1000, per: 1s, burst: 1000 }' } });
    const flood = Array.from({ length: 200 }, (_, i) => connackFrom(gw!.mqttPort, '127.0.0.2', connectWithPassword(`bad-${i}`, 'device', `guess-${i}`)));
    const legit = connackCode(gw.mqtt, { username: 'device', password: 'right', clientId: 'legit' });
    const codes = await Promise.all(flood);
    expect(await legit).toBe(0);
    // Hashed and refused as bad credentials (4): at most the four failures before the back-off,
    // plus what was running (2) and waiting (8) when the fifth started it; the rest were refused
    // without a hash (3, server unavailable). Before the fix, all 200 were hashed.
    const hashed = codes.filter((code) => code === 4).length;
    expect(hashed).toBeGreaterThanOrEqual(5);
    expect(hashed).toBeLessThanOrEqual(4 + 2 + 8);
    expect(codes.filter((code) => code === 3).length).toBe(200 - hashed);
    // The flooding address now backs off: its guesses are not checked. A password verified
    // before (the device's, just now) is remembered and proves nothing new, so it still works.
    expect(await connackFrom(gw.mqttPort, '127.0.0.2', connectWithPassword('late', 'device', 'another guess'))).toBe(3);
    expect(await connackFrom(gw.mqttPort, '127.0.0.2', connectWithPassword('late', 'device', 'right'))).toBe(0);
    expect(await connackFrom(gw.mqttPort, '127.0.0.3', connectWithPassword('other', 'device', 'wrong'))).toBe(4);
    const scraped = await scrape(gw.admin);
    expect(sample(scraped, 'junction_auth_refusals_total', { reason: 'per_ip_queue_full' }) + sample(scraped, 'junction_auth_refusals_total', { reason: 'backed_off' })).toBe(200 - hashed + 1);
    // The flooder and the address that failed once are remembered.
    expect(sample(scraped, 'junction_auth_backoff_addresses', {})).toBe(2);
  }, 60_000);
});
