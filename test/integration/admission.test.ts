/**
 * Admission at accept on every listener: open connections per listener and per address, new
 * connections per second per address; each refusal closes the socket before a byte of protocol
 * and is counted by listener and limit.
 */
import { createConnection, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { sample, scrape } from '../helpers/prometheus.js';

/** A TCP connection, and when the gateway closes it. */
interface Probe {
  socket: Socket;
  closed: Promise<void>;
}

const sockets: Socket[] = [];

async function open(port: number, localAddress = '127.0.0.1'): Promise<Probe> {
  const socket = createConnection({ port, host: '127.0.0.1', localAddress });
  sockets.push(socket);
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve) => socket.once('connect', () => resolve()));
  return { socket, closed };
}

describe('admission at accept', () => {
  let gw: TestGateway | undefined;

  afterEach(async () => {
    for (const socket of sockets.splice(0)) socket.destroy();
    await gw?.stop();
    gw = undefined;
  });

  function port(name: 'mqtt' | 'grpc' | 'http'): number {
    return name === 'mqtt' ? gw!.mqttPort : name === 'grpc' ? Number(gw!.grpc.split(':')[1]) : Number(new URL(gw!.http).port);
  }

  it('limits open connections per address and per listener, on every listener alike', async () => {
    const limits = 'maxConnections: 3, maxConnectionsPerIp: 2';
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['mqtt', 'grpc'], listenerKeys: { mqtt: limits, grpc: limits, http: limits } });
    for (const listener of ['mqtt', 'grpc', 'http'] as const) {
      const first = await open(port(listener));
      await open(port(listener));
      const third = await open(port(listener));
      await third.closed;
      // Another address still gets in, up to the listener's limit.
      await open(port(listener), '127.0.0.2');
      const fifth = await open(port(listener), '127.0.0.3');
      await fifth.closed;
      // A closed connection frees its slot.
      const admission = gw.gateway.admission;
      const refusedSoFar = { ...admission.refusals()[listener] };
      first.socket.destroy();
      await first.closed;
      await eventually(() => expect(admission.open()[listener]).toBe(2));
      await open(port(listener));
      await eventually(() => expect(admission.open()[listener]).toBe(3));
      expect(admission.refusals()[listener]).toEqual(refusedSoFar);
    }
    const scraped = await scrape(gw.admin);
    for (const listener of ['mqtt', 'grpc', 'http']) {
      expect(sample(scraped, 'junction_admission_refusals_total', { listener, limit: 'connections_per_ip' }), listener).toBeGreaterThanOrEqual(1);
      expect(sample(scraped, 'junction_admission_refusals_total', { listener, limit: 'connections' }), listener).toBeGreaterThanOrEqual(1);
    }
  });

  it('limits new connections per second per address', async () => {
    gw = await startGateway('defaultRoute: publish', undefined, { listeners: ['mqtt'], listenerKeys: { mqtt: 'connectRate: { rate: 1, per: 1h, burst: 3 }' } });
    for (let i = 0; i < 3; i++) (await open(gw.mqttPort)).socket.destroy();
    await (await open(gw.mqttPort)).closed;
    // Another address has its own bucket.
    await open(gw.mqttPort, '127.0.0.2');
    await eventually(() => expect(gw!.gateway.admission.open().mqtt).toBe(1));
    expect(sample(await scrape(gw.admin), 'junction_admission_refusals_total', { listener: 'mqtt', limit: 'connect_rate' })).toBe(1);
  });
});
