import { describe, expect, it } from 'vitest';
import type { RouteConfig } from '../../src/config/schema.js';
import { GatewayError } from '../../src/errors.js';
import { createMessage, type Message, type MessageSource } from '../../src/message.js';
import { IngressLimiter } from '../../src/protection/ingress-limiter.js';
import { compileRouteTable } from '../../src/router/index.js';
import type { RouteTable } from '../../src/router/types.js';
import { fakeClock } from '../helpers/clock.js';

function table(rateLimit: RouteConfig['rateLimit'], name = 'devices'): RouteTable {
  return compileRouteTable([{ name, match: { key: 'devices/#' }, rateLimit, to: ['publish'] } as RouteConfig], 'drop');
}

function from(source: Partial<MessageSource>): Message {
  return createMessage({ key: 'devices/d1', payload: Buffer.from('x'), source: { protocol: 'mqtt', ...source } });
}

/** 0 when admitted, else the retryAfterMs of the rate_limited refusal. */
function admit(limiter: IngressLimiter, routes: RouteTable, message: Message): number {
  const { matches } = routes.match({ key: message.key, protocol: message.source.protocol, headers: message.headers });
  try {
    limiter.admit(message, matches);
    return 0;
  } catch (err) {
    if (!(err instanceof GatewayError) || err.code !== 'rate_limited') throw err;
    return err.details.retryAfterMs!;
  }
}

describe('IngressLimiter', () => {
  const alice = from({ principal: 'alice', clientId: 'c1' });
  const bob = from({ principal: 'bob', clientId: 'c2' });

  it('scope route: one bucket for the rule, shared by every client, refilled by the clock', async () => {
    const clock = fakeClock();
    const limiter = new IngressLimiter({ clock });
    const routes = table({ rate: 2, per: 1000, burst: 2, scope: 'route' });
    expect(admit(limiter, routes, alice)).toBe(0);
    expect(admit(limiter, routes, bob)).toBe(0);
    expect(admit(limiter, routes, bob)).toBe(500);
    expect(admit(limiter, routes, alice)).toBe(500);
    await clock.advance(250);
    expect(admit(limiter, routes, alice)).toBe(250);
    await clock.advance(250);
    expect(admit(limiter, routes, alice)).toBe(0);
    expect(limiter.rejections).toEqual({ route: 3, client: 0 });
  });

  it('scope client: a bucket per principal, else per connection; one client emptying its bucket leaves the others theirs', async () => {
    const clock = fakeClock();
    const limiter = new IngressLimiter({ clock });
    const routes = table({ rate: 1, per: 60_000, burst: 2, scope: 'client' });
    expect([admit(limiter, routes, alice), admit(limiter, routes, alice), admit(limiter, routes, alice)]).toEqual([0, 0, 60_000]);
    expect([admit(limiter, routes, bob), admit(limiter, routes, bob)]).toEqual([0, 0]);
    // Another connection of alice's is still alice; an anonymous connection is its own client.
    expect(admit(limiter, routes, from({ principal: 'alice', clientId: 'c3' }))).toBe(60_000);
    expect(admit(limiter, routes, from({ clientId: 'c3' }))).toBe(0);
    await clock.advance(30_000);
    expect(admit(limiter, routes, alice)).toBe(30_000);
    await clock.advance(30_000);
    expect(admit(limiter, routes, alice)).toBe(0);
    expect(limiter.rejections).toEqual({ route: 0, client: 3 });
  });

  it('keeps a bucket across a reload that keeps the rule and its limit, and starts afresh when the limit changes', () => {
    const clock = fakeClock();
    const limiter = new IngressLimiter({ clock });
    const limit = { rate: 1, per: 60_000, burst: 1, scope: 'client' as const };
    expect(admit(limiter, table(limit), alice)).toBe(0);
    expect(admit(limiter, table(limit), alice)).toBe(60_000);
    expect(admit(limiter, table({ ...limit, burst: 2 }), alice)).toBe(0);
  });

  it('admits what matches no limited rule', () => {
    const limiter = new IngressLimiter({ clock: fakeClock() });
    const routes = table(undefined);
    for (let i = 0; i < 100; i++) expect(admit(limiter, routes, alice)).toBe(0);
    expect(limiter.rejections).toEqual({ route: 0, client: 0 });
  });
});
