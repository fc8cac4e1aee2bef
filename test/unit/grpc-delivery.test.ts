import { describe, expect, it } from 'vitest';
import { loadSync } from '@grpc/proto-loader';
import type { MethodDefinition } from '@grpc/grpc-js';
import { acceptedAckBytes, deliveryBytes } from '../../adapters/grpc/mapping.js';
import { GATEWAY_PROTO, LOADER_OPTIONS, loadGatewayProto, type DeliveryOut, type PublishAckOut } from '../../adapters/grpc/proto.js';
import { createMessage } from '../../src/message.js';

const { service, encodeDelivery } = loadGatewayProto();
/** How a client reads a Delivery: the proto as published, not the gateway's copy of it. */
const published = loadSync(GATEWAY_PROTO, LOADER_OPTIONS)['junction.v1.Gateway'] as unknown as Record<string, MethodDefinition<unknown, unknown>>;
const read = (bytes: Buffer) => published.Subscribe!.responseDeserialize(bytes) as DeliveryOut;
const readAck = (bytes: Buffer) => published.PublishStream!.responseDeserialize(bytes) as PublishAckOut;

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

describe('acceptedAckBytes', () => {
  it('reads back as the PublishAck of an accepted message', () => {
    expect(readAck(acceptedAckBytes('0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b', 1, false))).toEqual({
      id: '0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b', sequence: 1, error: null, expired: false,
    });
    expect(readAck(acceptedAckBytes('late', 300, true))).toMatchObject({ id: 'late', sequence: 300, expired: true });
  });

  it('keeps ids of any length and characters, and sequences past 2^32', () => {
    const id = `é-${'x'.repeat(200)}-✓`;
    expect(readAck(acceptedAckBytes(id, 2 ** 40 + 3, false))).toMatchObject({ id, sequence: 2 ** 40 + 3 });
    expect(readAck(acceptedAckBytes(id, Number.MAX_SAFE_INTEGER, false)).sequence).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('is what the encoder makes of the same ack, and PublishStream writes those bytes as they are', () => {
    const serialize = service.PublishStream!.responseSerialize;
    const bytes = acceptedAckBytes('m-1', 129, true);
    expect(serialize(bytes)).toBe(bytes);
    expect(bytes.equals(serialize({ id: 'm-1', sequence: 129, expired: true }))).toBe(true);
    expect(readAck(serialize({ id: 'm-2', sequence: 2, error: { code: 'forbidden', message: 'no' }, expired: false })))
      .toMatchObject({ id: 'm-2', error: { code: 'forbidden', message: 'no' } });
  });
});
