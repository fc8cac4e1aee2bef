import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/errors.js';
import type { Message } from '../../src/message.js';
import type { Appended, QueueRecord, QueueStore, TargetQueue } from '../../src/queue/index.js';
import { fullMessage, testMessage } from './messages.js';

/** The storage one test uses: every `open` opens the same storage again, as a restart would. */
export interface StoreFixture {
  open(): Promise<QueueStore>;
  /** removes the storage once the test's stores are closed */
  cleanup(): Promise<void>;
}

export interface StoreSuiteOptions {
  name: string;
  /** fresh, empty storage for one test */
  fixture(): Promise<StoreFixture>;
  /** records outlive the store: the recovery cases run too */
  persistent: boolean;
}

/** Appends and waits until the record is durable by the store's policy: when a sender would be acknowledged. */
export async function appendAcked(queue: TargetQueue, message: Message): Promise<Appended> {
  const appended = queue.append(message);
  await appended.durable;
  return appended;
}

/** The next ready record, waiting for the queue's signal when the store offers none yet. */
export function takeNext(queue: TargetQueue, timeoutMs = 2000): Promise<QueueRecord> {
  const record = queue.take();
  if (record) return Promise.resolve(record);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no record of ${queue.target} became available within ${timeoutMs} ms`)), timeoutMs);
    queue.onAvailable(() => {
      const next = queue.take();
      if (!next) return;
      clearTimeout(timer);
      resolve(next);
    });
  });
}

/** Takes `count` records, in the order the queue gives them. */
export async function takeMany(queue: TargetQueue, count: number): Promise<QueueRecord[]> {
  const records: QueueRecord[] = [];
  for (let i = 0; i < count; i++) records.push(await takeNext(queue));
  return records;
}

/** The bytes a test message counts for in this queue (the target's name is part of it); leaves the queue empty. */
async function recordBytes(queue: TargetQueue): Promise<number> {
  await appendAcked(queue, testMessage());
  const bytes = queue.bytes;
  queue.settle(await takeNext(queue), 'delivered');
  return bytes;
}

function payloads(records: readonly QueueRecord[]): string[] {
  return records.map((record) => record.message.payload.toString());
}

function expectOverloaded(action: () => unknown): void {
  let thrown: unknown;
  try {
    action();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(GatewayError);
  expect((thrown as GatewayError).code).toBe('overloaded');
}

/**
 * What every queue store must do (the contract in src/queue/store.ts), registered for one
 * implementation. Only the public interface is used, and records are taken through `takeNext`,
 * so a store whose records arrive later than `append` returns passes too.
 */
export function describeQueueStore(options: StoreSuiteOptions): void {
  describe(`queue store contract: ${options.name}`, () => {
    let fixture: StoreFixture;
    let stores: QueueStore[];

    beforeEach(async () => {
      fixture = await options.fixture();
      stores = [];
    });

    afterEach(async () => {
      for (const store of stores) await store.close();
      await fixture.cleanup();
    });

    async function open(): Promise<QueueStore> {
      const store = await fixture.open();
      stores.push(store);
      return store;
    }

    it('has nothing to take when empty', async () => {
      const queue = (await open()).queue('ingest');
      expect(queue.take()).toBeUndefined();
      expect([queue.size, queue.bytes, queue.held]).toEqual([0, 0, 0]);
    });

    it('gives back the message it was given, field for field', async () => {
      const queue = (await open()).queue('ingest');
      const message = fullMessage();
      const { record } = await appendAcked(queue, message);
      expect(record.message).toEqual(message);
      const taken = await takeNext(queue);
      expect(taken.target).toBe('ingest');
      expect(taken.attempts).toBe(0);
      expect(taken.message).toEqual(message);
      expect(taken.message.payload.equals(message.payload)).toBe(true);
    });

    it('hands out records by priority, 9 first, FIFO within a priority', async () => {
      const queue = (await open()).queue('ingest');
      const order = [0, 9, 4, 0, 9, 4, 7];
      const messages = order.map((priority) => testMessage({ priority }));
      for (const message of messages) await appendAcked(queue, message);
      const expected = [1, 4, 6, 2, 5, 0, 3].map((i) => messages[i]!.payload.toString());
      expect(payloads(await takeMany(queue, order.length))).toEqual(expected);
      expect(queue.take()).toBeUndefined();
    });

    it('counts ready records, their bytes and held records through a record\'s life', async () => {
      const queue = (await open()).queue('ingest');
      const first = await appendAcked(queue, testMessage());
      expect([queue.size, queue.held]).toEqual([1, 0]);
      const oneRecord = queue.bytes;
      expect(oneRecord).toBeGreaterThan(first.record.message.payload.length);
      await appendAcked(queue, testMessage());
      expect(queue.size).toBe(2);
      expect(queue.bytes).toBe(2 * oneRecord);
      const taken = await takeNext(queue);
      expect([queue.size, queue.bytes, queue.held]).toEqual([1, oneRecord, 1]);
      queue.settle(taken, 'delivered');
      expect([queue.size, queue.bytes, queue.held]).toEqual([1, oneRecord, 0]);
    });

    it('keeps the queues of different targets apart', async () => {
      const store = await open();
      const ingest = store.queue('ingest');
      const billing = store.queue('billing');
      const forIngest = testMessage();
      const forBilling = testMessage();
      await appendAcked(ingest, forIngest);
      await appendAcked(billing, forBilling);
      expect(store.queue('ingest')).toBe(ingest);
      expect((await takeNext(billing)).message.id).toBe(forBilling.id);
      expect(billing.take()).toBeUndefined();
      expect((await takeNext(ingest)).message.id).toBe(forIngest.id);
    });

    it('counts the attempts made for a held record', async () => {
      const queue = (await open()).queue('ingest');
      await appendAcked(queue, testMessage());
      const record = await takeNext(queue);
      expect(queue.recordAttempt(record)).toBe(1);
      expect(queue.recordAttempt(record)).toBe(2);
      expect(record.attempts).toBe(2);
    });

    it('puts a released record back behind the others of its priority, attempts kept', async () => {
      const queue = (await open()).queue('ingest');
      const [a, b, high] = [testMessage(), testMessage(), testMessage({ priority: 9 })];
      await appendAcked(queue, a);
      await appendAcked(queue, b);
      const first = await takeNext(queue);
      expect(first.message.id).toBe(a.id);
      queue.recordAttempt(first);
      queue.release(first);
      await appendAcked(queue, high);
      expect([queue.size, queue.held]).toEqual([3, 0]);
      const again = await takeMany(queue, 3);
      expect(again.map((record) => record.message.id)).toEqual([high.id, b.id, a.id]);
      expect(again[2]!.attempts).toBe(1);
    });

    it('evicts the newest record of the lowest priority below a bound, which stays held until settled', async () => {
      const queue = (await open()).queue('ingest');
      const messages = [testMessage({ priority: 2 }), testMessage({ priority: 1 }), testMessage({ priority: 1 }), testMessage({ priority: 5 })];
      for (const message of messages) await appendAcked(queue, message);
      expect(queue.evict(1)).toBeUndefined();
      const evicted = queue.evict(5)!;
      expect(evicted.message.id).toBe(messages[2]!.id);
      expect([queue.size, queue.held]).toEqual([3, 1]);
      queue.settle(evicted, 'deadLettered');
      expect(queue.held).toBe(0);
      expect(queue.evict(5)!.message.id).toBe(messages[1]!.id);
      expect(queue.evict(5)!.message.id).toBe(messages[0]!.id);
      expect(queue.evict(5)).toBeUndefined();
      expect((await takeNext(queue)).message.id).toBe(messages[3]!.id);
    });

    it('tells whether a ready record of lower priority is there to evict', async () => {
      const queue = (await open()).queue('ingest');
      expect(queue.hasBelow(9)).toBe(false);
      await appendAcked(queue, testMessage({ priority: 3 }));
      expect([queue.hasBelow(3), queue.hasBelow(4)]).toEqual([false, true]);
      const record = await takeNext(queue);
      expect(queue.hasBelow(4)).toBe(false);
      queue.release(record);
      expect(queue.hasBelow(4)).toBe(true);
    });

    it('refuses with overloaded at the byte bound when nothing lower can be shed, and the refused message is nowhere', async () => {
      const store = await open();
      const size = await recordBytes(store.queue('ingest'));
      const queue = store.queue('ingest', { maxBytes: 3 * size });
      const kept = [testMessage({ priority: 3 }), testMessage({ priority: 4 }), testMessage({ priority: 4 })];
      for (const message of kept) await appendAcked(queue, message);
      const refused = testMessage({ priority: 3 });
      expect(queue.canAccept(refused)).toBe(false);
      expectOverloaded(() => queue.append(refused));
      expect([queue.size, queue.bytes, queue.held]).toEqual([3, 3 * size, 0]);
      const left = await takeMany(queue, 3);
      expect(left.map((record) => record.message.id).sort()).toEqual(kept.map((message) => message.id).sort());
      expect(queue.take()).toBeUndefined();
    });

    it('makes room at the byte bound by shedding the newest records of the lowest priority', async () => {
      const store = await open();
      const size = await recordBytes(store.queue('ingest'));
      const queue = store.queue('ingest', { maxBytes: 3 * size });
      const [low1, low2, mid] = [testMessage({ priority: 1 }), testMessage({ priority: 1 }), testMessage({ priority: 4 })];
      for (const message of [low1, low2, mid]) await appendAcked(queue, message);
      const urgent = testMessage({ priority: 9 });
      expect(queue.canAccept(urgent)).toBe(true);
      const appended = await appendAcked(queue, urgent);
      expect(appended.shed.map((record) => record.message.id)).toEqual([low2.id]);
      expect([queue.size, queue.bytes, queue.held]).toEqual([3, 3 * size, 1]);
      queue.settle(appended.shed[0]!, 'deadLettered');
      expect(queue.held).toBe(0);
      expect((await takeMany(queue, 3)).map((record) => record.message.id)).toEqual([urgent.id, mid.id, low1.id]);
    });

    it('takes any one message into a queue with nothing ready, whatever its bound', async () => {
      const queue = (await open()).queue('ingest', { maxBytes: 10 });
      await appendAcked(queue, testMessage());
      expect(queue.bytes).toBeGreaterThan(10);
      expectOverloaded(() => queue.append(testMessage()));
      queue.settle(await takeNext(queue), 'delivered');
      await appendAcked(queue, testMessage());
      expect(queue.size).toBe(1);
    });

    it('applies new limits given for a queue and keeps them when none are given', async () => {
      const store = await open();
      const queue = store.queue('ingest', { maxBytes: 10 });
      await appendAcked(queue, testMessage());
      expect(store.queue('ingest')).toBe(queue);
      expect(queue.canAccept(testMessage())).toBe(false);
      store.queue('ingest', {});
      await appendAcked(queue, testMessage());
      expect(queue.size).toBe(2);
    });

    it('ignores a second settlement of the same record', async () => {
      const queue = (await open()).queue('ingest');
      await appendAcked(queue, testMessage());
      await appendAcked(queue, testMessage());
      const record = await takeNext(queue);
      const other = await takeNext(queue);
      queue.settle(record, 'delivered');
      queue.settle(record, 'deadLettered');
      expect(queue.held).toBe(1);
      queue.settle(other, 'expired');
      expect(queue.held).toBe(0);
    });

    it('refuses appends with overloaded once closed', async () => {
      const store = await open();
      const queue = store.queue('ingest');
      await store.close();
      expectOverloaded(() => queue.append(testMessage()));
      expect(queue.canAccept(testMessage())).toBe(false);
      expectOverloaded(() => store.queue('created-after-close').append(testMessage()));
    });

    if (!options.persistent) return;

    it('puts every unsettled record back on reopen, by priority, with its attempts; settled ones stay gone', async () => {
      const first = await open();
      const ingest = first.queue('ingest');
      const billing = first.queue('billing');
      const messages = [0, 9, 4, 4, 9, 0].map((priority) => testMessage({ priority }));
      for (const message of messages) await appendAcked(ingest, message);
      const forBilling = testMessage({ priority: 2 });
      await appendAcked(billing, forBilling);
      const [alarm1, alarm2, normal1] = await takeMany(ingest, 3);
      ingest.settle(alarm1!, 'delivered');
      ingest.recordAttempt(alarm2!);
      ingest.recordAttempt(alarm2!);
      ingest.recordAttempt(normal1!);
      ingest.release(normal1!);
      await first.close();

      const second = await open();
      expect(second.recovery.targets).toEqual(['billing', 'ingest']);
      expect(second.recovery.records).toBe(6);
      const back = await takeMany(second.queue('ingest'), 5);
      expect(back.map((record) => record.message.id)).toEqual([messages[4]!.id, messages[2]!.id, messages[3]!.id, messages[0]!.id, messages[5]!.id]);
      expect(back.map((record) => record.attempts)).toEqual([2, 1, 0, 0, 0]);
      expect(back[0]!.message).toEqual(messages[4]);
      expect(second.queue('ingest').take()).toBeUndefined();
      expect((await takeNext(second.queue('billing'))).message).toEqual(forBilling);
    });

    it('forgets a recovered record once it is settled', async () => {
      const first = await open();
      const message = testMessage();
      await appendAcked(first.queue('ingest'), message);
      await appendAcked(first.queue('ingest'), testMessage());
      await first.close();
      const second = await open();
      const queue = second.queue('ingest');
      const record = await takeNext(queue);
      expect(record.message.id).toBe(message.id);
      queue.settle(record, 'delivered');
      await second.close();
      const third = await open();
      expect(third.recovery.records).toBe(1);
      expect((await takeNext(third.queue('ingest'))).message.id).not.toBe(message.id);
    });

    it('keeps QoS 0 records in memory only: in order with the others, gone after a restart', async () => {
      const first = await open();
      const queue = first.queue('ingest');
      const volatile = testMessage({ qos: 0, priority: 9 });
      const kept = testMessage({ qos: 1 });
      const appended = queue.append(volatile);
      expect(appended.durable).toBeUndefined();
      await appendAcked(queue, kept);
      expect((await takeNext(queue)).message.id).toBe(volatile.id);
      await first.close();
      const second = await open();
      expect(second.recovery.records).toBe(1);
      expect((await takeNext(second.queue('ingest'))).message.id).toBe(kept.id);
    });

    it('keeps records appended as transient in memory only, whatever their QoS', async () => {
      const first = await open();
      const queue = first.queue('ingest');
      const request = testMessage({ qos: 1, priority: 9 });
      const kept = testMessage({ qos: 1 });
      const appended = queue.append(request, { transient: true });
      expect(appended.durable).toBeUndefined();
      await appendAcked(queue, kept);
      const taken = await takeNext(queue);
      expect(taken.message.id).toBe(request.id);
      queue.recordAttempt(taken);
      await first.close();
      const second = await open();
      expect(second.recovery.records).toBe(1);
      expect((await takeNext(second.queue('ingest'))).message.id).toBe(kept.id);
    });
  });
}
