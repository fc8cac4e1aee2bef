import { describe, expect, it } from 'vitest';
import { filterCovers } from '../../src/topic/rules.js';
import { authConfigIssues } from '../../src/auth/config.js';
import { pino } from 'pino';
import { exportSPKI, generateKeyPair, SignJWT } from 'jose';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AccessControl, AuthGuard, certificatePrincipal } from '../../src/auth/index.js';
import { apiKeyHashProblem, newApiKey } from '../../src/auth/api-key.js';
import { fakeClock } from '../helpers/clock.js';
import { hashPassword, passwordHashProblem, verifyPassword } from '../../src/auth/password.js';
import { loadConfigText } from '../../src/config/load.js';
import { ConfigError } from '../../src/config/types.js';
import { isGatewayError, SetupError } from '../../src/errors.js';

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

const listeners = { http: { host: 'x', port: 1, maxConnections: 1, maxConnectionsPerIp: 1, connectRate: { rate: 1, per: 1000, burst: 1 }, timeouts: { handshake: 1, headers: 1, request: 1, keepAlive: 1, idle: 1 } } };
const authDefaults = {
  apiKeys: [], certificate: { principal: 'commonName' as const },
  backoff: { after: 3, initial: 1000, max: 8000 }, verification: { concurrency: 2, maxPending: 100, maxPendingPerIp: 4 },
};
const peer = { listener: 'http', address: '10.0.0.1' };
const allow = (rule: Record<string, unknown>) => ({ effect: 'allow' as const, ...rule });
const deny = (rule: Record<string, unknown>) => ({ effect: 'deny' as const, ...rule });

describe('AccessControl', () => {
  it('identifies without a promise what needs no verification, and with one what does', async () => {
    const password = await hashPassword('pw');
    const users = [{ username: 'dev-1', password, principal: 'dev-1' }];
    const open = new AccessControl({ auth: { ...authDefaults, anonymous: true, users }, listeners });
    expect(open.identify({}, peer)).toMatchObject({ principal: undefined, method: 'anonymous' });
    expect(() => open.identify({ token: 'no-colon' }, peer)).toThrow(/API key, a JWT or username:password/);

    const first = open.identify({ token: 'dev-1:pw' }, peer);
    expect(first).toBeInstanceOf(Promise);
    const device = await first;
    expect(device).toMatchObject({ principal: 'dev-1', method: 'password' });
    // Verified once under this config: the same credentials are known at once from then on.
    expect(open.identify({ username: 'dev-1', password: 'pw' }, peer)).toBe(device);
    const wrong = open.identify({ token: 'dev-1:nope' }, peer);
    expect(wrong).toBeInstanceOf(Promise);
    await expect(wrong).rejects.toMatchObject({ code: 'unauthenticated' });
  });

  it('lets users in by password, anonymous clients only when allowed, and applies allow rules', async () => {
    const password = await hashPassword('pw');
    const users = [{ username: 'dev-1', password, principal: 'dev-1' }, { username: 'ops', password, principal: 'operator' }];
    const acl = [
      allow({ principal: '*', publish: ['devices/{principal}/#'], subscribe: ['commands/{principal}/+'] }),
      allow({ principal: 'operator', subscribe: ['#'] }),
      allow({ principal: 'anonymous', subscribe: ['public/#'] }),
    ];
    const closed = new AccessControl({ auth: { ...authDefaults, anonymous: false, users, acl }, listeners });
    await expect(closed.authenticate({}, peer)).rejects.toMatchObject({ code: 'unauthenticated' });
    const wrong = await closed.authenticate({ username: 'dev-1', password: 'nope' }, peer).catch((err: unknown) => err);
    expect(isGatewayError(wrong) && wrong.code).toBe('unauthenticated');
    await expect(closed.authenticate({ username: 'nobody', password: 'pw' }, peer)).rejects.toMatchObject({ code: 'unauthenticated' });

    const device = await closed.authenticate({ username: 'dev-1', password: Buffer.from('pw') }, peer);
    expect(device).toMatchObject({ principal: 'dev-1', method: 'password' });
    expect(await closed.authenticate({ token: 'dev-1:pw' }, peer)).toBe(device);
    expect(closed.canPublish(device, 'devices/dev-1/temp')).toBe(true);
    expect(closed.canPublish(device, 'devices/dev-2/temp')).toBe(false);
    expect(closed.canSubscribe(device, 'commands/dev-1/+')).toBe(true);
    expect(closed.canSubscribe(device, 'commands/dev-1/#')).toBe(false);
    expect(closed.canSubscribe(device, '#')).toBe(false);

    const operator = await closed.authenticate({ username: 'ops', password: 'pw' }, peer);
    expect(operator.principal).toBe('operator');
    expect(closed.canSubscribe(operator, 'devices/+/temp')).toBe(true);
    expect(closed.canSubscribe(operator, '$SYS/#')).toBe(false);
    expect(closed.canPublish(operator, 'devices/operator/x')).toBe(true);
    // Answering requests is its own action: subscribing does not grant it.
    expect(closed.canRespond(operator, 'devices/+/temp')).toBe(false);

    const open = new AccessControl({ auth: { ...authDefaults, anonymous: true, users, acl }, listeners });
    const anonymous = await open.authenticate({ username: '' }, peer);
    expect(anonymous).toMatchObject({ principal: undefined, method: 'anonymous' });
    expect(open.canSubscribe(anonymous, 'public/news')).toBe(true);
    expect(open.canPublish(anonymous, 'devices/undefined/x')).toBe(false);
  });

  it('remembers publish decisions per identity and key, and asks the ACL of each identity itself', () => {
    const acl = [allow({ principal: '*', publish: ['devices/{principal}/#'] })];
    const control = new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [], acl }, listeners });
    const one = { principal: 'dev-1', roles: [], claims: {} };
    const two = { principal: 'dev-2', roles: [], claims: {} };
    for (let i = 0; i < 3; i++) {
      expect(control.canPublish(one, 'devices/dev-1/temp')).toBe(true);
      expect(control.canPublish(two, 'devices/dev-1/temp')).toBe(false);
      expect(control.canPublish(one, '$SYS/x')).toBe(false);
    }
    // Past the memory's bound it starts over and still answers the same.
    for (let i = 0; i < 1500; i++) expect(control.canPublish(one, `devices/dev-1/${i}`)).toBe(true);
    expect(control.canPublish(two, 'devices/dev-2/temp')).toBe(true);
    expect(control.canPublish(one, 'devices/dev-2/temp')).toBe(false);
  });

  it('without acl: everything is allowed for a demo open to anonymous clients, nothing once anonymous is off; reserved keys never', () => {
    const subject = { principal: 'p', roles: [], claims: {} };
    const demo = new AccessControl({ auth: { ...authDefaults, anonymous: true, users: [] }, listeners });
    expect(demo.canPublish(subject, 'anything/at/all')).toBe(true);
    expect(demo.canSubscribe(subject, '#')).toBe(true);
    expect(demo.canRespond(subject, 'rpc/#')).toBe(true);
    expect(demo.canPublish(subject, '$SYS/x')).toBe(false);
    expect(demo.canPublish(subject, '_inbox/x')).toBe(false);
    const closed = new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [] }, listeners });
    expect(closed.canPublish(subject, 'anything')).toBe(false);
    expect(closed.canSubscribe(subject, 'x')).toBe(false);
  });

  it('decides by the first rule that concerns the request, deny rules included, and by role and claim', () => {
    const acl = [
      deny({ principal: '*', publish: ['tenants/+/admin/#'], subscribe: ['tenants/+/secrets/#'] }),
      allow({ role: 'admin', publish: ['#'], subscribe: ['#'] }),
      allow({ principal: '*', publish: ['tenants/{claim.tenant}/#'], subscribe: ['tenants/{claim.tenant}/#'], respond: ['tenants/{claim.tenant}/rpc/#'] }),
    ];
    const control = new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [], acl }, listeners });
    const alice = { principal: 'alice', roles: [], claims: { tenant: 'acme' } };
    const root = { principal: 'root', roles: ['admin'], claims: {} };
    expect(control.decide(alice, 'publish', 'tenants/acme/x')).toMatchObject({ allowed: true, rule: 2, pattern: 'tenants/acme/#' });
    expect(control.canPublish(alice, 'tenants/other/x')).toBe(false);
    expect(control.decide(alice, 'publish', 'tenants/acme/admin/x')).toMatchObject({ allowed: false, rule: 0 });
    // A deny pattern refuses a subscription that could reach what it names, even through a wildcard.
    expect(control.decide(alice, 'subscribe', 'tenants/acme/#')).toMatchObject({ allowed: false, rule: 0 });
    expect(control.canSubscribe(alice, 'tenants/acme/public/#')).toBe(true);
    expect(control.canRespond(alice, 'tenants/acme/rpc/add')).toBe(true);
    expect(control.canRespond(alice, 'tenants/acme/other')).toBe(false);
    expect(control.canPublish(root, 'anything')).toBe(true);
    expect(control.canPublish(root, 'tenants/acme/admin/x')).toBe(false);
    // A claim that is missing, or not one level, makes its pattern not apply.
    expect(control.canPublish({ ...alice, claims: {} }, 'tenants//x')).toBe(false);
    expect(control.canPublish({ ...alice, claims: { tenant: 'a/b' } }, 'tenants/a/b/x')).toBe(false);
  });

  it('takes API keys made by `junction api-key`: the id finds the one hash to check', async () => {
    const made = await newApiKey();
    const other = await newApiKey();
    const control = new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [], apiKeys: [{ key: made.hash, principal: 'backend-1', roles: ['svc'] }] }, listeners });
    expect(await control.authenticate({ token: made.key }, peer)).toMatchObject({ principal: 'backend-1', method: 'apiKey', roles: ['svc'] });
    // As the MQTT password, whatever the username.
    expect(await control.authenticate({ username: 'ignored', password: made.key }, peer)).toMatchObject({ principal: 'backend-1' });
    await expect(control.authenticate({ token: other.key }, peer)).rejects.toMatchObject({ code: 'unauthenticated', message: 'unknown API key' });
    const forged = `${made.key.slice(0, made.key.indexOf('.') + 1)}${'A'.repeat(43)}`;
    await expect(control.authenticate({ token: forged }, peer)).rejects.toMatchObject({ code: 'unauthenticated' });
    expect(apiKeyHashProblem(made.hash)).toBeUndefined();
    expect(apiKeyHashProblem(made.key)).toMatch(/never the key itself/);
  });

  it('verifies JWTs: principal and roles from claims, issuer and audience, and says why one is refused without the token', async () => {
    const secret = 'a secret of at least thirty-two characters';
    const jwt = { secret, issuer: 'https://idp', audience: 'junction', clockTolerance: 0, jwksCacheMaxAge: 600_000, jwksCooldown: 30_000, principalClaim: 'sub', rolesClaim: 'roles' };
    const logged: Record<string, unknown>[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => { logged.push(JSON.parse(line) as Record<string, unknown>); } });
    const control = new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [], jwt }, listeners }, { logger });
    const key = new TextEncoder().encode(secret);
    const now = Math.floor(Date.now() / 1000);
    const sign = (claims: Record<string, unknown>, changes: { issuer?: string; audience?: string; key?: Uint8Array } = {}) =>
      new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuer(changes.issuer ?? 'https://idp').setAudience(changes.audience ?? 'junction')
        .setSubject('dev-7').setIssuedAt(now).setExpirationTime(now + 60).sign(changes.key ?? key);
    const good = await sign({ roles: 'reader writer', tenant: 'acme', n: 3, nested: { x: 1 } });
    const identity = await control.authenticate({ token: good }, peer);
    expect(identity).toMatchObject({ principal: 'dev-7', method: 'jwt', roles: ['reader', 'writer'], claims: { tenant: 'acme', n: '3', sub: 'dev-7' }, expiresAt: (now + 60) * 1000 });
    expect(identity.claims.nested).toBeUndefined();
    const refusals: [string, string][] = [
      [await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('x').setIssuer('https://idp').setAudience('junction').setExpirationTime(now - 10).sign(key), 'expired'],
      [await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('x').setIssuer('https://idp').setAudience('junction').setNotBefore(now + 600).sign(key), 'not yet valid (nbf)'],
      [await sign({}, { key: new TextEncoder().encode('another secret of thirty-two chars!!') }), 'bad signature'],
      [await sign({}, { audience: 'someone-else' }), 'wrong aud claim'],
      [await sign({}, { issuer: 'https://evil' }), 'wrong iss claim'],
    ];
    for (const [token, reason] of refusals) {
      const err = await control.authenticate({ token }, { ...peer, address: `10.1.0.${refusals.findIndex(([t]) => t === token)}` }).catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'unauthenticated', message: `JWT refused: ${reason}` });
    }
    const lines = logged.filter((line) => line.msg === 'credentials refused');
    expect(lines.map((line) => line.reason)).toEqual(refusals.map(([, reason]) => `JWT refused: ${reason}`));
    expect(JSON.stringify(logged)).not.toContain(good.slice(good.indexOf('.') + 1, good.lastIndexOf('.')));
    for (const [token] of refusals) expect(JSON.stringify(logged)).not.toContain(token);
  });

  it('verifies EdDSA and RS256 tokens with a public key file; a file that holds no key is a SetupError naming auth.jwt.publicKey', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'junction-jwt-key-'));
    try {
      for (const alg of ['EdDSA', 'RS256'] as const) {
        const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
        const file = join(dir, `${alg}.pem`);
        writeFileSync(file, await exportSPKI(publicKey));
        const jwt = { publicKey: file, clockTolerance: 0, jwksCacheMaxAge: 1, jwksCooldown: 1, principalClaim: 'sub', rolesClaim: 'roles' };
        const control = new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [], jwt }, listeners });
        const token = await new SignJWT({}).setProtectedHeader({ alg }).setSubject(`by-${alg}`).setExpirationTime('1m').sign(privateKey);
        expect(await control.authenticate({ token }, peer)).toMatchObject({ principal: `by-${alg}`, method: 'jwt' });
        // A token signed with the shared-secret algorithm and the public key as secret is refused.
        const confused = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject('x').sign(new TextEncoder().encode(readFileSync(file, 'utf8')));
        await expect(control.authenticate({ token: confused }, { ...peer, address: alg })).rejects.toMatchObject({ code: 'unauthenticated' });
      }
      const garbage = join(dir, 'garbage.pem');
      writeFileSync(garbage, 'no key here\n');
      const jwt = { publicKey: garbage, clockTolerance: 0, jwksCacheMaxAge: 1, jwksCooldown: 1, principalClaim: 'sub', rolesClaim: 'roles' };
      expect(() => new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [], jwt }, listeners })).toThrow(SetupError);
      expect(() => new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [], jwt }, listeners })).toThrow(/^auth\.jwt\.publicKey: /);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('names a client by its verified certificate, and takes only the credentials its listener lists', async () => {
    const password = await hashPassword('pw');
    const mtls = {
      ...listeners,
      mqtt: { ...listeners.http, tls: { cert: 'c', key: 'k', ca: 'ca', clientCert: 'request' as const }, credentials: ['certificate' as const, 'jwt' as const] },
    };
    const control = new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [{ username: 'u', password, principal: 'u' }] }, listeners: mtls });
    const certificate = { authorized: true, commonName: 'sensor-9', altNames: ['DNS:sensor-9.example', 'URI:spiffe://x/y'] };
    expect(await control.authenticate({}, { listener: 'mqtt', certificate })).toMatchObject({ principal: 'sensor-9', method: 'certificate' });
    await expect(control.authenticate({}, { listener: 'mqtt', certificate: { ...certificate, authorized: false, error: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' } }))
      .rejects.toMatchObject({ code: 'unauthenticated', message: expect.stringContaining('not trusted') as string });
    await expect(control.authenticate({ username: 'u', password: 'pw' }, { listener: 'mqtt' })).rejects.toMatchObject({ message: 'password credentials are not taken on listeners.mqtt' });
    expect(await control.authenticate({ username: 'u', password: 'pw' }, { listener: 'http' })).toMatchObject({ principal: 'u' });
    expect(control.accepted('http')).toEqual(['password']);
    expect(certificatePrincipal(certificate, 'altName')).toBe('sensor-9.example');
  });

  it('backs an address off after failures in a row, without checking its credentials meanwhile', async () => {
    const password = await hashPassword('pw');
    const clock = fakeClock();
    const guard = new AuthGuard({ clock });
    const control = new AccessControl({ auth: { ...authDefaults, anonymous: false, users: [{ username: 'u', password, principal: 'u' }] }, listeners }, { guard });
    for (let i = 0; i < 3; i++) await expect(control.authenticate({ username: 'u', password: 'bad' }, peer)).rejects.toMatchObject({ code: 'unauthenticated' });
    await expect(control.authenticate({ username: 'u', password: 'pw' }, peer)).rejects.toMatchObject({ code: 'rate_limited', details: { retryAfterMs: 1000 } });
    // Another address is not concerned.
    expect(await control.authenticate({ username: 'u', password: 'pw' }, { ...peer, address: '10.0.0.2' })).toMatchObject({ principal: 'u' });
    expect(guard.counters).toMatchObject({ backedOff: 1, backoffsStarted: 1 });
    await clock.advance(1000);
    await expect(control.authenticate({ username: 'u', password: 'bad' }, peer)).rejects.toMatchObject({ code: 'unauthenticated' });
    // The back-off doubles with each further failure.
    await expect(control.authenticate({ username: 'u', password: 'bad' }, peer)).rejects.toMatchObject({ code: 'rate_limited', details: { retryAfterMs: 2000 } });
    // Past the back-off, a right password gets in; failures are forgotten after auth.backoff.max.
    await clock.advance(2000);
    expect(await control.authenticate({ username: 'u', password: 'pw' }, { ...peer, address: '10.0.0.1' })).toMatchObject({ principal: 'u' });
    await clock.advance(8001);
    await expect(control.authenticate({ username: 'u', password: 'bad' }, peer)).rejects.toMatchObject({ code: 'unauthenticated' });
    await expect(control.authenticate({ username: 'u', password: 'bad' }, peer)).rejects.toMatchObject({ code: 'unauthenticated' });
  });
});

describe('AuthGuard', () => {
  it('serves the verification queue one address at a time, in turn, within its bounds', async () => {
    const guard = new AuthGuard();
    const limits = { concurrency: 1, maxPending: 5, maxPendingPerIp: 3 };
    const order: string[] = [];
    const gates: (() => void)[] = [];
    const check = (name: string) => () => new Promise<boolean>((resolve) => gates.push(() => {
      order.push(name);
      resolve(true);
    }));
    const all = [
      ...['f1', 'f2', 'f3', 'f4'].map((name) => guard.verify('flooder', check(name), limits)),
      guard.verify('fleet', check('legit'), limits),
    ];
    await expect(guard.verify('flooder', check('f5'), limits)).rejects.toMatchObject({ code: 'rate_limited' });
    all.push(guard.verify('other', check('o1'), limits));
    await expect(guard.verify('late', check('x'), limits)).rejects.toMatchObject({ code: 'overloaded' });
    for (let i = 0; i < 6; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      gates.shift()!();
    }
    await Promise.all(all);
    // f1 was running; then the addresses never served, so the fleet's check is second, not fifth.
    expect(order).toEqual(['f1', 'legit', 'o1', 'f2', 'f3', 'f4']);
    expect(guard.counters).toMatchObject({ perIpQueueFull: 1, queueFull: 1 });
    expect(guard.pending).toBe(0);
  });

  it('remembers a bounded number of addresses, the oldest forgotten first', () => {
    const guard = new AuthGuard({ maxAddresses: 3 });
    const policy = { after: 5, initial: 1000, max: 1000 };
    for (const address of ['a', 'b', 'c', 'd']) guard.failed(address, policy);
    expect(guard.trackedAddresses).toBe(3);
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
      apiKeys: [{ key: 'jk_plain-key', principal: 'svc' }],
      jwt: { secret: 'x'.repeat(32), jwks: 'http://idp/jwks' },
      acl: [
        { principal: 'ghost', role: 'r', publish: ['a/#/b'] },
        { principal: 'anonymous', subscribe: ['{user}/x', 'p/{principal}', 't/{claim.tenant}/#'], respond: ['{claim.}/#'] },
      ],
    }, {
      mqtt: { host: 'h', port: 1, tls: { cert: '/nonexistent/c.pem', key: '/nonexistent/k.pem', clientCert: 'require' }, credentials: ['password', 'certificate'] },
      grpc: { host: 'h', port: 2, credentials: ['certificate'] },
    });
    expect(issues.map((i) => `${i.path.join('.')}: ${i.message}${i.warning ? ' (warning)' : ''}`)).toEqual([
      'listeners.mqtt.tls.ca: clientCert: require needs ca: the CA certificate(s) client certificates are checked against',
      'listeners.mqtt.tls.cert: file not found: /nonexistent/c.pem (warning)',
      'listeners.mqtt.tls.key: file not found: /nonexistent/k.pem (warning)',
      'listeners.grpc.credentials.0: certificate needs tls.clientCert: request or require on this listener',
      expect.stringMatching(/^auth\.users\.0\.password: expected a password hash/),
      'auth.users.1.username: duplicate username "a"; auth.users[0] already has it',
      'auth.users.2.principal: principal must not contain / + # or NUL: it is substituted into key patterns as one level',
      'auth.users.3.username: principal "*" is reserved for ACL rules; choose another name',
      'auth.apiKeys.0.key: expected an scrypt hash from `junction api-key` (scrypt:N:r:p:SALT:KEY), never the key itself',
      'auth.jwt: give one of secret, publicKey or jwks, not secret and jwks',
      'auth.acl.0: a rule names whom it is for with exactly one of principal or role',
      'auth.acl.0.publish.0: # must be a whole level and the last one',
      'auth.acl.1.subscribe.0: unknown placeholder {user}; only {principal} and {claim.NAME} are replaced',
      'auth.acl.1.subscribe.1: anonymous clients have no principal: a pattern with {principal} never applies to them (warning)',
      'auth.acl.1.respond.0: unknown placeholder {claim.}; only {principal} and {claim.NAME} are replaced',
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
    expect(config.auth).toMatchObject({ anonymous: false, users: [], apiKeys: [] });
    expect(config.auth.acl).toBeUndefined();
    expect(config.auth.jwt).toBeUndefined();
  });
});
