import { describe, expect, it } from 'vitest';
import { DeliveryBuffer } from '../../adapters/grpc/delivery-buffer.js';
import { createMessage, type Message } from '../../src/index.js';

function message(id: string, priority: number, qos: 0 | 1, size = 10): Message {
  return createMessage({ id, key: 'k', payload: Buffer.alloc(size), priority, qos, source: { protocol: 'internal' } });
}

function drain(buffer: DeliveryBuffer): string[] {
  const ids: string[] = [];
  for (let m = buffer.shift(); m !== undefined; m = buffer.shift()) ids.push(m.id);
  return ids;
}

describe('DeliveryBuffer', () => {
  it('gives deliveries back in arrival order across priorities and qos', () => {
    const buffer = new DeliveryBuffer({ messages: 10, bytes: 1000 });
    for (const [id, p, q] of [['a', 5, 0], ['b', 1, 1], ['c', 9, 0], ['d', 1, 0]] as const) buffer.add(message(id, p, q));
    expect(buffer.size).toBe(4);
    expect(buffer.bytes).toBe(40);
    expect(drain(buffer)).toEqual(['a', 'b', 'c', 'd']);
    expect(buffer.bytes).toBe(0);
  });

  it('when full, drops the oldest qos 0 delivery of the lowest priority', () => {
    const buffer = new DeliveryBuffer({ messages: 3, bytes: 1000 });
    buffer.add(message('p5-old', 5, 0));
    buffer.add(message('p2-old', 2, 0));
    buffer.add(message('p2-new', 2, 0));
    expect(buffer.add(message('p7', 7, 0))).toEqual({ ok: true, dropped: 1 });
    expect(drain(buffer)).toEqual(['p5-old', 'p2-new', 'p7']);
  });

  it('drops an incoming qos 0 delivery below everything buffered, and never a qos 1 one', () => {
    const buffer = new DeliveryBuffer({ messages: 2, bytes: 1000 });
    buffer.add(message('q1', 0, 1));
    buffer.add(message('p6', 6, 0));
    expect(buffer.add(message('p3', 3, 0))).toEqual({ ok: false, droppedIncoming: true });
    // A qos 1 delivery makes room by dropping the qos 0 one, whatever its priority.
    expect(buffer.add(message('q1b', 0, 1))).toEqual({ ok: true, dropped: 1 });
    // Now only qos 1 is left: a qos 0 newcomer is dropped, a qos 1 one cannot be taken.
    expect(buffer.add(message('p9', 9, 0))).toEqual({ ok: false, droppedIncoming: true });
    expect(buffer.add(message('q1c', 9, 1))).toEqual({ ok: false, droppedIncoming: false });
    expect(drain(buffer)).toEqual(['q1', 'q1b']);
  });

  it('bounds payload bytes as well as messages, and takes one oversized delivery when empty', () => {
    const buffer = new DeliveryBuffer({ messages: 100, bytes: 100 });
    expect(buffer.add(message('big', 4, 1, 500))).toEqual({ ok: true, dropped: 0 });
    expect(buffer.add(message('small', 4, 1, 1))).toEqual({ ok: false, droppedIncoming: false });
    drain(buffer);
    buffer.add(message('a', 4, 0, 60));
    expect(buffer.add(message('b', 4, 0, 60))).toEqual({ ok: true, dropped: 1 });
    expect(buffer.bytes).toBe(60);
    expect(drain(buffer)).toEqual(['b']);
  });
});
