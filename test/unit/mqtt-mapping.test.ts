import { describe, expect, it } from 'vitest';
import { FixedHeaderScanner } from '../../adapters/mqtt/guard.js';
import {
  correlationDataFromId, correlationIdFromData, messageFromPublish, publishProperties, refusalFor,
} from '../../adapters/mqtt/mapping.js';

const SOURCE = { protocol: 'mqtt' as const, clientId: 'c1', principal: 'dev-1' };
const TRACEPARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

describe('MQTT mapping', () => {
  it('maps a 3.1.1 PUBLISH: topic to key, payload untouched, QoS and retain', () => {
    const payload = Buffer.from([0, 1, 2, 255]);
    const message = messageFromPublish({ topic: 'a/b', payload, qos: 2, retain: true }, SOURCE, 1000);
    expect(message).toMatchObject({ key: 'a/b', qos: 2, retain: true, headers: {}, priority: 4, source: SOURCE, timestamp: 1000 });
    expect(message.payload).toBe(payload);
    expect(message.contentType).toBeUndefined();
    expect(message.expiresAt).toBeUndefined();
  });

  it('maps MQTT 5 properties both ways', () => {
    const message = messageFromPublish({
      topic: 'rpc/charge',
      payload: '{}',
      qos: 1,
      properties: {
        contentType: 'application/json',
        responseTopic: 'replies/c1',
        correlationData: Buffer.from('req-7'),
        messageExpiryInterval: 30,
        userProperties: { Tenant: 'acme', priority: '8', traceparent: TRACEPARENT, tag: ['x', 'y'] },
      },
    }, SOURCE, 1000);
    expect(message).toMatchObject({
      key: 'rpc/charge',
      contentType: 'application/json',
      headers: { tenant: 'acme', tag: 'x, y', 'content-type': 'application/json' },
      priority: 8,
      traceparent: TRACEPARENT,
      replyTo: 'replies/c1',
      correlationId: 'req-7',
      expiresAt: 31_000,
    });
    expect(publishProperties(message, 11_500)).toEqual({
      contentType: 'application/json',
      responseTopic: 'replies/c1',
      correlationData: Buffer.from('req-7'),
      messageExpiryInterval: 20,
      userProperties: { tenant: 'acme', tag: 'x, y', priority: '8', traceparent: TRACEPARENT },
    });
  });

  it('refuses a priority user property that is not 0 to 9', () => {
    expect(() => messageFromPublish({ topic: 'a', payload: '', qos: 0, properties: { userProperties: { priority: 'high' } } }, SOURCE))
      .toThrow(expect.objectContaining({ code: 'bad_request', details: { field: 'priority' } }));
  });

  it('keeps binary correlation data exact through a string correlation id', () => {
    for (const data of [Buffer.from([0xff, 0x00, 0x80]), Buffer.from('base64:looks-encoded'), Buffer.from('plain text')]) {
      const id = correlationIdFromData(data);
      expect(correlationDataFromId(id).equals(data)).toBe(true);
    }
    expect(correlationIdFromData(Buffer.from('plain text'))).toBe('plain text');
    expect(correlationIdFromData(Buffer.from([0xff]))).toBe('base64:_w');
  });

  it('answers router refusals the 3.1.1 way: drop, hold (QoS 1/2) or close', () => {
    expect(refusalFor('no_route', 1)).toBe('drop');
    expect(refusalFor('forbidden', 2)).toBe('drop');
    expect(refusalFor('upstream_timeout', 1)).toBe('drop');
    expect(refusalFor('rate_limited', 1)).toBe('hold');
    expect(refusalFor('overloaded', 2)).toBe('hold');
    expect(refusalFor('overloaded', 0)).toBe('drop');
    expect(refusalFor('too_large', 0)).toBe('close');
    expect(refusalFor('bad_request', 1)).toBe('close');
  });
});

describe('FixedHeaderScanner', () => {
  /** A PUBLISH (QoS 0) with the given payload size, as bytes on the wire. */
  function publish(payloadSize: number): Buffer {
    const body = Buffer.concat([Buffer.from([0, 1, 0x61]), Buffer.alloc(payloadSize)]);
    const length: number[] = [];
    let n = body.length;
    do {
      let byte = n % 128;
      n = Math.floor(n / 128);
      if (n > 0) byte |= 0x80;
      length.push(byte);
    } while (n > 0);
    return Buffer.concat([Buffer.from([0x30, ...length]), body]);
  }

  it('follows packets across chunk boundaries, byte by byte included', () => {
    const stream = Buffer.concat([publish(10), publish(300), Buffer.from([0xc0, 0x00]), publish(20_000)]);
    const whole = new FixedHeaderScanner(30_000);
    expect(whole.scan(stream)).toBeUndefined();
    const bytewise = new FixedHeaderScanner(30_000);
    const flagged: number[] = [];
    for (let i = 0; i < stream.length; i++) if (bytewise.scan(stream.subarray(i, i + 1)) !== undefined) flagged.push(i);
    expect(flagged).toEqual([]);
  });

  it('flags a packet over the limit at its header, counting the header itself', () => {
    const packet = publish(200);
    expect(new FixedHeaderScanner(packet.length).scan(packet)).toBeUndefined();
    const scanner = new FixedHeaderScanner(packet.length - 1);
    expect(scanner.scan(packet.subarray(0, 2))).toBeUndefined();
    expect(scanner.scan(packet.subarray(2, 3))).toBe('too_large');
  });

  it('flags a Remaining Length of more than four bytes as malformed', () => {
    expect(new FixedHeaderScanner(Number.MAX_SAFE_INTEGER).scan(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toBe('malformed');
  });
});
