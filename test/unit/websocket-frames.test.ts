import { describe, expect, it } from 'vitest';
import { messageFrame, payloadJson } from '../../adapters/websocket/frames.js';
import { createMessage } from '../../src/message.js';

describe('outbound payloads', () => {
  it('sends JSON content as a JSON value, other UTF-8 as text, the rest as base64', () => {
    expect(payloadJson(Buffer.from('{"a": [1, 2]}'), 'application/json; charset=utf-8')).toBe('"payload":{"a": [1, 2]}');
    expect(payloadJson(Buffer.from('{"a":1}'), 'application/vnd.x+json')).toBe('"payload":{"a":1}');
    expect(payloadJson(Buffer.from('{"a":1}'), undefined)).toBe('"payload":"{\\"a\\":1}"');
    expect(payloadJson(Buffer.from('"just a string"'), 'application/json')).toBe('"payload":"\\"just a string\\""');
    expect(payloadJson(Buffer.from('{broken'), 'application/json')).toBe('"payload":"{broken"');
    expect(payloadJson(Buffer.from([0xff, 0x00]), 'application/json')).toBe('"payload":"/wA=","encoding":"base64"');
  });

  it('builds one frame per message and subscription id, shared by subscribers that chose the same id', () => {
    const message = createMessage({ key: 'k', payload: Buffer.from('[1]'), contentType: 'application/json', source: { protocol: 'internal' } });
    const a = messageFrame(message, 's1');
    expect(messageFrame(message, 's1')).toBe(a);
    const other = messageFrame(message, 7);
    expect(messageFrame(message, 7)).toBe(other);
    const frame = JSON.parse(other.json.toString()) as Record<string, unknown>;
    expect(frame).toMatchObject({ op: 'message', sub: 7, id: message.id, key: 'k', payload: [1], contentType: 'application/json', qos: 0, priority: 4 });
  });

  it('puts a final unmasked text frame header before the JSON, its length in 1, 3 or 9 bytes', () => {
    // JSON lengths on either side of the 16-bit length's limit (RFC 6455 §5.2); no message frame is under 126 bytes.
    for (const [size, lengthBytes] of [[300, [126, 1, 44]], [65535, [126, 0xff, 0xff]], [65536, [127, 0, 0, 0, 0, 0, 1, 0, 0]]] as const) {
      const bare = messageFrame(createMessage({ key: 'k', payload: Buffer.alloc(0), source: { protocol: 'internal' } }), 's').json.length;
      const message = createMessage({ key: 'k', payload: Buffer.alloc(size - bare, 'a'), source: { protocol: 'internal' } });
      const { wire, json } = messageFrame(message, 's');
      expect(json.length).toBe(size);
      expect([...wire.subarray(0, 1 + lengthBytes.length)]).toEqual([0x81, ...lengthBytes]);
      expect(wire.subarray(1 + lengthBytes.length).equals(json)).toBe(true);
    }
  });
});

describe('group frames', () => {
  it('reads a group on subscribe and unsubscribe, and a delivery ack', async () => {
    const { parseFrame } = await import('../../adapters/websocket/frames.js');
    expect(parseFrame({ op: 'subscribe', id: 1, key: 'jobs/#', group: 'w' })).toEqual({ op: 'subscribe', id: 1, key: 'jobs/#', group: 'w' });
    expect(parseFrame({ op: 'unsubscribe', id: 2, key: 'jobs/#', group: 'w' })).toEqual({ op: 'unsubscribe', id: 2, key: 'jobs/#', group: 'w' });
    expect(parseFrame({ op: 'ack', sub: 1, id: 'm-1' })).toEqual({ op: 'ack', sub: 1, id: 'm-1' });
  });

  it('refuses bad group names and incomplete acks, naming the field', async () => {
    const { parseFrame } = await import('../../adapters/websocket/frames.js');
    for (const group of ['', 'a/b', 'a+b', 'a#', 'x'.repeat(129), 5]) {
      expect(() => parseFrame({ op: 'subscribe', id: 1, key: 'k', group })).toThrow(expect.objectContaining({ code: 'bad_request', details: { field: 'group' } }) as Error);
    }
    expect(() => parseFrame({ op: 'ack', id: 'm' })).toThrow(expect.objectContaining({ details: { field: 'sub' } }) as Error);
    expect(() => parseFrame({ op: 'ack', sub: 1 })).toThrow(expect.objectContaining({ details: { field: 'id' } }) as Error);
  });
});
