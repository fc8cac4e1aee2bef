import type { Metadata } from '@grpc/grpc-js';
import { GatewayError, tokenFromAuthorization, type AccessControl, type Identity, type Message } from '../../src/index.js';

/** How long a responder may answer a request it was handed, and how many such grants are kept. */
const REPLY_GRANT_TTL_MS = 10 * 60_000;
const REPLY_GRANTS_MAX = 10_000;
const INBOX_PREFIX = '_inbox/';

/**
 * Who makes each call. gRPC has no handshake to authenticate once: every call carries its
 * credentials (`authorization` metadata, Bearer or Basic, as on HTTP and WebSocket); the shared
 * auth layer remembers verified secrets, so a call does not pay the password hash each time.
 */
export function identify(metadata: Metadata, access: AccessControl): Promise<Identity> {
  const value = metadata.get('authorization')[0];
  return access.authenticateToken(value === undefined ? undefined : tokenFromAuthorization(String(value)));
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
