import type { ServerResponse } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { refusals, startGateway, type TestGateway } from '../helpers/gateway.js';

let gw: TestGateway | undefined;
let downstream: Downstream | undefined;

afterEach(async () => {
  await gw?.stop();
  await downstream?.close();
  gw = undefined;
  downstream = undefined;
});

describe('HTTP under overload', () => {
  it('answers 503 overloaded with Retry-After, before reading the body, while limits.maxInflight dispatches are under way', async () => {
    // A downstream that answers only when the test says: each request to it is a dispatch under way.
    const held: ServerResponse[] = [];
    downstream = await startDownstream((_request, response) => held.push(response));
    gw = await startGateway(`
limits: { maxInflight: 2 }
targets:
  svc: { type: http, url: "${downstream.url}/svc", timeout: 30s }
routes:
  - { name: svc, match: { key: "svc/#" }, mode: request, timeout: 30s, to: [svc] }
defaultRoute: publish
`);
    const requests = [1, 2].map((i) => fetch(`${gw!.http}/v1/requests/svc/${i}`, { method: 'POST', body: `q${i}` }));
    await eventually(() => expect(held).toHaveLength(2));

    // Over limits.maxPayloadSize (1mb): a body read first would have been refused as too_large.
    // A request with no body at all is refused as well.
    for (const body of [Buffer.alloc(2 * 1024 * 1024), undefined]) {
      for (const path of ['/v1/messages/other', '/v1/requests/svc/3']) {
        const refused = await fetch(`${gw.http}${path}`, { method: 'POST', body });
        expect(refused.status).toBe(503);
        expect(refused.headers.get('retry-after')).toBe('1');
        expect(((await refused.json()) as { code: string }).code).toBe('overloaded');
      }
    }
    // A path that takes nothing is still answered for what it is.
    expect((await fetch(`${gw.http}/v1/nowhere`, { method: 'POST', body: 'x' })).status).toBe(404);
    expect(downstream.received).toHaveLength(2);
    expect(refusals(gw.gateway, 'http').overloaded).toBe(4);

    for (const response of held) response.writeHead(200).end('answer');
    expect((await Promise.all(requests)).map((r) => r.status)).toEqual([200, 200]);
    expect((await fetch(`${gw.http}/v1/messages/other`, { method: 'POST', body: 'x' })).status).toBe(202);
  });
});
