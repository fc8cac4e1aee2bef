import { describe, expect, it } from 'vitest';
import { PriorityQueue } from '../../src/delivery/priority-queue.js';

describe('PriorityQueue', () => {
  it('serves the highest priority first and FIFO within a priority', () => {
    const q = new PriorityQueue<string>();
    q.push(0, 'low-1');
    q.push(9, 'alarm-1');
    q.push(4, 'normal-1');
    q.push(0, 'low-2');
    q.push(9, 'alarm-2');
    expect(q.size).toBe(5);
    expect(q.drain()).toEqual(['alarm-1', 'alarm-2', 'normal-1', 'low-1', 'low-2']);
    expect(q.size).toBe(0);
    expect(q.shift()).toBeUndefined();
  });

  it('gives up the newest of the lowest priority below a bound for shedding', () => {
    const q = new PriorityQueue<string>();
    q.push(2, 'two-old');
    q.push(2, 'two-new');
    q.push(5, 'five');
    expect(q.popLowest(2)).toBeUndefined();
    expect(q.popLowest(9)).toBe('two-new');
    expect(q.popLowest(9)).toBe('two-old');
    expect(q.popLowest(9)).toBe('five');
    expect(q.size).toBe(0);
  });

  it('keeps order across many pushes and shifts (compaction)', () => {
    const q = new PriorityQueue<number>();
    const out: number[] = [];
    for (let i = 0; i < 5000; i++) {
      q.push(3, i);
      if (i % 3 === 0) out.push(q.shift()!);
    }
    out.push(...q.drain());
    expect(out).toEqual(Array.from({ length: 5000 }, (_, i) => i));
  });
});
