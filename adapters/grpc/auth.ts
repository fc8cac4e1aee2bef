import { createHash } from 'node:crypto';
import type { Metadata } from '@grpc/grpc-js';
import { accessControl, GatewayError, type AccessControl, type GatewayConfig, type Identity, type Message } from '../../src/index.js';

/** How long a verified token is trusted without checking its hash again. */
const VERIFIED_TTL_MS = 60_000;
/** Verified tokens remembered at most (the oldest is forgotten first). */
const VERIFIED_MAX = 10_000;
/** How long a responder may answer a request it was handed, and how many such grants are kept. */
const REPLY_GRANT_TTL_MS = 10 * 60_000;
const REPLY_GRANTS_MAX = 10_000;
const INBOX_PREFIX = '_inbox/';

/**
 * The caller's token from the `authorization` metadata: `Bearer TOKEN`, or `Basic` with
 * base64(username:password). As on WebSocket, the token is `username:password` of a configured
 * user (src/auth); no metadata means an anonymous caller.
 */
export function tokenOf(metadata: Metadata): string | undefined {
  const value = metadata.get('authorization')[0];
  if (value === undefined) return undefined;
  const [scheme, credentials = ''] = String(value).trim().split(/\s+/, 2);
  if (scheme?.toLowerCase() === 'bearer' && credentials !== '') return credentials;
  if (scheme?.toLowerCase() === 'basic') return Buffer.from(credentials, 'base64').toString('utf8');
  throw new GatewayError('unauthenticated', 'the authorization metadata must be Bearer TOKEN or Basic');
}

/**
 * Who makes each call. gRPC has no handshake to authenticate once: every call carries its
 * credentials, and checking a password hash costs about 60 ms of scrypt. So a successful check is
 * remembered for a minute, keyed by the token's SHA-256 (the token itself is not kept), per
 * loaded config: a reload that changes users starts afresh. Failures are never remembered, so
 * guessing stays as slow as the hash makes it.
 */
export class CallIdentities {
  readonly #verified = new WeakMap<AccessControl, Map<string, { identity: Identity; until: number }>>();

  async identify(metadata: Metadata, auth: GatewayConfig['auth']): Promise<Identity> {
    const control = accessControl(auth);
    const token = tokenOf(metadata);
    if (token === undefined) return control.authenticateToken(undefined);
    let verified = this.#verified.get(control);
    if (!verified) {
      verified = new Map();
      this.#verified.set(control, verified);
    }
    const key = createHash('sha256').update(token).digest('base64');
    const now = Date.now();
    const known = verified.get(key);
    if (known && known.until > now) return known.identity;
    const identity = await control.authenticateToken(token);
    verified.delete(key);
    if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!);
    verified.set(key, { identity, until: now + VERIFIED_TTL_MS });
    return identity;
  }
}

/**
 * Inbox keys a gRPC responder may publish its answer to without an ACL grant: the `reply_to` of
 * each request delivered to it, once, with the request's correlation id and by the same
 * principal. (Its answer comes in a separate Publish call, so the grant cannot live on a
 * connection as it does on WebSocket.)
 */
export class ReplyGrants {
  readonly #grants = new Map<string, { correlationId: string; principal: string | undefined; until: number }>();

  grant(request: Message, principal: string | undefined): void {
    if (request.replyTo === undefined || request.correlationId === undefined || !request.replyTo.startsWith(INBOX_PREFIX)) return;
    if (this.#grants.size >= REPLY_GRANTS_MAX) this.#grants.delete(this.#grants.keys().next().value!);
    this.#grants.set(request.replyTo, { correlationId: request.correlationId, principal, until: Date.now() + REPLY_GRANT_TTL_MS });
  }

  /** Whether this publish answers a request the same principal was handed; a grant is used once. */
  take(key: string, correlationId: string | undefined, principal: string | undefined): boolean {
    const grant = this.#grants.get(key);
    if (!grant || correlationId !== grant.correlationId || principal !== grant.principal) return false;
    this.#grants.delete(key);
    return grant.until > Date.now();
  }
}

export function forbidden(action: string, what: string): GatewayError {
  return new GatewayError('forbidden', `not allowed to ${action} ${what}`);
}
