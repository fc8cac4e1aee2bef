import { MAX_PRIORITY } from '../message.js';

/**
 * A bounded queue ordered by message priority, FIFO within a priority: one ring of lanes,
 * so push and shift are O(1) and the highest non-empty lane is found in at most 10 steps.
 */
export class PriorityQueue<T> {
  readonly #lanes: T[][] = Array.from({ length: MAX_PRIORITY + 1 }, () => []);
  readonly #heads: number[] = new Array<number>(MAX_PRIORITY + 1).fill(0);
  #size = 0;

  get size(): number {
    return this.#size;
  }

  push(priority: number, item: T): void {
    this.#lanes[priority]!.push(item);
    this.#size++;
  }

  /** Puts an item back at the head of its priority: it is the next of that priority to leave. */
  unshift(priority: number, item: T): void {
    const head = this.#heads[priority]!;
    if (head > 0) {
      this.#lanes[priority]![head - 1] = item;
      this.#heads[priority] = head - 1;
    } else {
      this.#lanes[priority]!.unshift(item);
    }
    this.#size++;
  }

  /** the oldest item of the highest priority */
  shift(): T | undefined {
    for (let p = MAX_PRIORITY; p >= 0; p--) {
      const item = this.#take(p, true);
      if (item !== undefined) return item;
    }
    return undefined;
  }

  /** whether any item has a priority below the given one */
  hasBelow(priority: number): boolean {
    for (let p = 0; p < priority; p++) {
      if (this.#heads[p]! < this.#lanes[p]!.length) return true;
    }
    return false;
  }

  /** the newest item of the lowest priority: the one to shed first */
  popLowest(belowPriority: number): T | undefined {
    for (let p = 0; p < belowPriority; p++) {
      const item = this.#take(p, false);
      if (item !== undefined) return item;
    }
    return undefined;
  }

  #take(priority: number, oldest: boolean): T | undefined {
    const lane = this.#lanes[priority]!;
    const head = this.#heads[priority]!;
    if (head >= lane.length) return undefined;
    this.#size--;
    if (!oldest) {
      const item = lane.pop()!;
      if (head >= lane.length) this.#reset(priority);
      return item;
    }
    const item = lane[head]!;
    lane[head] = undefined as T;
    if (head + 1 >= lane.length) this.#reset(priority);
    else if (head + 1 > 1024 && head + 1 > lane.length / 2) {
      // Compact now and then so a long-lived lane does not keep a growing dead prefix.
      lane.splice(0, head + 1);
      this.#heads[priority] = 0;
    } else this.#heads[priority] = head + 1;
    return item;
  }

  #reset(priority: number): void {
    this.#lanes[priority]!.length = 0;
    this.#heads[priority] = 0;
  }

  /** removes and returns every item, highest priority first */
  drain(): T[] {
    const all: T[] = [];
    for (let item = this.shift(); item !== undefined; item = this.shift()) all.push(item);
    return all;
  }
}
