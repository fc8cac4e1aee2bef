import { createHash } from 'node:crypto';
import { clientListener, type GatewayConfig } from '../config/types.js';
import type { CredentialKind } from '../config/schema.js';
import { GatewayError, toGatewayError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { ClientCertificate } from '../tls/listener-tls.js';
import { decide, levelProblem, type AclAction, type AclDecision, type Subject } from './acl.js';
import { apiKeyIdOfHash, isApiKey, splitApiKey, verifyApiKeySecret } from './api-key.js';
import { AuthGuard } from './guard.js';
import { JwtVerifier, looksLikeJwt } from './jwt.js';
import { verifyPassword } from './password.js';

export { AuthGuard } from './guard.js';
export type { ClientCertificate } from '../tls/listener-tls.js';

/** Who a client is once let in, and what the ACL knows of it. */
export interface Identity extends Subject {
  /** undefined for a client let in without credentials (auth.anonymous) */
  principal: string | undefined;
  /** how the client proved it */
  method: CredentialKind;
  /** ms since epoch when the credential stops being valid (a JWT's exp): long-lived connections end then */
  expiresAt?: number;
}

/**
 * What a client presented. `username` and `password` as MQTT's CONNECT and HTTP Basic carry
 * them; `token` as a Bearer value, a WebSocket subprotocol or query parameter carries it: an API
 * key, a JWT or `username:password`. A JWT or an API key also works as the password.
 */
export interface Credentials {
  username?: string | undefined;
  password?: string | Buffer | undefined;
  token?: string | undefined;
}

/** Where a client came from: the listener (whose `credentials` apply), its address, its TLS certificate. */
export interface Peer {
  listener: string;
  address?: string | undefined;
  certificate?: ClientCertificate | undefined;
}

/** What AccessControl reads of the config in force. */
export type AccessConfig = Pick<GatewayConfig, 'auth' | 'listeners'>;
export type AuthConfig = GatewayConfig['auth'];

export interface AccessDeps {
  /** back-off and the verification queue; the gateway keeps one across reloads */
  guard?: AuthGuard;
  logger?: Logger;
}

/**
 * Checked against when a username is unknown, so that answering takes as long as for a known
 * one and response times do not tell which usernames exist. Its password is random and lost.
 */
const UNKNOWN_USER_HASH = 'scrypt:16384:8:1:Wi/Jc2RjOyJK63ONGdaDPg==:rUxdzFdqeoDsnk1fdKqd1cXbJThoYvMbswwbb50G33k=';
/** verified credentials remembered per loaded config */
const REMEMBERED_MAX = 10_000;
/**
 * Keys whose publish decision is remembered per identity: a client repeats its keys, and a
 * decision walks the ACL and builds its reason. Past this the memory starts over.
 */
const PUBLISH_DECISIONS_MAX = 1000;
/** setTimeout's longest wait; a later expiry is waited for in steps */
const MAX_TIMER_MS = 2 ** 31 - 1;

const NO_ROLES: readonly string[] = Object.freeze([]);
const NO_CLAIMS: Readonly<Record<string, string>> = Object.freeze({});
const ANONYMOUS_IDENTITY: Identity = Object.freeze({ principal: undefined, method: 'anonymous', roles: NO_ROLES, claims: NO_CLAIMS });

/** A refusal of credentials, with the reason for the log (never the secret). */
function refused(reason: string): GatewayError {
  return new GatewayError('unauthenticated', reason);
}

/**
 * The one authentication and ACL layer of every protocol, built from `auth:` and the
 * listeners' `credentials`. Built at start and at each reload; a key file that cannot be used
 * throws SetupError then.
 */
export class AccessControl {
  readonly #config: AccessConfig;
  readonly #guard: AuthGuard;
  readonly #logger: Logger;
  readonly #users = new Map<string, { hash: string; principal: string; roles: readonly string[] }>();
  readonly #apiKeys = new Map<string, { hash: string; principal: string; roles: readonly string[] }>();
  readonly #jwt: JwtVerifier | undefined;
  /** digest of credentials verified since this config was loaded → who they proved (bounded) */
  readonly #remembered = new Map<string, Identity>();
  /** publish decisions by identity and key; a reload builds a new AccessControl, and with it an empty memory */
  readonly #publishable = new WeakMap<Subject, Map<string, boolean>>();
  /** accepted() by listener: asked on every HTTP request, and the config does not change under it */
  readonly #acceptedBy = new Map<string, readonly CredentialKind[]>();

  constructor(config: AccessConfig, deps: AccessDeps = {}) {
    this.#config = config;
    this.#guard = deps.guard ?? new AuthGuard();
    this.#logger = deps.logger ?? silentLogger();
    const auth = config.auth;
    for (const user of auth.users) this.#users.set(user.username, { hash: user.password, principal: user.principal, roles: user.roles ?? NO_ROLES });
    for (const entry of auth.apiKeys) {
      const id = apiKeyIdOfHash(entry.key);
      if (id !== undefined) this.#apiKeys.set(id, { hash: entry.key, principal: entry.principal, roles: entry.roles ?? NO_ROLES });
    }
    this.#jwt = auth.jwt ? new JwtVerifier(auth.jwt) : undefined;
  }

  /** The credential kinds a listener takes: its `credentials`, else every kind `auth:` configures. */
  accepted(listener: string): readonly CredentialKind[] {
    let kinds = this.#acceptedBy.get(listener);
    if (kinds === undefined) {
      kinds = Object.freeze(this.#acceptedKinds(listener));
      this.#acceptedBy.set(listener, kinds);
    }
    return kinds;
  }

  #acceptedKinds(listener: string): readonly CredentialKind[] {
    const explicit = clientListener(this.#config, listener)?.credentials;
    if (explicit !== undefined) return explicit;
    const auth = this.#config.auth;
    const kinds: CredentialKind[] = [];
    if (auth.anonymous) kinds.push('anonymous');
    if (auth.users.length > 0) kinds.push('password');
    if (auth.apiKeys.length > 0) kinds.push('apiKey');
    if (auth.jwt) kinds.push('jwt');
    const tls = this.#config.listeners[listener]?.tls;
    if (tls && tls.clientCert !== 'none') kinds.push('certificate');
    return kinds;
  }

  /**
   * Lets a client in, or throws: `unauthenticated` for credentials that are missing, wrong or
   * not taken on this listener; `rate_limited` while its address backs off after failures, or
   * when too many of its checks wait; `overloaded` when the verification queue is full.
   * Credentials given explicitly are checked; without any, a verified client certificate is
   * the identity, else the client is anonymous where that is allowed.
   */
  async authenticate(credentials: Credentials, peer: Peer): Promise<Identity> {
    return this.identify(credentials, peer);
  }

  /**
   * authenticate() without a promise where none is needed: the identity at once when nothing
   * has to be verified (no credentials, a client certificate, credentials this config verified
   * already), refusals that need no verification thrown at once, a promise only while a secret
   * is being verified. HTTP authenticates every request, and a promise each showed in its cost.
   */
  identify(credentials: Credentials, peer: Peer): Identity | Promise<Identity> {
    const accepted = this.accepted(peer.listener);
    const presented = classify(credentials);
    if (presented === undefined) {
      if (peer.certificate !== undefined && accepted.includes('certificate')) return this.#fromCertificate(peer.certificate, peer);
      if (accepted.includes('anonymous') && this.#config.auth.anonymous) return ANONYMOUS_IDENTITY;
      throw refused(`credentials are required on listeners.${peer.listener} (it takes ${accepted.filter((k) => k !== 'anonymous').join(', ') || 'none'})`);
    }
    if (!accepted.includes(presented.kind)) throw refused(`${presented.kind} credentials are not taken on listeners.${peer.listener}`);
    const digest = `${presented.kind}\u0000${presented.username ?? ''}\u0000${createHash('sha256').update(presented.secret).digest('base64')}`;
    const known = this.#remembered.get(digest);
    // A remembered success proves nothing new to a guesser, so it skips the back-off: clients
    // that authenticate every request (HTTP, gRPC) keep working beside a guessing neighbour.
    if (known && (known.expiresAt === undefined || known.expiresAt > Date.now())) return known;
    return this.#verifyAndRemember(presented, digest, peer);
  }

  async #verifyAndRemember(presented: Presented, digest: string, peer: Peer): Promise<Identity> {
    const address = peer.address ?? '';
    this.#guard.admit(address);
    let identity: Identity;
    try {
      identity = await this.#verify(presented, address);
    } catch (err) {
      const error = toGatewayError(err);
      if (error.code === 'unauthenticated') {
        const backoff = this.#guard.failed(address, this.#config.auth.backoff);
        this.#logger.info({ listener: peer.listener, remoteAddress: peer.address, method: presented.kind, username: presented.username, reason: error.message, ...(backoff > 0 ? { backoffMs: backoff } : {}) },
          backoff > 0 ? 'credentials refused; the address backs off' : 'credentials refused');
      }
      throw error;
    }
    if (this.#remembered.size >= REMEMBERED_MAX) this.#remembered.clear();
    this.#remembered.set(digest, identity);
    return identity;
  }

  async #verify(presented: Presented, address: string): Promise<Identity> {
    const limits = this.#config.auth.verification;
    switch (presented.kind) {
      case 'password': {
        const user = this.#users.get(presented.username!);
        const ok = await this.#guard.verify(address, () => verifyPassword(user?.hash ?? UNKNOWN_USER_HASH, presented.secret), limits);
        if (!user || !ok) throw refused('bad username or password');
        return { principal: user.principal, method: 'password', roles: user.roles, claims: NO_CLAIMS };
      }
      case 'apiKey': {
        const parts = splitApiKey(presented.secret);
        const entry = parts && this.#apiKeys.get(parts.id);
        // An id that names no key costs no hash: keys are random, so there is nothing to time.
        if (!parts || !entry) throw refused('unknown API key');
        if (!await this.#guard.verify(address, () => verifyApiKeySecret(entry.hash, parts.secret), limits)) throw refused('unknown API key');
        return { principal: entry.principal, method: 'apiKey', roles: entry.roles, claims: NO_CLAIMS };
      }
      case 'jwt': {
        const claims = await this.#jwt!.verify(presented.secret);
        const problem = levelProblem(claims.principal);
        if (problem) throw refused(`JWT refused: its principal ${problem}`);
        return { principal: claims.principal, method: 'jwt', roles: claims.roles, claims: claims.claims, ...(claims.expiresAt !== undefined ? { expiresAt: claims.expiresAt } : {}) };
      }
    }
  }

  #fromCertificate(certificate: ClientCertificate, peer: Peer): Identity {
    if (!certificate.authorized) throw refused(`client certificate not trusted by listeners.${peer.listener}.tls.ca: ${certificate.error ?? 'unverified'}`);
    const principal = certificatePrincipal(certificate, this.#config.auth.certificate.principal);
    if (principal === undefined) throw refused(`client certificate has no ${this.#config.auth.certificate.principal === 'commonName' ? 'subject CN' : 'DNS, URI or email subjectAltName'} to name its principal (auth.certificate.principal)`);
    const problem = levelProblem(principal);
    if (problem) throw refused(`client certificate principal ${problem}`);
    return { principal, method: 'certificate', roles: NO_ROLES, claims: NO_CLAIMS };
  }

  /** The ACL's decision with its reason (what `junction acl check` prints). */
  decide(identity: Subject, action: AclAction, target: string): AclDecision {
    const rules = this.#config.auth.acl;
    if (rules === undefined) {
      if (action === 'publish' && !decide([], identity, 'publish', target).reason.startsWith('no rule')) return decide([], identity, 'publish', target);
      return this.#config.auth.anonymous
        ? { allowed: true, reason: 'no auth.acl and auth.anonymous is true: everything is allowed (a local demo)' }
        : { allowed: false, reason: 'no auth.acl and auth.anonymous is false: nothing is allowed until rules allow it' };
    }
    return decide(rules, identity, action, target);
  }

  canPublish(identity: Subject, key: string): boolean {
    let known = this.#publishable.get(identity);
    const remembered = known?.get(key);
    if (remembered !== undefined) return remembered;
    const allowed = this.decide(identity, 'publish', key).allowed;
    if (known === undefined) this.#publishable.set(identity, known = new Map());
    else if (known.size >= PUBLISH_DECISIONS_MAX) known.clear();
    known.set(key, allowed);
    return allowed;
  }

  /**
   * Whether a message may be sent: its key may be published to, and so may its `replyTo`, where
   * a request-mode rule publishes the reply for a sender that cannot wait (else naming someone
   * else's key there would publish to it).
   */
  canSend(identity: Subject, message: { key: string; replyTo?: string | undefined }): boolean {
    return this.canPublish(identity, message.key) && (message.replyTo === undefined || this.canPublish(identity, message.replyTo));
  }

  /** A subscription is allowed when the first rule concerning it allows it: see src/auth/acl.ts. */
  canSubscribe(identity: Subject, filter: string): boolean {
    return this.decide(identity, 'subscribe', filter).allowed;
  }

  /** Whether the client may answer requests on `filter` (a responder subscription). */
  canRespond(identity: Subject, filter: string): boolean {
    return this.decide(identity, 'respond', filter).allowed;
  }
}

interface Presented {
  kind: 'password' | 'apiKey' | 'jwt';
  username?: string | undefined;
  /** the password, the API key or the token */
  secret: string;
}

/** Which kind of credential the client presented, or undefined when it presented none. */
function classify(credentials: Credentials): Presented | undefined {
  const password = credentials.password === undefined ? undefined : Buffer.isBuffer(credentials.password) ? credentials.password.toString('utf8') : credentials.password;
  if (credentials.token !== undefined && credentials.token !== '') {
    const token = credentials.token;
    if (isApiKey(token)) return { kind: 'apiKey', secret: token };
    if (looksLikeJwt(token)) return { kind: 'jwt', secret: token };
    const colon = token.indexOf(':');
    if (colon <= 0) throw refused('a token is an API key, a JWT or username:password');
    return { kind: 'password', username: token.slice(0, colon), secret: token.slice(colon + 1) };
  }
  if (password !== undefined && password !== '') {
    if (isApiKey(password)) return { kind: 'apiKey', secret: password };
    if (looksLikeJwt(password)) return { kind: 'jwt', secret: password };
  }
  if (credentials.username === undefined || credentials.username === '') return undefined;
  return { kind: 'password', username: credentials.username, secret: password ?? '' };
}

/** The principal a client certificate names: its subject CN, or its first DNS, URI or email altName. */
export function certificatePrincipal(certificate: ClientCertificate, from: 'commonName' | 'altName'): string | undefined {
  if (from === 'commonName') return certificate.commonName;
  for (const entry of certificate.altNames) {
    const m = /^(DNS|URI|email):(.+)$/.exec(entry);
    if (m) return m[2];
  }
  return undefined;
}

/** what onExpiry returns for a credential that does not expire: one for every connection, not a closure each */
const NEVER_EXPIRES = (): void => undefined;

/**
 * Calls `expired` when the identity's credential expires (a JWT's exp), so a long-lived
 * connection ends with it; returns what cancels the wait. Nothing happens for credentials that
 * do not expire.
 */
export function onExpiry(identity: Identity, expired: () => void): () => void {
  if (identity.expiresAt === undefined) return NEVER_EXPIRES;
  const at = identity.expiresAt;
  let timer: NodeJS.Timeout;
  const arm = () => {
    const left = at - Date.now();
    timer = left <= 0 ? setTimeout(expired, 0) : setTimeout(left > MAX_TIMER_MS ? arm : expired, Math.min(left, MAX_TIMER_MS));
    timer.unref();
  };
  arm();
  return () => clearTimeout(timer);
}

/**
 * The token in an `Authorization` value, as every protocol takes it: `Bearer TOKEN`, or `Basic`
 * with base64(username:password), which becomes the token `username:password`.
 */
export function tokenFromAuthorization(value: string): string {
  const [scheme, credentials = ''] = value.trim().split(/\s+/, 2);
  if (scheme?.toLowerCase() === 'bearer' && credentials !== '') return credentials;
  if (scheme?.toLowerCase() === 'basic') return Buffer.from(credentials, 'base64').toString('utf8');
  throw new GatewayError('unauthenticated', 'Authorization must be Bearer TOKEN or Basic with base64(username:password)');
}

const cache = new WeakMap<AccessConfig, AccessControl>();

/** The AccessControl of one loaded config, for tools that have no gateway (`junction acl check`). */
export function accessControl(config: AccessConfig): AccessControl {
  let control = cache.get(config);
  if (!control) {
    control = new AccessControl(config);
    cache.set(config, control);
  }
  return control;
}
