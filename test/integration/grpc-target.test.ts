import { loadSync } from '@grpc/proto-loader';
import {
  Metadata, Server, ServerCredentials, status as Status,
  type sendUnaryData, type ServerUnaryCall, type ServiceDefinition, type StatusObject,
} from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';
import { BILLING_PROTO, failure, GatewayClient } from '../helpers/grpc.js';

const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

interface ChargeRequest {
  account_id: string;
  amount_minor: string;
  currency: string;
  idempotency_key: string;
  description: string;
}

interface Charge {
  request: ChargeRequest;
  metadata: Metadata;
  /** ms the gateway allowed for the call (its deadline), when it set one */
  deadlineMs: number | undefined;
}

type Behaviour = (request: ChargeRequest) => { reply: object } | { error: Partial<StatusObject> } | { delayMs: number; reply: object };

/** A real billing.v1.Billing server (proto/examples/billing.proto) standing in for a downstream service. */
async function startBilling(behaviour: Behaviour): Promise<{ address: string; charges: Charge[]; close(): Promise<void> }> {
  // The downstream's own view of the proto: snake_case, as a service written in another language would see it.
  const definition = loadSync(BILLING_PROTO, { keepCase: true, longs: String, enums: String, defaults: true });
  const server = new Server();
  const charges: Charge[] = [];
  server.addService(definition['billing.v1.Billing'] as ServiceDefinition, {
    Charge: (call: ServerUnaryCall<ChargeRequest, object>, callback: sendUnaryData<object>) => {
      const deadline = call.getDeadline();
      const at = deadline instanceof Date ? deadline.getTime() : deadline;
      charges.push({ request: call.request, metadata: call.metadata, deadlineMs: Number.isFinite(at) ? at - Date.now() : undefined });
      const outcome = behaviour(call.request);
      if ('error' in outcome) callback(outcome.error);
      else if ('delayMs' in outcome) setTimeout(() => callback(null, outcome.reply), outcome.delayMs);
      else callback(null, outcome.reply);
    },
  });
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  return {
    address: `127.0.0.1:${port}`,
    charges,
    close: () => new Promise((resolve) => {
      server.forceShutdown();
      resolve();
    }),
  };
}

/** A port nothing listens on: bind one, note it, release it. */
async function closedPort(): Promise<number> {
  const server = new Server();
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p)));
  });
  server.forceShutdown();
  return port;
}

function config(address: string, extra = ''): string {
  return `
targets:
  billing:
    type: grpc
    address: ${address}
    proto: ${BILLING_PROTO}
    method: billing.v1.Billing/Charge
    timeout: 1s
${extra}
routes:
  - name: charge
    match: { key: "billing/charge" }
    mode: request
    to: [billing]
`;
}

interface Problem {
  code: string;
  status: number;
  detail: string;
  upstreamStatus?: number;
}

describe('grpc target', () => {
  let gw: TestGateway | undefined;
  let billing: Awaited<ReturnType<typeof startBilling>> | undefined;
  let client: GatewayClient | undefined;

  afterEach(async () => {
    client?.close();
    await gw?.stop();
    await billing?.close();
    gw = undefined;
    billing = undefined;
    client = undefined;
  });

  const post = (body: string, headers: Record<string, string> = {}) => fetch(`${gw!.http}/v1/requests/billing/charge`, {
    method: 'POST', body, headers: { 'content-type': 'application/json', ...headers },
  });

  it('turns an HTTP request into a unary call and its reply into JSON', async () => {
    billing = await startBilling((request) => ({ reply: { charge_id: `ch_${request.account_id}`, status: 'STATUS_ACCEPTED' } }));
    gw = await startGateway(config(billing.address));
    const response = await post(JSON.stringify({ account_id: 'acct_42', amountMinor: '1250', currency: 'EUR' }), { traceparent: TRACEPARENT, 'x-tenant': 'acme' });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    // Field names as proto3's JSON mapping writes them; every field present.
    expect(await response.json()).toEqual({ chargeId: 'ch_acct_42', status: 'STATUS_ACCEPTED', reason: '' });
    const [charge] = billing.charges;
    // Both the proto's names (account_id) and their JSON names (amountMinor) are accepted.
    expect(charge!.request).toMatchObject({ account_id: 'acct_42', amount_minor: '1250', currency: 'EUR' });
    expect(charge!.metadata.get('traceparent')).toEqual([TRACEPARENT]);
    expect(charge!.metadata.get('x-junction-id')[0]).toBe(response.headers.get('x-message-id'));
    expect(charge!.metadata.get('x-tenant')).toEqual(['acme']);
    expect(charge!.deadlineMs).toBeGreaterThan(0);
    expect(charge!.deadlineMs).toBeLessThanOrEqual(1000);
  });

  it('refuses to start with a method the proto does not have, naming the key to fix', async () => {
    const start = startGateway(config('127.0.0.1:1').replace('billing.v1.Billing/Charge', 'billing.v1.Billing/Refund'));
    await expect(start).rejects.toThrow(/^targets\.billing\.method: billing\.v1\.Billing\/Refund is not a method in /);
  });

  it('answers a gRPC Request from a gRPC target', async () => {
    billing = await startBilling(() => ({ reply: { charge_id: 'ch_1', status: 'STATUS_DECLINED', reason: 'insufficient funds' } }));
    gw = await startGateway(config(billing.address), undefined, { listeners: ['grpc'] });
    client = new GatewayClient(gw.grpc);
    const reply = await client.request({ key: 'billing/charge', payload: '{"account_id":"a"}', contentType: 'application/json' });
    expect(reply.contentType).toBe('application/json');
    expect(JSON.parse(reply.payload.toString())).toEqual({ chargeId: 'ch_1', status: 'STATUS_DECLINED', reason: 'insufficient funds' });
  });

  it('refuses a payload that is not the request message, without calling the downstream', async () => {
    billing = await startBilling(() => ({ reply: {} }));
    gw = await startGateway(config(billing.address, '    retry: { attempts: 3, backoff: 10ms }'));
    for (const body of ['not json', '[1]', '{"acount_id":"typo"}', '{"amount_minor":"12.5"}', '{"account_id":7}']) {
      const response = await post(body);
      expect(response.status, body).toBe(400);
      expect(((await response.json()) as Problem).code).toBe('bad_request');
    }
    expect(billing.charges).toHaveLength(0);
  });

  it('maps INVALID_ARGUMENT to a non-retryable upstream_unavailable: one call, no retry', async () => {
    billing = await startBilling(() => ({ error: { code: Status.INVALID_ARGUMENT, details: 'currency required' } }));
    gw = await startGateway(config(billing.address, '    retry: { attempts: 3, backoff: 10ms }'));
    const response = await post('{"account_id":"a"}');
    expect(response.status).toBe(502);
    const problem = (await response.json()) as Problem;
    expect(problem).toMatchObject({ code: 'upstream_unavailable', upstreamStatus: Status.INVALID_ARGUMENT });
    expect(problem.detail).toMatch(/INVALID_ARGUMENT: currency required/);
    expect(billing.charges).toHaveLength(1);
  });

  it('retries UNAVAILABLE answers, then reports upstream_unavailable', async () => {
    billing = await startBilling(() => ({ error: { code: Status.UNAVAILABLE, details: 'restarting' } }));
    gw = await startGateway(config(billing.address, '    retry: { attempts: 3, backoff: 10ms }'));
    const response = await post('{"account_id":"a"}');
    expect(response.status).toBe(502);
    expect(((await response.json()) as Problem)).toMatchObject({ code: 'upstream_unavailable', upstreamStatus: Status.UNAVAILABLE });
    expect(billing.charges).toHaveLength(3);
  });

  it('reports a downstream that is not there as upstream_unavailable (UNAVAILABLE over gRPC)', async () => {
    gw = await startGateway(config(`127.0.0.1:${await closedPort()}`), undefined, { listeners: ['grpc'] });
    const response = await post('{"account_id":"a"}');
    expect(response.status).toBe(502);
    expect(((await response.json()) as Problem).code).toBe('upstream_unavailable');
    client = new GatewayClient(gw.grpc);
    const err = await failure(client.request({ key: 'billing/charge', payload: '{}' }));
    expect(err.code).toBe(Status.UNAVAILABLE);
    expect(err.metadata.get('junction-error-code')).toEqual(['upstream_unavailable']);
  });

  it('gives the downstream the target timeout as its deadline and reports a late one as upstream_timeout', async () => {
    billing = await startBilling(() => ({ delayMs: 1000, reply: { charge_id: 'late' } }));
    gw = await startGateway(config(billing.address).replace('timeout: 1s', 'timeout: 200ms'), undefined, { listeners: ['grpc'] });
    const response = await post('{"account_id":"a"}');
    expect(response.status).toBe(504);
    expect(((await response.json()) as Problem).code).toBe('upstream_timeout');
    expect(billing.charges[0]!.deadlineMs).toBeLessThanOrEqual(200);

    // A gRPC caller's shorter deadline is passed down in turn.
    client = new GatewayClient(gw.grpc);
    const err = await failure(client.request({ key: 'billing/charge', payload: '{}' }, { deadline: Date.now() + 100 }));
    expect(err.code).toBe(Status.DEADLINE_EXCEEDED);
    // The caller may give up before the downstream's handler has run: wait for it to record the call.
    await eventually(() => expect(billing!.charges[1]).toBeDefined());
    expect(billing.charges[1]!.deadlineMs).toBeLessThanOrEqual(100);
  });
});
