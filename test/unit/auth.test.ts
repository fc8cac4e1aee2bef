import { describe, expect, it } from 'vitest';
import { filterCovers } from '../../src/topic/rules.js';
import { authConfigIssues } from '../../src/auth/config.js';
import { AccessControl } from '../../src/auth/index.js';
import { hashPassword, passwordHashProblem, verifyPassword } from '../../src/auth/password.js';
import { loadConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { isGatewayError } from '../../src/errors.js';

/** bcrypt of "bcrypt-secret" at cost 4 (made with bcryptjs), to show foreign hashes are accepted. */
const BCRYPT_HASH = '$2b$04$sd6hifncloS.fwVsCzORC.DspSXvrMT7DaD1B55Nllthu.1ijDjlu';

describe('password hashes', () => {
  it('verifies scrypt hashes it made and bcrypt hashes from elsewhere, and nothing else', async () => {
    const hash = await hashPassword('s3cret');
    expect(hash).toMatch(/^scrypt:16384:8:1:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
    expect(passwordHashProblem(hash)).toBeUndefined();
    expect(await verifyPassword(hash, 's3cret')).toBe(true);
    expect(await verifyPassword(hash, Buffer.from('s3cret'))).toBe(true);
    expect(await verifyPassword(hash, 's3cret ')).toBe(false);
    expect(await hashPassword('s3cret')).not.toBe(hash);
    expect(passwordHashProblem(BCRYPT_HASH)).toBeUndefined();
    expect(await verifyPassword(BCRYPT_HASH, 'bcrypt-secret')).toBe(true);
    expect(await verifyPassword(BCRYPT_HASH, 'other')).toBe(false);
  });

  it('refuses plain passwords and unusable parameters', () => {
    expect(passwordHashProblem('hunter2')).toMatch(/never a plain password/);
    expect(passwordHashProblem('scrypt:1000:8:1:c2FsdA==:a2V5a2V5a2V5a2V5a2V5a2V5')).toMatch(/power of two/);
    expect(passwordHashProblem('scrypt:16384:8:1:c2FsdA==:a2V5')).toMatch(/at least 16 bytes/);
  });
});

describe('filterCovers', () => {
  it.each([
    ['#', 'a/b', true],
    ['#', '+/b', true],
    ['#', '$SYS/#', false],
    ['$SYS/#', '$SYS/broker/+', true],
    ['a/#', 'a', true],
    ['a/#', 'a/#', true],
    ['a/#', 'b/#', false],
    ['a/+', 'a/b', true],
    ['a/+', 'a/+', true],
    ['a/+', 'a/#', false],
    ['a/+', 'a/b/c', false],
    ['a/b', 'a/+', false],
    ['a/b', 'a/b', true],
    ['+/+', 'a/+', true],
    ['+', '$x', false],
  ])('%s covers %s: %s', (pattern, filter, expected) => {
    expect(filterCovers(pattern, filter)).toBe(expected);
  });
});

describe('AccessControl', () => {
  it('lets users in by password, anonymous clients only when allowed, and applies allow rules', async () => {
    const password = await hashPassword('pw');
    const users = [{ username: 'dev-1', password, principal: 'dev-1' }, { username: 'ops', password, principal: 'operator' }];
    const acl = [
      { principal: '*', publish: ['devices/{principal}/#'], subscribe: ['commands/{principal}/+'] },
      { principal: 'operator', subscribe: ['#'] },
      { principal: 'anonymous', subscribe: ['public/#'] },
    ];
    const closed = new AccessControl({ anonymous: false, users, acl });
    await expect(closed.authenticate(undefined, undefined)).rejects.toMatchObject({ code: 'unauthenticated' });
    const wrong = await closed.authenticate('dev-1', 'nope').catch((err: unknown) => err);
    expect(isGatewayError(wrong) && wrong.code).toBe('unauthenticated');
    await expect(closed.authenticate('nobody', 'pw')).rejects.toMatchObject({ code: 'unauthenticated' });

    const device = await closed.authenticate('dev-1', Buffer.from('pw'));
    expect(device).toEqual({ principal: 'dev-1' });
    expect(closed.canPublish(device, 'devices/dev-1/temp')).toBe(true);
    expect(closed.canPublish(device, 'devices/dev-2/temp')).toBe(false);
    expect(closed.canSubscribe(device, 'commands/dev-1/+')).toBe(true);
    expect(closed.canSubscribe(device, 'commands/dev-1/#')).toBe(false);
    expect(closed.canSubscribe(device, '#')).toBe(false);

    const operator = await closed.authenticate('ops', 'pw');
    expect(operator).toEqual({ principal: 'operator' });
    expect(closed.canSubscribe(operator, 'devices/+/temp')).toBe(true);
    expect(closed.canSubscribe(operator, '$SYS/#')).toBe(false);
    expect(closed.canPublish(operator, 'devices/operator/x')).toBe(true);

    const open = new AccessControl({ anonymous: true, users, acl });
    const anonymous = await open.authenticate('', undefined);
    expect(anonymous).toEqual({ principal: undefined });
    expect(open.canSubscribe(anonymous, 'public/news')).toBe(true);
    expect(open.canPublish(anonymous, 'devices/undefined/x')).toBe(false);

    const noRules = new AccessControl({ anonymous: true, users: [] });
    expect(noRules.canPublish(anonymous, 'anything/at/all')).toBe(true);
    expect(noRules.canSubscribe(anonymous, '#')).toBe(true);
  });
});

describe('auth config', () => {
  it('reports hashes that are not hashes, reserved principals, bad patterns and dead rules', () => {
    const issues = authConfigIssues({
      anonymous: false,
      users: [
        { username: 'a', password: 'plain' },
        { username: 'a', password: BCRYPT_HASH },
        { username: 'b', password: BCRYPT_HASH, principal: 'x/y' },
        { username: '*', password: BCRYPT_HASH },
      ],
      acl: [
        { principal: 'ghost', publish: ['a/#/b'] },
        { principal: 'anonymous', subscribe: ['{user}/x', 'p/{principal}'] },
      ],
    });
    expect(issues.map((i) => `${i.path.join('.')}: ${i.message}${i.warning ? ' (warning)' : ''}`)).toEqual([
      expect.stringMatching(/^auth\.users\.0\.password: expected a password hash/),
      'auth.users.1.username: duplicate username "a"; auth.users[0] already has it',
      'auth.users.2.principal: principal must not contain / + # or NUL: it is substituted into key patterns as one level',
      'auth.users.3.username: principal "*" is reserved for ACL rules; choose another name',
      'auth.acl.0.principal: no user has the principal "ghost": this rule never applies (warning)',
      'auth.acl.0.publish.0: # must be a whole level and the last one',
      'auth.acl.1.principal: this rule is for anonymous clients, but auth.anonymous is not true: it never applies (warning)',
      'auth.acl.1.subscribe.0: unknown placeholder {user}; only {principal} is replaced',
      'auth.acl.1.subscribe.1: anonymous clients have no principal: a pattern with {principal} never applies to them (warning)',
    ]);
  });

  it('are positioned in the file like every other config error', () => {
    let error: unknown;
    try {
      loadConfigText('auth:\n  users:\n    - { username: u, password: hunter2 }\n', '/etc/junction/gateway.yaml', {});
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).issues[0]).toMatchObject({ line: 3, path: 'auth.users[0].password' });
  });

  it('defaults to closed: no anonymous access, no users, no rules', () => {
    const { config } = loadConfigText('', '/etc/junction/gateway.yaml', {});
    expect(config.auth).toEqual({ anonymous: false, users: [] });
  });
});
