import { ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Span, type Tracer } from '@opentelemetry/api';
import type { Logger } from './log.js';

/**
 * OpenTelemetry spans for ingress, the route decision and each target call, exported over OTLP
 * when OTEL_EXPORTER_OTLP_ENDPOINT is set. Otherwise nothing is loaded and every function here
 * returns at its first line: tracing off costs nothing per message.
 */
let tracer: Tracer | undefined;
let shutdownProvider: (() => Promise<void>) | undefined;

export async function startTracing(logger: Logger): Promise<void> {
  if (tracer || !process.env.OTEL_EXPORTER_OTLP_ENDPOINT) return;
  const [{ BasicTracerProvider, BatchSpanProcessor }, { OTLPTraceExporter }, { resourceFromAttributes }] = await Promise.all([
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/resources'),
  ]);
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME ?? 'junction' }),
    spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
  });
  trace.setGlobalTracerProvider(provider);
  tracer = provider.getTracer('junction');
  shutdownProvider = () => provider.shutdown();
  logger.info({ endpoint: process.env.OTEL_EXPORTER_OTLP_ENDPOINT }, 'tracing on: spans go out over OTLP');
}

/** Callers check this before building span names and attributes, so tracing off allocates nothing. */
export function tracingOn(): boolean {
  return tracer !== undefined;
}

export async function stopTracing(): Promise<void> {
  const stop = shutdownProvider;
  tracer = undefined;
  shutdownProvider = undefined;
  trace.disable();
  await stop?.();
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

function contextOf(traceparent: string) {
  const m = TRACEPARENT.exec(traceparent);
  if (!m) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, { traceId: m[1]!, spanId: m[2]!, traceFlags: parseInt(m[3]!, 16) & TraceFlags.SAMPLED, isRemote: true });
}

export function traceparentOf(span: Span): string {
  const c = span.spanContext();
  return `00-${c.traceId}-${c.spanId}-0${c.traceFlags & TraceFlags.SAMPLED}`;
}

/** A span started as a child of the W3C context in `traceparent`; undefined when tracing is off. */
export function startSpan(name: string, traceparent: string, kind: SpanKind, attributes: Record<string, string | number>): Span | undefined {
  if (!tracer) return undefined;
  return tracer.startSpan(name, { kind, attributes }, contextOf(traceparent));
}

export function endSpan(span: Span | undefined, error?: unknown): void {
  if (!span) return;
  if (error !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: error instanceof Error ? error.message : String(error) });
  span.end();
}

export { SpanKind };
