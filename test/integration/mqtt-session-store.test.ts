import assert from 'node:assert';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RedisSessionStore } from '../../adapters/mqtt/redis-persistence.js';
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
