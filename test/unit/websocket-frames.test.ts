import { describe, expect, it } from 'vitest';
import { messageFrame, payloadJson } from '../../adapters/websocket/frames.js';
import { OutboundQueue, RESPONSE_PRIORITY, type Outbound } from '../../adapters/websocket/outbound-queue.js';
import { createMessage } from '../../src/message.js';

function item(name: string, priority: number, droppable: boolean, bytes = 100): Outbound {
  return { data: name, bytes, priority, droppable };
}

function drain(queue: OutboundQueue): string[] {
  const out: string[] = [];
  for (let next = queue.shift(); next; next = queue.shift()) out.push(next.data as string);
  return out;
}

describe('OutboundQueue', () => {
  it('sends responses first, then by priority, in arrival order within one', () => {
    const queue = new OutboundQueue();
    for (const [name, priority, droppable] of [['a4', 4, true], ['b9', 9, false], ['c4', 4, false], ['ack', RESPONSE_PRIORITY, false], ['d9', 9, true]] as const) {
      expect(queue.add(item(name, priority, droppable), 10_000)).toEqual({ queued: true, dropped: 0 });
    }
    expect(drain(queue)).toEqual(['ack', 'b9', 'd9', 'a4', 'c4']);
    expect(queue.bytes).toBe(0);
  });

  it('drops qos 0 lowest priority first, oldest first; drops an incoming one that ranks no higher', () => {
    const queue = new OutboundQueue();
    queue.add(item('low-old', 0, true), 300);
    queue.add(item('mid', 5, true), 300);
    queue.add(item('low-new', 0, true), 300);
    expect(queue.add(item('high', 9, true), 300)).toEqual({ queued: true, dropped: 1 });
    expect(queue.add(item('low-incoming', 0, true), 300)).toEqual({ queued: false, dropped: 1 });
    expect(drain(queue)).toEqual(['high', 'mid', 'low-new']);
  });

  it('never drops responses or qos 1: when only they are left, the consumer is too slow', () => {
    const queue = new OutboundQueue();
    queue.add(item('q1', 4, false), 250);
    queue.add(item('q0', 4, true), 250);
    expect(queue.add(item('reply', RESPONSE_PRIORITY, false), 250)).toEqual({ queued: true, dropped: 1 });
    expect(queue.add(item('another', 9, false), 250)).toEqual({ queued: false, dropped: 0 });
    // An empty queue takes one frame whatever its size.
    const empty = new OutboundQueue();
    expect(empty.add(item('huge', 4, false, 10_000), 0)).toEqual({ queued: true, dropped: 0 });
  });
});

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
    const frame = JSON.parse(messageFrame(message, 7).toString()) as Record<string, unknown>;
    expect(frame).toMatchObject({ op: 'message', sub: 7, id: message.id, key: 'k', payload: [1], contentType: 'application/json', qos: 0, priority: 4 });
  });
});
