import { describe, expect, it } from 'vitest';
import { CONTROL_PRIORITY, SubscriberBuffer, type BufferLimits } from '../../src/delivery/subscriber-buffer.js';

interface Item {
  id: string;
  priority: number;
  droppable: boolean;
  bytes: number;
}

function item(id: string, priority: number, qos: 0 | 1, bytes = 10): Item {
  return { id, priority, droppable: qos === 0, bytes };
}

function buffer(limits: BufferLimits): SubscriberBuffer<Item> {
  return new SubscriberBuffer<Item>(() => limits);
}

function drain(b: SubscriberBuffer<Item>): string[] {
  const ids: string[] = [];
  for (let i = b.shift(); i !== undefined; i = b.shift()) ids.push(i.id);
  return ids;
}

describe('SubscriberBuffer: the one slow-consumer policy', () => {
  it('gives items back highest priority first, answers before deliveries, arrival order within a priority', () => {
    const b = buffer({ messages: 10, bytes: 1000 });
    for (const [id, p, q] of [['a', 5, 0], ['b', 1, 1], ['c', 9, 0], ['d', 1, 0], ['e', 5, 1]] as const) b.add(item(id, p, q));
    b.add(item('ack', CONTROL_PRIORITY, 1));
    expect(b.size).toBe(6);
    expect(b.bytes).toBe(60);
    expect(drain(b)).toEqual(['ack', 'c', 'a', 'e', 'b', 'd']);
    expect(b.bytes).toBe(0);
  });

  it('when full, drops the oldest qos 0 delivery of the lowest priority; a newcomer of the same priority wins', () => {
    const b = buffer({ messages: 3, bytes: 1000 });
    b.add(item('p5-old', 5, 0));
    b.add(item('p2-old', 2, 0));
    b.add(item('p2-new', 2, 0));
    expect(b.add(item('p7', 7, 0))).toEqual({ queued: true, dropped: 1 });
    expect(b.add(item('p2-newest', 2, 0))).toEqual({ queued: true, dropped: 1 });
    expect(drain(b)).toEqual(['p7', 'p5-old', 'p2-newest']);
  });

  it('drops an incoming qos 0 delivery below everything droppable, and never a qos 1 one or an answer', () => {
    const b = buffer({ messages: 2, bytes: 1000 });
    b.add(item('q1', 0, 1));
    b.add(item('p6', 6, 0));
    expect(b.add(item('p3', 3, 0))).toEqual({ queued: false, dropped: 1 });
    // A qos 1 delivery makes room by dropping the qos 0 one, whatever its priority.
    expect(b.add(item('q1b', 0, 1))).toEqual({ queued: true, dropped: 1 });
    // Now only what may not be dropped is left: a qos 0 newcomer drops itself, anything else does not fit.
    expect(b.add(item('p9', 9, 0))).toEqual({ queued: false, dropped: 1 });
    expect(b.add(item('q1c', 9, 1))).toEqual({ queued: false, dropped: 0 });
    expect(b.add(item('answer', CONTROL_PRIORITY, 1))).toEqual({ queued: false, dropped: 0 });
    expect(drain(b)).toEqual(['q1', 'q1b']);
  });

  it('bounds bytes, counting what the subscriber holds elsewhere, and takes one oversized item when empty', () => {
    const b = buffer({ messages: 100, bytes: 100 });
    expect(b.add(item('big', 4, 1, 500))).toEqual({ queued: true, dropped: 0 });
    expect(b.add(item('small', 4, 1, 1))).toEqual({ queued: false, dropped: 0 });
    drain(b);
    b.add(item('a', 4, 0, 30));
    expect(b.add(item('b', 4, 0, 30), 50)).toEqual({ queued: true, dropped: 1 });
    expect(b.bytes).toBe(30);
    expect(drain(b)).toEqual(['b']);
  });

  it('reads its limits on every add, so a new limit applies at once', () => {
    const limits = { messages: 1, bytes: 1000 };
    const b = new SubscriberBuffer<Item>(() => limits);
    b.add(item('a', 4, 1));
    expect(b.add(item('b', 4, 1))).toEqual({ queued: false, dropped: 0 });
    limits.messages = 2;
    expect(b.add(item('b', 4, 1))).toEqual({ queued: true, dropped: 0 });
  });

  it('clear releases everything', () => {
    const b = buffer({ messages: 10, bytes: 1000 });
    b.add(item('a', 4, 1));
    b.clear();
    expect(b.size).toBe(0);
    expect(b.bytes).toBe(0);
    expect(b.shift()).toBeUndefined();
  });
});
