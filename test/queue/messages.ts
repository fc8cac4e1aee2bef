import { createMessage, type Message, type MessageInit } from '../../src/message.js';

let counter = 0;

/**
 * A QoS 1 message with a payload unique in the run, so records can be told apart; all of the same
 * size unless `init` says otherwise, so byte bounds can be counted in messages.
 */
export function testMessage(init: Partial<MessageInit> = {}): Message {
  const n = String(++counter).padStart(8, '0');
  return createMessage({ key: `devices/d${n}/telemetry`, payload: Buffer.from(`payload ${n}`), qos: 1, source: { protocol: 'mqtt', clientId: 'c1' }, ...init });
}

/** Every field a message can carry, and a payload of every byte value. */
export function fullMessage(): Message {
  return createMessage({
    key: 'sites/zürich/devices/7/alarm',
    payload: Buffer.from(Array.from({ length: 512 }, (_, i) => i % 256)),
    contentType: 'application/octet-stream',
    headers: { 'x-tenant': 'acme', 'x-émoji': '🚨 fire', empty: '' },
    priority: 7,
    qos: 2,
    source: { protocol: 'grpc', clientId: 'billing-7', remoteAddress: '10.0.0.7:51234', principal: 'svc-billing' },
    replyTo: '_inbox/abc',
    correlationId: 'corr-42',
    expiresAt: Date.now() + 60_000,
    retain: true,
  });
}
