import { createHash } from 'node:crypto';
import type { AclRule, GatewayConfig } from '../config/types.js';
import { GatewayError } from '../errors.js';
import { PRINCIPAL_PLACEHOLDER } from './acl.js';
import { filterCovers, filterMatches, reservedKeyProblem } from '../topic/rules.js';
import { ANONYMOUS, ANY_PRINCIPAL } from './config.js';
import { verifyPassword } from './password.js';

/** Who a client is once let in. */
export interface Identity {
  /** undefined for a client let in without credentials (auth.anonymous) */
  principal: string | undefined;
}

export type AuthConfig = GatewayConfig['auth'];

interface Grants {
  publish: string[];
  subscribe: string[];
}

/**
 * Checked against when a username is unknown, so that answering takes as long as for a known
 * one and response times do not tell which usernames exist. Its password is random and lost.
 */
const UNKNOWN_USER_HASH = 'scrypt:16384:8:1:Wi/Jc2RjOyJK63ONGdaDPg==:rUxdzFdqeoDsnk1fdKqd1cXbJThoYvMbswwbb50G33k=';

/**
 * The one authentication and ACL layer of every protocol, built from the `auth:` section.
 * ACL rules allow; when there are rules, what none allows is refused.
 */
export class AccessControl {
  readonly #config: AuthConfig;
  readonly #users = new Map<string, { hash: string; principal: string }>();
  /** expanded grants per principal ('' = anonymous); principals only come from the config, so this stays small */
  readonly #grants = new Map<string, Grants>();
  /** username + digest of passwords verified since this config was loaded (bounded) */
  readonly #verified = new Set<string>();

  constructor(config: AuthConfig) {
    this.#config = config;
    for (const user of config.users) this.#users.set(user.username, { hash: user.password, principal: user.principal });
  }

  /**
   * Lets a client in with a username and password, or without credentials when anonymous
   * access is on. Throws `unauthenticated` otherwise.
   */
  async authenticate(username: string | undefined, password: Buffer | string | undefined): Promise<Identity> {
    if (username === undefined || username === '') {
      if (this.#config.anonymous) return { principal: undefined };
      throw new GatewayError('unauthenticated', 'credentials are required (auth.anonymous is off)');
    }
    const user = this.#users.get(username);
    // A password hash is slow on purpose; protocols that authenticate every request (HTTP, gRPC
    // calls) would pay it each time, so a recent success is remembered by a digest of the secret.
    const remembered = `${username}\u0000${createHash('sha256').update(password ?? '').digest('base64')}`;
    if (user && this.#verified.has(remembered)) return { principal: user.principal };
    const ok = await verifyPassword(user?.hash ?? UNKNOWN_USER_HASH, password ?? '');
    if (!user || !ok) throw new GatewayError('unauthenticated', 'bad username or password');
    if (this.#verified.size >= 10_000) this.#verified.clear();
    this.#verified.add(remembered);
    return { principal: user.principal };
  }

  /**
   * Lets in a client that can only carry one opaque string (a browser's WebSocket: a query
   * parameter or a subprotocol). The token is `username:password` of a configured user;
   * no token means anonymous, as for `authenticate`.
   */
  authenticateToken(token: string | undefined): Promise<Identity> {
    if (token === undefined || token === '') return this.authenticate(undefined, undefined);
    const colon = token.indexOf(':');
    if (colon <= 0) return Promise.reject(new GatewayError('unauthenticated', 'a token is username:password'));
    return this.authenticate(token.slice(0, colon), token.slice(colon + 1));
  }

  /** Reserved keys (`$SYS/`, inboxes) first: no rule grants them, on any protocol. */
  canPublish(identity: Identity, key: string): boolean {
    if (reservedKeyProblem(key) !== undefined) return false;
    const grants = this.#grantsOf(identity);
    return grants === undefined || grants.publish.some((pattern) => filterMatches(pattern, key));
  }

  /** A subscription is allowed when one allowed pattern covers every key it can match. */
  canSubscribe(identity: Identity, filter: string): boolean {
    const grants = this.#grantsOf(identity);
    return grants === undefined || grants.subscribe.some((pattern) => filterCovers(pattern, filter));
  }

  #grantsOf(identity: Identity): Grants | undefined {
    const rules = this.#config.acl;
    if (rules === undefined) return undefined;
    const cacheKey = identity.principal ?? '';
    let grants = this.#grants.get(cacheKey);
    if (!grants) {
      grants = { publish: [], subscribe: [] };
      for (const rule of rules) {
        if (!appliesTo(rule, identity)) continue;
        grants.publish.push(...expand(rule.publish, identity));
        grants.subscribe.push(...expand(rule.subscribe, identity));
      }
      this.#grants.set(cacheKey, grants);
    }
    return grants;
  }
}

function appliesTo(rule: AclRule, identity: Identity): boolean {
  if (identity.principal === undefined) return rule.principal === ANONYMOUS;
  return rule.principal === ANY_PRINCIPAL || rule.principal === identity.principal;
}

/** Patterns with {principal} filled in; for an anonymous client they do not apply at all. */
function expand(patterns: string[] | undefined, identity: Identity): string[] {
  const principal = identity.principal;
  return (patterns ?? []).flatMap((pattern) => {
    if (!pattern.includes(PRINCIPAL_PLACEHOLDER)) return [pattern];
    return principal === undefined ? [] : [pattern.replaceAll(PRINCIPAL_PLACEHOLDER, principal)];
  });
}

/**
 * The token in an `Authorization` value, as every protocol takes it: `Bearer TOKEN`, or `Basic`
 * with base64(username:password); a token is `username:password` (see `authenticateToken`).
 */
export function tokenFromAuthorization(value: string): string {
  const [scheme, credentials = ''] = value.trim().split(/\s+/, 2);
  if (scheme?.toLowerCase() === 'bearer' && credentials !== '') return credentials;
  if (scheme?.toLowerCase() === 'basic') return Buffer.from(credentials, 'base64').toString('utf8');
  throw new GatewayError('unauthenticated', 'Authorization must be Bearer TOKEN or Basic with base64(username:password)');
}

const cache = new WeakMap<AuthConfig, AccessControl>();

/** The AccessControl of one loaded config; a reload brings a new config object and so a new one. */
export function accessControl(config: AuthConfig): AccessControl {
  let control = cache.get(config);
  if (!control) {
    control = new AccessControl(config);
    cache.set(config, control);
  }
  return control;
}
