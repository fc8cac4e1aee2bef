import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { stopTracing } from '../../src/tracing.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { startGateway, type TestGateway } from '../helpers/gateway.js';

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
}

interface OtlpExport {
  resourceSpans: { scopeSpans: { spans: OtlpSpan[] }[] }[];
}

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const CLIENT_SPAN = 'b7ad6b7169203331';

describe('tracing over OTLP', () => {
  let receiver: Server;
  const spans: OtlpSpan[] = [];
  let gw: TestGateway;
  let downstream: Downstream;

  beforeAll(async () => {
    // An in-process OTLP/HTTP receiver: the exporter posts JSON to /v1/traces.
    receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        if (req.url === '/v1/traces') {
          const body = JSON.parse(Buffer.concat(chunks).toString()) as OtlpExport;
          for (const rs of body.resourceSpans) for (const ss of rs.scopeSpans) spans.push(...ss.spans);
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
    process.env.OTEL_EXPORTER_OTLP_ENDPOINT = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
    process.env.OTEL_BSP_SCHEDULE_DELAY = '50';
    downstream = await startDownstream();
    gw = await startGateway(`
targets:
  ingest: { type: http, url: "${downstream.url}/in" }
routes:
  - { name: traced, match: { key: "traced/#" }, to: [ingest] }
`);
  });

  afterAll(async () => {
    await gw.stop();
    await stopTracing();
    delete process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
    delete process.env.OTEL_BSP_SCHEDULE_DELAY;
    await downstream.close();
    receiver.close();
  });

  it('exports one trace from the client through ingress and routing to the target call, and the downstream joins it', async () => {
    const response = await fetch(`${gw.http}/v1/messages/traced/a`, { method: 'POST', body: 'x', headers: { traceparent: `00-${TRACE_ID}-${CLIENT_SPAN}-01` } });
    expect(response.status).toBe(202);
    await eventually(() => expect(spans.map((s) => s.name)).toEqual(expect.arrayContaining(['junction.ingress http', 'junction.route', 'junction.target ingest'])));
    const byName = new Map(spans.map((s) => [s.name, s]));
    const ingress = byName.get('junction.ingress http')!;
    const route = byName.get('junction.route')!;
    const call = byName.get('junction.target ingest')!;
    for (const span of [ingress, route, call]) expect(span.traceId).toBe(TRACE_ID);
    expect(ingress.parentSpanId).toBe(CLIENT_SPAN);
    expect(route.parentSpanId).toBe(ingress.spanId);
    expect(call.parentSpanId).toBe(ingress.spanId);
    expect(downstream.received[0]!.headers.traceparent).toBe(`00-${TRACE_ID}-${call.spanId}-01`);
  });
});
