import assert from 'node:assert';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { PublishPacket } from 'aedes';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisSessionStore } from '../../adapters/mqtt/redis-persistence.js';
import { eventually } from '../helpers/eventually.js';
import { connectRedis, redisForFile } from '../helpers/redis.js';

const require = createRequire(import.meta.url);

/** node:test's TestContext as aedes-persistence's abstract suite uses it: assert, plan, diagnostic. */
class SuiteContext {
  #assertions = 0;
  #planned: number | undefined;
  readonly assert: typeof assert;

  constructor() {
    // Each call of an assertion counts towards the plan, as node:test counts t.assert calls.
    this.assert = new Proxy(assert, {
      get: (target, name) => {
        const value = Reflect.get(target, name) as unknown;
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          this.#assertions++;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
  }

  plan(count: number): void {
    this.#planned = count;
  }

  diagnostic(_message: string): void {}

  /** node:test fails a test whose plan the assertions did not meet. */
  verify(): void {
    if (this.#planned !== undefined) expect(this.#assertions, 'assertions made against t.plan()').toBe(this.#planned);
  }
}

type SuiteTest = (t: SuiteContext) => Promise<void>;
interface AbstractSuiteOptions {
  test(name: string, body: SuiteTest): void;
  persistence(): Promise<RedisSessionStore>;
  testAsync: true;
}
const abstractPersistence = require('aedes-persistence/abstract.js') as (options: AbstractSuiteOptions) => void;
const abstractSource = readFileSync(require.resolve('aedes-persistence/abstract.js'), 'utf8');

const redisServer = redisForFile();
let redis: Redis;
const errors: Error[] = [];
let instances = 0;
let registered = 0;

beforeAll(async () => {
  redis = await connectRedis(redisServer());
});
afterAll(() => {
  redis?.disconnect();
});

/**
 * aedes-persistence 11's own contract, every case of it, against the Redis session store on a
 * real redis-server. Each case gets a store of its own, on a key prefix of its own.
 */
describe('aedes-persistence abstract suite: RedisSessionStore', () => {
  abstractPersistence({
    test(name, body) {
      registered++;
      it(name, async () => {
        const t = new SuiteContext();
        await body(t);
        t.verify();
        expect(errors).toEqual([]);
      });
    },
    persistence: async () => new RedisSessionStore({
      redis,
      keyPrefix: `suite${++instances}:mqtt:`,
      maxQueued: 1000,
      sessionExpiryMs: 60_000,
      broadcast: () => Promise.resolve(),
      onError: (err) => errors.push(err),
      onQueueFull: () => errors.push(new Error('a queue was full')),
    }),
    testAsync: true,
  });

  it('registered every case the suite defines, none left out', () => {
    const defined = abstractSource.match(/^ {2}test\('/gm)?.length ?? 0;
    expect(defined).toBeGreaterThanOrEqual(50);
    expect(registered).toBe(defined);
  });
});

/** Two nodes' stores on one prefix, notes passed between them as the cluster's bus would. */
async function twoNodes(maxQueued = 1000): Promise<{ a: RedisSessionStore; b: RedisSessionStore; full: number[]; keyPrefix: string }> {
  const keyPrefix = `nodes${++instances}:mqtt:`;
  const full: number[] = [];
  const stores: RedisSessionStore[] = [];
  const options = (other: () => RedisSessionStore) => ({
    redis, keyPrefix, maxQueued, sessionExpiryMs: 60_000,
    broadcast: (note: Buffer) => {
      other().noteReceived(note);
      return Promise.resolve();
    },
    onError: (err: Error) => errors.push(err),
    onQueueFull: (count: number) => full.push(count),
  });
  stores.push(new RedisSessionStore(options(() => stores[1]!)), new RedisSessionStore(options(() => stores[0]!)));
  const broker = { id: 'broker' };
  await Promise.all(stores.map((store) => store.setup(broker)));
  return { a: stores[0]!, b: stores[1]!, full, keyPrefix };
}

function publish(text: string, counter: number): PublishPacket & { brokerId: string; brokerCounter: number } {
  return { cmd: 'publish', topic: 'cmd/x', payload: Buffer.from(text), qos: 1, retain: false, dup: false, brokerId: 'origin.1', brokerCounter: counter };
}

async function queued(store: RedisSessionStore, clientId: string): Promise<string[]> {
  const texts: string[] = [];
  for await (const packet of store.outgoingStream({ id: clientId })) texts.push(String((packet as { payload: Buffer }).payload));
  return texts;
}

describe('RedisSessionStore across nodes', () => {
  it('knows a subscription made on another node, and a node started later loads it', async () => {
    const { a, b, keyPrefix } = await twoNodes();
    await a.addSubscriptions({ id: 'dev' }, [{ topic: 'cmd/#', qos: 1 }]);
    await eventually(async () => expect(await b.subscriptionsByTopic('cmd/x')).toMatchObject([{ clientId: 'dev', topic: 'cmd/#', qos: 1 }]));
    await a.removeSubscriptions({ id: 'dev' }, ['cmd/#']);
    await eventually(async () => expect(await b.subscriptionsByTopic('cmd/x')).toEqual([]));
    await a.addSubscriptions({ id: 'dev' }, [{ topic: 'cmd/+', qos: 1 }]);
    const late = new RedisSessionStore({ redis, keyPrefix, maxQueued: 1000, sessionExpiryMs: 60_000, broadcast: () => Promise.resolve(), onError: (err) => errors.push(err), onQueueFull: () => undefined });
    await late.setup({ id: 'late' });
    expect(await late.subscriptionsByTopic('cmd/x')).toMatchObject([{ clientId: 'dev', topic: 'cmd/+' }]);
    expect(errors).toEqual([]);
  });

  it('takes a resumed session\'s subscriptions into its trie, a note it missed or not', async () => {
    const { a, keyPrefix } = await twoNodes();
    const deaf = new RedisSessionStore({ redis, keyPrefix, maxQueued: 1000, sessionExpiryMs: 60_000, broadcast: () => Promise.resolve(), onError: (err) => errors.push(err), onQueueFull: () => undefined });
    await deaf.setup({ id: 'deaf' });
    await a.addSubscriptions({ id: 'dev' }, [{ topic: 'cmd/x', qos: 1 }]);
    expect(await deaf.subscriptionsByTopic('cmd/x')).toEqual([]);
    expect(await deaf.subscriptionsByClient({ id: 'dev' })).toMatchObject([{ topic: 'cmd/x', qos: 1 }]);
    expect(await deaf.subscriptionsByTopic('cmd/x')).toMatchObject([{ clientId: 'dev', topic: 'cmd/x' }]);
  });

  it('queues a message every node queues once per session, and not again once it was acknowledged', async () => {
    const { a, b } = await twoNodes();
    const subscriptions = [{ clientId: 'dev', topic: 'cmd/x', qos: 1 }];
    await a.outgoingEnqueueCombi(subscriptions, publish('one', 1));
    await b.outgoingEnqueueCombi(subscriptions, publish('one', 1));
    await a.outgoingEnqueueCombi(subscriptions, publish('two', 2));
    expect(await queued(b, 'dev')).toEqual(['one', 'two']);
    // Delivered and acknowledged on A; B gets to the message later.
    await a.outgoingUpdate({ id: 'dev' }, { ...publish('one', 1), messageId: 7 });
    expect(await a.outgoingClearMessageId({ id: 'dev' }, { messageId: 7 })).toMatchObject({ messageId: 7, brokerCounter: 1 });
    await b.outgoingEnqueueCombi(subscriptions, publish('one', 1));
    expect(await queued(a, 'dev')).toEqual(['two']);
    expect(errors).toEqual([]);
  });

  it('keeps at most maxQueued messages per session, and counts the ones it did not queue', async () => {
    const { a, full } = await twoNodes(2);
    const subscriptions = [{ clientId: 'dev', topic: 'cmd/x', qos: 1 }, { clientId: 'other', topic: 'cmd/x', qos: 1 }];
    for (let i = 1; i <= 3; i++) await a.outgoingEnqueueCombi(subscriptions, publish(`m${i}`, i));
    expect(await queued(a, 'dev')).toEqual(['m1', 'm2']);
    expect(full).toEqual([2]);
  });

  it('keeps nothing of a clean session in Redis: its acknowledgements cost no round trip, its QoS 2 packets stay in memory', async () => {
    const { a, keyPrefix } = await twoNodes();
    const clean = { id: 'dev', clean: true };
    await a.outgoingEnqueueCombi([{ clientId: 'dev' }], publish('one', 1));
    await a.outgoingUpdate({ id: 'dev' }, { ...publish('one', 1), messageId: 3 });
    expect(await a.outgoingClearMessageId(clean, { messageId: 3 })).toBeUndefined();
    expect(await queued(a, 'dev')).toEqual(['one']);
    await a.incomingStorePacket(clean, { ...publish('two', 2), messageId: 9 });
    expect(await a.incomingGetPacket(clean, { messageId: 9 })).toMatchObject({ messageId: 9, topic: 'cmd/x' });
    expect(await redis.exists(`${keyPrefix}in:dev`)).toBe(0);
    await a.cleanIncoming(clean);
    await expect(a.incomingGetPacket(clean, { messageId: 9 })).rejects.toThrow('no such packet');
  });

  it('settles queueings in call order, a message with no session to queue for included', async () => {
    const { a } = await twoNodes();
    const settled: string[] = [];
    const first = a.outgoingEnqueueCombi([{ clientId: 'dev' }], publish('one', 1)).then(() => settled.push('one'));
    const second = a.outgoingEnqueueCombi([], publish('two', 2)).then(() => settled.push('two'));
    await Promise.all([first, second]);
    expect(settled).toEqual(['one', 'two']);
  });
});
