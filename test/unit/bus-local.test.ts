import { describe, expect, it } from 'vitest';
import { LocalBus, TAKEN } from '../../src/bus/index.js';
import { createMessage } from '../../src/message.js';
import { busSuite } from '../bus/bus-suite.js';

busSuite('in-process (LocalBus)', async () => {
  const bus = new LocalBus(() => undefined);
  return { bus, peer: bus, dispose: () => bus.close() };
});

describe('LocalBus: subscribers that take a message asynchronously', () => {
  function deferred(): { promise: Promise<void>; resolve: () => void; reject: (err: Error) => void } {
    let resolve = (): void => undefined;
    let reject = (_err: Error): void => undefined;
    const promise = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    return { promise, resolve, reject };
  }

  function settled(promise: Promise<unknown>): () => boolean {
    let done = false;
    void promise.then(() => {
      done = true;
    });
    return () => done;
  }

  const message = createMessage({ key: 'a/b', payload: Buffer.from('x'), source: { protocol: 'internal' } });

  it('returns TAKEN for a publish every handler took at once, and a promise of its own otherwise', async () => {
    const bus = new LocalBus(() => undefined);
    await bus.subscribe('a/+', () => undefined);
    expect(bus.publish(message)).toBe(TAKEN);
    const later = deferred();
    await bus.subscribeAll(() => later.promise);
    const publishing = bus.publish(message);
    expect(publishing).not.toBe(TAKEN);
    later.resolve();
    await publishing;
  });

  it('resolves a publish once every handler\'s promise settled, a rejection reported and not the publisher\'s', async () => {
    const errors: unknown[] = [];
    const bus = new LocalBus((err) => errors.push(err));
    const first = deferred();
    const second = deferred();
    await bus.subscribe('a/+', () => first.promise);
    await bus.subscribeAll(() => second.promise);
    await bus.subscribe('#', () => undefined);
    const publishing = bus.publish(message);
    const published = settled(publishing);
    first.resolve();
    await Promise.resolve();
    await Promise.resolve();
    expect(published()).toBe(false);
    second.reject(new Error('socket gone'));
    await expect(publishing).resolves.toBeUndefined();
    expect(errors).toHaveLength(1);
  });

  it('resolves deliverToOne once the responder took the request', async () => {
    const bus = new LocalBus(() => undefined);
    const taking = deferred();
    await bus.subscribe('a/b', () => taking.promise, { responder: true });
    const delivered = bus.deliverToOne(message);
    const done = settled(delivered);
    await Promise.resolve();
    expect(done()).toBe(false);
    taking.resolve();
    await expect(delivered).resolves.toBe(true);
  });
});
