import { describe, expect, it } from 'vitest';
import type { RouteConfig, TargetRefConfig } from '../../src/config/schema.js';
import type { DefaultRoute } from '../../src/config/types.js';
import type { Protocol } from '../../src/message.js';
import { compileRouteTable, type LossReason, type RoutableMessage, type TargetBinding } from '../../src/router/index.js';

type RuleOptions = Partial<Omit<RouteConfig, 'name' | 'match'>> & {
  protocols?: Protocol[];
  headers?: Record<string, string>;
};

/** One rule as it comes out of the config decoder, which gives every rule a priority, mode and continue. */
function rule(name: string, key: string, options: RuleOptions = {}): RouteConfig {
  const { protocols, headers, ...rest } = options;
  const config: RouteConfig = { name, match: { key }, priority: 0, mode: 'deliver', timeout: 5000, continue: false, expired: 'drop', to: ['publish'], ...rest };
  if (protocols !== undefined) config.match.protocols = protocols;
  if (headers !== undefined) config.match.headers = headers;
  return config;
}

function message(key: string, protocol: Protocol = 'mqtt', headers: Record<string, string> = {}): RoutableMessage {
  return { key, protocol, headers };
}

function winners(routes: RouteConfig[], msg: RoutableMessage): string[] {
  return compileRouteTable(routes, 'drop').match(msg).matches.map((m) => m.route.name);
}

describe('key patterns (MQTT topic filters)', () => {
  it.each<{ pattern: string; key: string; captures: string[] | null }>([
    // `+` is exactly one level [MQTT-4.7.1-2]
    { pattern: 'a/+/c', key: 'a/b/c', captures: ['b'] },
    { pattern: 'a/+/c', key: 'a/b/d', captures: null },
    { pattern: 'a/+/c', key: 'a/b/x/c', captures: null },
    { pattern: 'a/+', key: 'a', captures: null },
    { pattern: '+', key: 'a', captures: ['a'] },
    { pattern: '+', key: 'a/b', captures: null },
    { pattern: '+/+', key: 'a/b', captures: ['a', 'b'] },
    // `#` is the rest, zero levels included [MQTT-4.7.1-2]
    { pattern: 'a/#', key: 'a/b/c', captures: ['b/c'] },
    { pattern: 'a/#', key: 'a', captures: [''] },
    { pattern: 'a/#', key: 'ab', captures: null },
    { pattern: 'a/#', key: 'b/a', captures: null },
    { pattern: 'a/b/#', key: 'a', captures: null },
    { pattern: '#', key: 'a/b', captures: ['a/b'] },
    { pattern: '+/+/#', key: 'a/b', captures: ['a', 'b', ''] },
    { pattern: 'a/+/+/#', key: 'a/b/c/d/e', captures: ['b', 'c', 'd/e'] },
    // empty levels are levels
    { pattern: 'a/+/b', key: 'a//b', captures: [''] },
    { pattern: 'a//b', key: 'a//b', captures: [] },
    { pattern: 'a//b', key: 'a/b', captures: null },
    { pattern: 'a/b', key: 'a//b', captures: null },
    { pattern: '+/a', key: '/a', captures: [''] },
    { pattern: '/a', key: '/a', captures: [] },
    { pattern: '+/+', key: '/a', captures: ['', 'a'] },
    { pattern: 'a/+', key: 'a/', captures: [''] },
    { pattern: 'a/#', key: 'a/', captures: [''] },
    { pattern: 'a', key: 'a/', captures: null },
    { pattern: '#', key: '/', captures: ['/'] },
    // `$` keys and leading wildcards [MQTT-4.7.2-1]
    { pattern: '#', key: '$SYS/x', captures: null },
    { pattern: '+/x', key: '$SYS/x', captures: null },
    { pattern: '+', key: '$SYS', captures: null },
    { pattern: '$SYS/#', key: '$SYS/x', captures: ['x'] },
    { pattern: '$SYS/+', key: '$SYS/x', captures: ['x'] },
    { pattern: '$SYS/x', key: '$SYS/x', captures: [] },
    { pattern: 'a/+', key: 'a/$x', captures: ['$x'] },
    { pattern: '#', key: 'a/$x', captures: ['a/$x'] },
    // levels compare exactly
    { pattern: 'A/b', key: 'a/b', captures: null },
    { pattern: 'a/b', key: 'a/b', captures: [] },
  ])('$pattern vs $key', ({ pattern, key, captures }) => {
    const decision = compileRouteTable([rule('r', pattern)], 'drop').match(message(key));
    if (captures === null) {
      expect(decision).toEqual({ matches: [], default: 'drop' });
    } else {
      expect(decision.matches).toHaveLength(1);
      expect(decision.matches[0]!.captures).toEqual(captures);
      expect(decision.default).toBeUndefined();
    }
  });
});

describe('precedence', () => {
  it.each<{ title: string; routes: RouteConfig[]; msg: RoutableMessage; expected: string[] }>([
    { title: 'ties go to file order', routes: [rule('one', 'a/+'), rule('two', 'a/b')], msg: message('a/b'), expected: ['one'] },
    { title: 'ties go to file order, not specificity', routes: [rule('two', 'a/b'), rule('one', 'a/+')], msg: message('a/b'), expected: ['two'] },
    { title: 'same pattern, file order', routes: [rule('one', 'a/b'), rule('two', 'a/b')], msg: message('a/b'), expected: ['one'] },
    { title: 'higher priority beats file order', routes: [rule('one', 'a/+'), rule('two', 'a/b', { priority: 5 })], msg: message('a/b'), expected: ['two'] },
    { title: 'higher priority on the same pattern', routes: [rule('one', 'a/b'), rule('two', 'a/b', { priority: 1 })], msg: message('a/b'), expected: ['two'] },
    { title: 'negative priority comes after the default 0', routes: [rule('any', '#', { priority: -1 }), rule('ab', 'a/b')], msg: message('a/b'), expected: ['ab'] },
    { title: 'a non-matching rule does not count', routes: [rule('x', 'x/y', { priority: 9 }), rule('ab', 'a/b')], msg: message('a/b'), expected: ['ab'] },
    {
      title: 'continue chains to the next matching rule',
      routes: [rule('one', 'a/+'), rule('audit', '#', { priority: 10, continue: true }), rule('two', 'a/b')],
      msg: message('a/b'),
      expected: ['audit', 'one'],
    },
    {
      title: 'several continues, chain ends at the first rule without',
      routes: [rule('c1', '#', { continue: true }), rule('c2', 'a/#', { continue: true }), rule('end', 'a/b'), rule('after', 'a/b')],
      msg: message('a/b'),
      expected: ['c1', 'c2', 'end'],
    },
    { title: 'continue with nothing after it', routes: [rule('only', 'a/b', { continue: true }), rule('other', 'x')], msg: message('a/b'), expected: ['only'] },
    {
      title: 'continue skips rules that do not match',
      routes: [rule('first', 'a/b', { continue: true }), rule('miss', 'x/y'), rule('hdr', 'a/b', { headers: { h: 'v' } }), rule('last', 'a/+')],
      msg: message('a/b'),
      expected: ['first', 'last'],
    },
    {
      title: 'continue across priorities and patterns merges in precedence order',
      routes: [rule('p0', 'a/+/c'), rule('p5', 'a/#', { priority: 5, continue: true }), rule('p3', '+/b/+', { priority: 3, continue: true }), rule('p4', 'a/b/c', { priority: 4, continue: true })],
      msg: message('a/b/c'),
      expected: ['p5', 'p4', 'p3', 'p0'],
    },
    {
      title: 'a continue rule that does not admit the message is not in the chain',
      routes: [rule('ws-only', 'a/b', { protocols: ['ws'], continue: true }), rule('end', 'a/b')],
      msg: message('a/b', 'mqtt'),
      expected: ['end'],
    },
  ])('$title', ({ routes, msg, expected }) => {
    expect(winners(routes, msg)).toEqual(expected);
  });
});

describe('protocol and header conditions', () => {
  const routes = [
    rule('json-mqtt', 'a/b', { protocols: ['mqtt'], headers: { 'Content-Type': 'application/json' } }),
    rule('two-headers', 'a/b', { headers: { 'X-One': '1', 'x-two': '2' } }),
    rule('ws-or-http', 'a/b', { protocols: ['ws', 'http'] }),
    rule('proto-header', 'a/b', { headers: { constructor: 'x' } }),
  ];
  it.each<{ title: string; msg: RoutableMessage; expected: string[] }>([
    { title: 'protocol and header (rule name upper-case) match', msg: message('a/b', 'mqtt', { 'content-type': 'application/json' }), expected: ['json-mqtt'] },
    { title: 'header value differs', msg: message('a/b', 'mqtt', { 'content-type': 'text/plain' }), expected: [] },
    { title: 'header values are case-sensitive', msg: message('a/b', 'mqtt', { 'content-type': 'Application/JSON' }), expected: [] },
    { title: 'protocol not in the list', msg: message('a/b', 'grpc', { 'content-type': 'application/json' }), expected: [] },
    { title: 'every header must be equal', msg: message('a/b', 'grpc', { 'x-one': '1', 'x-two': '2' }), expected: ['two-headers'] },
    { title: 'one header of two is not enough', msg: message('a/b', 'grpc', { 'x-one': '1' }), expected: [] },
    { title: 'any protocol of the list', msg: message('a/b', 'http'), expected: ['ws-or-http'] },
    { title: 'the other protocol of the list', msg: message('a/b', 'ws'), expected: ['ws-or-http'] },
    { title: 'a missing header is not read from Object.prototype', msg: message('a/b', 'internal'), expected: [] },
    { title: 'a present header named like a prototype member', msg: message('a/b', 'internal', { constructor: 'x' }), expected: ['proto-header'] },
  ])('$title', ({ msg, expected }) => {
    expect(winners(routes, msg)).toEqual(expected);
  });
});

describe('targets', () => {
  it.each<{ pattern: string; template: string; key: string; expected: string }>([
    { pattern: 'devices/+/telemetry', template: 'dashboards/{1}/telemetry', key: 'devices/d1/telemetry', expected: 'dashboards/d1/telemetry' },
    { pattern: 'a/+/+', template: '{2}/{1}', key: 'a/x/y', expected: 'y/x' },
    { pattern: 'a/+/#', template: 'b/{1}/{2}', key: 'a/x/y/z', expected: 'b/x/y/z' },
    { pattern: 'a/#', template: 'b/{1}', key: 'a/x', expected: 'b/x' },
    { pattern: 'a/#', template: 'b/{1}', key: 'a', expected: 'b/' },
    { pattern: '#', template: 'all/{1}', key: 'x/y', expected: 'all/x/y' },
    { pattern: 'a/+', template: '{1}{1}', key: 'a/x', expected: 'xx' },
    { pattern: 'a/+', template: 'fixed/key', key: 'a/x', expected: 'fixed/key' },
    { pattern: 'a/+', template: 'b/{x}/{1}', key: 'a/x', expected: 'b/{x}/x' },
    { pattern: 'a/+/b', template: 'c/{1}/d', key: 'a//b', expected: 'c//d' },
  ])('$pattern + $template on $key = $expected', ({ pattern, template, key, expected }) => {
    const table = compileRouteTable([rule('r', pattern, { to: [{ publish: template }] })], 'drop');
    expect(table.match(message(key)).matches[0]!.targets).toEqual([{ kind: 'publish', key: expected }]);
  });

  it('binds every kind of target and fallback, substituting per match', () => {
    const to: TargetRefConfig[] = ['ingest', 'publish', 'deadletter', { publish: 'p/{1}' }];
    const table = compileRouteTable([rule('r', 'a/+', { to, fallback: ['deadletter', { publish: 'dl/{1}' }] })], 'drop');
    const expected = (level: string): { targets: TargetBinding[]; fallback: TargetBinding[] } => ({
      targets: [{ kind: 'target', name: 'ingest' }, { kind: 'publish', key: `a/${level}` }, { kind: 'deadletter' }, { kind: 'publish', key: `p/${level}` }],
      fallback: [{ kind: 'deadletter' }, { kind: 'publish', key: `dl/${level}` }],
    });
    for (const level of ['x', 'y']) {
      const [m] = table.match(message(`a/${level}`)).matches;
      expect({ targets: m!.targets, fallback: m!.fallback }).toEqual(expected(level));
    }
  });

  it('matches a key repeated after another key as it matched it the first time', () => {
    const table = compileRouteTable([rule('r', 'a/+', { to: ['publish', { publish: 'p/{1}' }], fallback: [{ publish: 'dl/{1}' }] })], 'drop');
    const first = table.match(message('a/x'));
    expect(table.match(message('a/x'))).toBe(first);
    expect(Object.isFrozen(first)).toBe(true);
    expect(Object.isFrozen(first.matches[0]!.targets)).toBe(true);
    expect(Object.isFrozen(first.matches[0]!.captures)).toBe(true);
    const bindings = (key: string) => {
      const [m] = table.match(message(key)).matches;
      return { captures: m!.captures, targets: m!.targets, fallback: m!.fallback };
    };
    expect(bindings('a/y')).toEqual({ captures: ['y'], targets: [{ kind: 'publish', key: 'a/y' }, { kind: 'publish', key: 'p/y' }], fallback: [{ kind: 'publish', key: 'dl/y' }] });
    expect(bindings('a/x')).toEqual({ captures: ['x'], targets: [{ kind: 'publish', key: 'a/x' }, { kind: 'publish', key: 'p/x' }], fallback: [{ kind: 'publish', key: 'dl/x' }] });
  });

  it('decides a repeated key afresh when the message\'s protocol or headers choose another rule', () => {
    const table = compileRouteTable([
      rule('mqtt-only', 'a/#', { protocols: ['mqtt'] }),
      rule('tagged', 'a/#', { headers: { tag: 'x' } }),
      rule('rest', 'a/#'),
    ], 'drop');
    const winner = (protocol: Protocol, headers: Record<string, string> = {}) => table.match(message('a/b', protocol, headers)).matches.map((m) => m.route.name);
    expect(winner('mqtt')).toEqual(['mqtt-only']);
    expect(winner('http', { tag: 'x' })).toEqual(['tagged']);
    expect(winner('http')).toEqual(['rest']);
    expect(winner('mqtt')).toEqual(['mqtt-only']);
  });

  it('gives an empty fallback when the rule has none', () => {
    expect(compileRouteTable([rule('r', 'a')], 'drop').match(message('a')).matches[0]!.fallback).toEqual([]);
  });
});

describe('defaultRoute', () => {
  it.each<DefaultRoute>(['publish', 'drop'])('no match gives defaultRoute %s', (defaultRoute) => {
    const table = compileRouteTable([rule('r', 'a/+')], defaultRoute);
    expect(table.defaultRoute).toBe(defaultRoute);
    expect(table.match(message('b/c'))).toEqual({ matches: [], default: defaultRoute });
    expect(table.match(message('a/b')).default).toBeUndefined();
  });

  it('an empty table routes everything to the default', () => {
    expect(compileRouteTable([], 'publish').match(message('a'))).toEqual({ matches: [], default: 'publish' });
  });
});

describe('explain', () => {
  const routes = [
    rule('audit', '#', { priority: 10, continue: true }),
    rule('mqtt-only', 'a/+', { priority: 5, protocols: ['mqtt'] }),
    rule('json', 'a/b', { priority: 5, headers: { 'Content-Type': 'application/json' } }),
    rule('winner', 'a/b'),
    rule('late', 'a/#'),
    rule('elsewhere', 'x/y'),
  ];
  type Loser = { name: string; reason: LossReason };
  it.each<{ title: string; msg: RoutableMessage; won: string[]; losers: Loser[] }>([
    {
      title: 'protocol, header (absent) and precedence losers',
      msg: message('a/b', 'http'),
      won: ['audit', 'winner'],
      losers: [
        { name: 'mqtt-only', reason: { kind: 'protocol', expected: ['mqtt'] } },
        { name: 'json', reason: { kind: 'header', name: 'content-type', expected: 'application/json' } },
        { name: 'late', reason: { kind: 'precedence', winner: 'winner' } },
      ],
    },
    {
      title: 'header loser with the actual value',
      msg: message('a/b', 'ws', { 'content-type': 'text/plain' }),
      won: ['audit', 'winner'],
      losers: [
        { name: 'mqtt-only', reason: { kind: 'protocol', expected: ['mqtt'] } },
        { name: 'json', reason: { kind: 'header', name: 'content-type', expected: 'application/json', actual: 'text/plain' } },
        { name: 'late', reason: { kind: 'precedence', winner: 'winner' } },
      ],
    },
    {
      title: 'precedence losers name the rule that ended the chain',
      msg: message('a/b', 'mqtt'),
      won: ['audit', 'mqtt-only'],
      losers: [
        { name: 'json', reason: { kind: 'header', name: 'content-type', expected: 'application/json' } },
        { name: 'winner', reason: { kind: 'precedence', winner: 'mqtt-only' } },
        { name: 'late', reason: { kind: 'precedence', winner: 'mqtt-only' } },
      ],
    },
    {
      title: 'rules whose pattern does not match are not listed',
      msg: message('q', 'mqtt'),
      won: ['audit'],
      losers: [],
    },
    {
      title: 'a $ key is out of reach of a leading #',
      msg: message('$SYS/a', 'mqtt'),
      won: [],
      losers: [],
    },
  ])('$title', ({ msg, won, losers }) => {
    const table = compileRouteTable(routes, 'drop');
    const explanation = table.explain(msg);
    expect(explanation.decision).toEqual(table.match(msg));
    expect(explanation.decision.matches.map((m) => m.route.name)).toEqual(won);
    // Strict, so that an absent header is not reported as `actual: undefined`.
    expect(explanation.losers.map((l) => ({ name: l.route.name, reason: l.reason }))).toStrictEqual(losers);
  });

  it('filter losers without any winner', () => {
    const table = compileRouteTable([rule('ws', 'a', { protocols: ['ws'] })], 'publish');
    expect(table.explain(message('a', 'http'))).toEqual({
      decision: { matches: [], default: 'publish' },
      losers: [{ route: table.routes[0], reason: { kind: 'protocol', expected: ['ws'] } }],
    });
  });
});

describe('compiled table', () => {
  it('compiles rules with defaults, lower-cased header names and precedence order', () => {
    const table = compileRouteTable(
      [
        rule('plain', 'a'),
        rule('full', 'b/+', {
          priority: 20,
          set: { priority: 9 },
          mode: 'request',
          timeout: 1500,
          continue: true,
          expired: 'deadletter',
          rateLimit: { rate: 10, per: 1000, burst: 10, scope: 'route' },
          protocols: ['http'],
          headers: { 'X-Tenant': 't1' },
        }),
      ],
      'publish',
      7,
    );
    expect(table.version).toBe(7);
    expect(table.loadedAt).toBeInstanceOf(Date);
    expect(table.routes).toEqual([
      { name: 'full', index: 1, pattern: 'b/+', priority: 20, setPriority: 9, mode: 'request', timeout: 1500, continue: true, expired: 'deadletter', rateLimit: { rate: 10, per: 1000, burst: 10, scope: 'route' }, protocols: ['http'], headers: { 'x-tenant': 't1' } },
      { name: 'plain', index: 0, pattern: 'a', priority: 0, mode: 'deliver', timeout: 5000, continue: false, expired: 'drop' },
    ]);
    expect(compileRouteTable([], 'drop').version).toBe(1);
  });

  it('is frozen', () => {
    const table = compileRouteTable([rule('r', 'a', { headers: { h: 'v' }, protocols: ['ws'] })], 'drop');
    expect(Object.isFrozen(table)).toBe(true);
    expect(Object.isFrozen(table.routes)).toBe(true);
    const [route] = table.routes;
    expect(Object.isFrozen(route)).toBe(true);
    expect(Object.isFrozen(route!.headers)).toBe(true);
    expect(Object.isFrozen(route!.protocols)).toBe(true);
    expect(() => {
      (table as { version: number }).version = 2;
    }).toThrow(TypeError);
  });

  it('does not keep a reference to the config it was compiled from', () => {
    const config = rule('r', 'a', { protocols: ['ws'] });
    const table = compileRouteTable([config], 'drop');
    config.match.protocols!.push('mqtt');
    config.match.key = 'b';
    expect(table.match(message('a', 'mqtt')).matches).toEqual([]);
    expect(table.match(message('a', 'ws')).matches).toHaveLength(1);
  });

  it('leaves route checks to the config loader, which positions them: a duplicate name compiles', () => {
    const table = compileRouteTable([rule('r', 'a'), rule('r', 'b')], 'drop');
    expect(table.routes.map((r) => `${r.name} ${r.pattern}`)).toEqual(['r a', 'r b']);
  });
});
