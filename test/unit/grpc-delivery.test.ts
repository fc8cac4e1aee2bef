import { describe, expect, it } from 'vitest';
import { loadSync } from '@grpc/proto-loader';
import type { MethodDefinition } from '@grpc/grpc-js';
import { deliveryBytes } from '../../adapters/grpc/mapping.js';
import { GATEWAY_PROTO, LOADER_OPTIONS, loadGatewayProto, type DeliveryOut } from '../../adapters/grpc/proto.js';
import { createMessage } from '../../src/message.js';

const { service, encodeDelivery } = loadGatewayProto();
/** How a client reads a Delivery: the proto as published, not the gateway's copy of it. */
const subscribe = (loadSync(GATEWAY_PROTO, LOADER_OPTIONS)['junction.v1.Gateway'] as unknown as Record<string, MethodDefinition<unknown, DeliveryOut>>).Subscribe!;
const read = (bytes: Buffer): DeliveryOut => subscribe.responseDeserialize(bytes);

const NOW = 1_800_000_000_000;

function message(expiresAt?: number) {
  return createMessage({
    key: 'orders/eu/1', payload: Buffer.from('{"n":1}'), contentType: 'application/json', headers: { tenant: 'acme' },
    priority: 7, qos: 1, source: { protocol: 'mqtt' }, timestamp: NOW - 5, replyTo: 'replies/1', correlationId: 'c-1',
    ...(expiresAt !== undefined ? { expiresAt } : {}),
  });
}

describe('deliveryBytes', () => {
  it('reads back as the Delivery of the message, with the time left and the drops of this subscriber', () => {
    const m = message(NOW + 300_000);
    expect(read(deliveryBytes(m, 130, NOW, encodeDelivery))).toEqual({
      id: m.id, key: 'orders/eu/1', payload: Buffer.from('{"n":1}'), contentType: 'application/json', headers: { tenant: 'acme' },
      priority: 7, qos: 1, replyTo: 'replies/1', correlationId: 'c-1', traceparent: m.traceparent, timestampMs: NOW - 5,
      ttlMs: 300_000, dropped: 130,
    });
  });

  it('encodes a message once: subscribers with nothing of their own get the same bytes, the others its copy with their fields', () => {
    const m = message();
    const first = deliveryBytes(m, 0, NOW, encodeDelivery);
    expect(deliveryBytes(m, 0, NOW + 10, encodeDelivery)).toBe(first);
    const behind = deliveryBytes(m, 2, NOW, encodeDelivery);
    expect(behind.subarray(0, first.length).equals(first)).toBe(true);
    expect(read(behind)).toMatchObject({ ttlMs: 0, dropped: 2 });
    expect(read(first)).toMatchObject({ ttlMs: 0, dropped: 0 });
  });

  it('counts the time left when each delivery is written', () => {
    const m = message(NOW + 1000);
    expect(read(deliveryBytes(m, 0, NOW, encodeDelivery)).ttlMs).toBe(1000);
    expect(read(deliveryBytes(m, 0, NOW + 999, encodeDelivery)).ttlMs).toBe(1);
  });

  it('lets Subscribe write those bytes as they are, and still encodes a Delivery given as an object', () => {
    const serialize = service.Subscribe!.responseSerialize;
    const bytes = deliveryBytes(message(), 0, NOW, encodeDelivery);
    expect(serialize(bytes)).toBe(bytes);
    expect(read(serialize({ id: 'x', key: 'k' }))).toMatchObject({ id: 'x', key: 'k' });
  });
});
