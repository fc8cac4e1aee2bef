/**
 * "Responders are whoever subscribes" (issue 18): answering requests needs the ACL's `respond`
 * permission. Before the fix, in the demo config, an anonymous WebSocket client subscribed to
 * `#` was handed half of all requests, and answered them.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { status as GrpcStatus } from '@grpc/grpc-js';
import { parse, stringify } from 'yaml';
import { afterEach, describe, expect, it } from 'vitest';
import type { ErrorFrame, MessageFrame } from '../../src/client/protocol.js';
import { ended, GatewayClient } from '../helpers/grpc.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { connectWs, type WsTestClient } from '../helpers/ws.js';

const DEMO = fileURLToPath(new URL('../../config/gateway.yaml', import.meta.url));

/** config/gateway.yaml's auth, routes and defaultRoute, on the test's own listeners. */
function demoConfig(): string {
  const demo = parse(readFileSync(DEMO, 'utf8')) as Record<string, unknown>;
  return stringify({ auth: demo.auth, routes: demo.routes, defaultRoute: demo.defaultRoute });
}

describe('who may answer requests', () => {
  let gw: TestGateway | undefined;
  const sockets: WsTestClient[] = [];
  const grpcClients: GatewayClient[] = [];

  afterEach(async () => {
    await Promise.all(sockets.splice(0).map((s) => s.close()));
    for (const c of grpcClients.splice(0)) c.close();
    await gw?.stop();
    gw = undefined;
  });

  async function ws(): Promise<WsTestClient> {
    const socket = await connectWs(gw!.http);
    sockets.push(socket);
    return socket;
  }

  it('in the demo config, a subscriber of # is handed no request and cannot become a responder there', async () => {
    gw = await startGateway(demoConfig(), undefined, { listeners: ['grpc'] });
    const eavesdropper = await ws();
    eavesdropper.send({ op: 'subscribe', id: 'all', key: '#' });
    await eavesdropper.next((f) => f.op === 'ack' && f.id === 'all');
    eavesdropper.send({ op: 'subscribe', id: 'claim', key: '#', responder: true });
    expect(await eavesdropper.next<ErrorFrame>((f) => f.op === 'error' && f.id === 'claim')).toMatchObject({ code: 'forbidden' });

    const service = await ws();
    service.send({ op: 'subscribe', id: 's', key: 'rpc/add' });
    await service.next((f) => f.op === 'ack' && f.id === 's');
    service.socket.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString()) as MessageFrame;
      if (frame.op === 'message' && frame.replyTo) service.send({ op: 'publish', key: frame.replyTo, correlationId: frame.correlationId, payload: 'sum' });
    });
    for (let i = 0; i < 6; i++) {
      const response = await fetch(`${gw.http}/v1/requests/rpc/add`, { method: 'POST', body: String(i) });
      expect([response.status, await response.text()]).toEqual([200, 'sum']);
    }
    expect(eavesdropper.frames.filter((f) => f.op === 'message')).toEqual([]);

    // gRPC asks for it explicitly: refused outside rpc/#.
    const client = new GatewayClient(gw.grpc);
    grpcClients.push(client);
    const stream = client.subscribe('#', { responder: true });
    stream.on('error', () => undefined);
    expect((await ended(stream)).code).toBe(GrpcStatus.PERMISSION_DENIED);
  });
});
