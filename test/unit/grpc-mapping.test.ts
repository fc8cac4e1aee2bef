import { describe, expect, it } from 'vitest';
import { Metadata } from '@grpc/grpc-js';
import { callContext, messageFromProto } from '../../adapters/grpc/mapping.js';
import type { MessageIn } from '../../adapters/grpc/proto.js';

function input(fields: Partial<MessageIn>): MessageIn {
  return { key: 'orders/1', payload: Buffer.from('x'), contentType: '', headers: {}, id: '', replyTo: '', correlationId: '', ttlMs: 0, ...fields };
}

function call(entries: Record<string, string>) {
  const metadata = new Metadata();
  for (const [name, value] of Object.entries(entries)) metadata.set(name, value);
  return callContext(metadata, '127.0.0.1:5000', undefined);
}

describe('messageFromProto headers', () => {
  it('gives messages that add nothing the call\'s headers, which nothing can change', () => {
    const context = call({ tenant: 'acme' });
    const first = messageFromProto(input({}), context, 1024, 'a');
    const second = messageFromProto(input({}), context, 1024, 'b');
    expect(first.headers).toEqual({ tenant: 'acme' });
    expect(second.headers).toBe(first.headers);
    expect(Object.isFrozen(first.headers)).toBe(true);
  });

  it('lays a message\'s own headers (lower-cased) and content type over the call\'s, leaving the call\'s as they were', () => {
    const context = call({ tenant: 'acme', zone: 'eu' });
    const message = messageFromProto(input({ headers: { Zone: 'us', Extra: '1' }, contentType: 'application/json' }), context, 1024, 'a');
    expect(message.headers).toEqual({ tenant: 'acme', zone: 'us', extra: '1', 'content-type': 'application/json' });
    expect(context.headers).toEqual({ tenant: 'acme', zone: 'eu' });
  });

  it('keeps a content-type header the message gave over its content type field, and adds the field otherwise', () => {
    expect(messageFromProto(input({ headers: { 'content-type': 'text/plain' }, contentType: 'application/json' }), call({}), 1024, 'a').headers)
      .toEqual({ 'content-type': 'text/plain' });
    expect(messageFromProto(input({ contentType: 'application/json' }), call({ 'content-type-x': 'y' }), 1024, 'a').headers)
      .toEqual({ 'content-type-x': 'y', 'content-type': 'application/json' });
  });
});
