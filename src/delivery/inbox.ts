import type { Message } from '../message.js';

/** Requests handed to responders carry an inbox key under this prefix as `replyTo`. */
export const INBOX_PREFIX = '_inbox/';

/** How long a responder may answer a request it was handed, and how many such grants one holder keeps. */
export const REPLY_GRANT_TTL_MS = 10 * 60_000;
export const REPLY_GRANTS_MAX = 10_000;

/** The inbox a request's reply is published to. */
export function inboxFor(request: Message): string {
  return `${INBOX_PREFIX}${request.id}`;
}

/**
 * Inbox keys a responder may publish its answer to without an ACL grant: the `replyTo` of each
 * request handed to it, once, with the request's correlation id and by the same principal. The
 * one policy of every protocol: at most REPLY_GRANTS_MAX per holder (the oldest goes first),
 * each valid for REPLY_GRANT_TTL_MS.
 */
export class ReplyGrants {
  readonly #grants = new Map<string, { correlationId: string; principal: string | undefined; until: number }>();

  grant(request: Message, principal: string | undefined, now = Date.now()): void {
    if (request.replyTo === undefined || request.correlationId === undefined || !request.replyTo.startsWith(INBOX_PREFIX)) return;
    if (this.#grants.size >= REPLY_GRANTS_MAX) this.#grants.delete(this.#grants.keys().next().value!);
    this.#grants.set(request.replyTo, { correlationId: request.correlationId, principal, until: now + REPLY_GRANT_TTL_MS });
  }

  /** Whether this publish answers a request the same principal was handed; a grant is used once. */
  take(key: string, correlationId: string | undefined, principal: string | undefined, now = Date.now()): boolean {
    const grant = this.#grants.get(key);
    if (!grant || correlationId !== grant.correlationId || principal !== grant.principal) return false;
    this.#grants.delete(key);
    return grant.until > now;
  }

  clear(): void {
    this.#grants.clear();
  }
}
