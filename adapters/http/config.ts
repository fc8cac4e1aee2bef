import { Type, type StaticDecode } from '@sinclair/typebox';
import { Default, Duration, Size, strict, type ConfigSection } from '../../src/index.js';

/** The `sse:` section of gateway.yaml: Server-Sent Events subscribers on listeners.http. */
const SseSchema = Type.Object({
  maxOutboundBuffer: Default(Size('bytes waiting to be sent to one SSE stream; past it qos 0 deliveries to it are dropped, and a qos 1 delivery closes it'), '1mb'),
  drainTimeout: Default(Duration('an SSE stream whose connection stays full this long is closed'), '30s'),
}, { ...strict, description: 'Server-Sent Events subscribers (GET /v1/subscribe/<pattern>); limits apply to deliveries at once after a reload.' });

export type SseSettings = StaticDecode<typeof SseSchema>;

export const sseSection: ConfigSection<SseSettings> = { key: 'sse', schema: SseSchema };
