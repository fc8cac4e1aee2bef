import { randomBytes } from 'node:crypto';
import { GatewayError } from '../errors.js';
import type { Message } from '../message.js';
import type { TargetReply } from '../targets/target.js';
import { INBOX_PREFIX } from '../topic/rules.js';

export { INBOX_PREFIX };

/** How long a responder may answer a request it was handed, and how many such grants one holder keeps. */
export const REPLY_GRANT_TTL_MS = 10 * 60_000;
export const REPLY_GRANTS_MAX = 10_000;

/** 128 random bits: an inbox or a correlation id nobody can guess or choose. */
function token(): string {
  return randomBytes(16).toString('base64url');
}

/** One request waiting for its answer. */
export interface PendingReply {
  /** the key the answer is published to: the request's `replyTo` */
  readonly key: string;
  /** what the answer must carry as its `correlationId` */
  readonly correlationId: string;
  /** the first answer */
  readonly reply: Promise<TargetReply>;
  /** Stops waiting: a later answer is refused. */
  close(): void;
}

/**
 * The requests that wait for an answer from a responder, by inbox key. The inbox and the
 * correlation id are the gateway's own random tokens, never ids a client chose, so two
 * requests never share an inbox and an answer reaches only the request it belongs to. Answers
 * go straight to their waiting request: they are not published on the bus, where subscribers
 * of `#` would see them.
 */
export class Inboxes {
  readonly #waiting = new Map<string, { correlationId: string; settle: (reply: TargetReply) => void }>();
  readonly #prefix: string;

  /**
   * `node`, in cluster mode: this node's id goes into each inbox key (`_inbox/<node>.<token>`),
   * so a responder on any node can send the answer to the node that waits for it.
   */
  constructor(node?: string) {
    this.#prefix = node === undefined ? INBOX_PREFIX : `${INBOX_PREFIX}${node}.`;
  }

  /** The node an inbox key belongs to, in cluster mode (node ids have no `.`, tokens neither). */
  static nodeOf(key: string): string | undefined {
    const dot = key.indexOf('.', INBOX_PREFIX.length);
    return dot < 0 ? undefined : key.slice(INBOX_PREFIX.length, dot);
  }

  open(): PendingReply {
    const key = `${this.#prefix}${token()}`;
    const correlationId = token();
    let settle!: (reply: TargetReply) => void;
    const reply = new Promise<TargetReply>((resolve) => { settle = resolve; });
    this.#waiting.set(key, { correlationId, settle });
    return { key, correlationId, reply, close: () => this.#waiting.delete(key) };
  }

  /** Hands an answer to its request; throws `no_route` when no request waits for it there. */
  answer(message: Message): void {
    const waiting = this.#waiting.get(message.key);
    if (!waiting || waiting.correlationId !== message.correlationId) {
      throw new GatewayError('no_route', `no request waits for an answer on ${message.key} with this correlationId (answered already, timed out, or never asked)`);
    }
    this.#waiting.delete(message.key);
    const reply: TargetReply = { payload: message.payload, headers: message.headers };
    if (message.contentType !== undefined) reply.contentType = message.contentType;
    waiting.settle(reply);
  }

  /** requests waiting for an answer */
  get size(): number {
    return this.#waiting.size;
  }
}

/**
 * Inbox keys a responder may publish its answer to without an ACL grant: the `replyTo` of each
 * request handed to it, once, with the request's correlation id and by the same principal. The
 * one policy of every protocol: at most REPLY_GRANTS_MAX per holder (the oldest goes first),
 * each valid for REPLY_GRANT_TTL_MS.
 */
export class ReplyGrants {
  readonly #grants = new Map<string, { correlationId: string; principal: string | undefined; until: number }>();

  /** Whether handing `request` to a responder grants it an answer: a request through the gateway's inboxes. */
  static answerable(request: Message): request is Message & { replyTo: string; correlationId: string } {
    return request.replyTo !== undefined && request.correlationId !== undefined && request.replyTo.startsWith(INBOX_PREFIX);
  }

  grant(request: Message, principal: string | undefined, now = Date.now()): void {
    if (!ReplyGrants.answerable(request)) return;
    if (this.#grants.size >= REPLY_GRANTS_MAX) this.#grants.delete(this.#grants.keys().next().value!);
    this.#grants.set(request.replyTo, { correlationId: request.correlationId, principal, until: now + REPLY_GRANT_TTL_MS });
  }

  /** Whether this publish answers a request the same principal was handed; a grant is used once. */
  take(key: string, correlationId: string | undefined, principal: string | undefined, now?: number): boolean {
    // Every publish asks, almost always about a key that holds no grant: the clock is read only for one that does.
    const grant = this.#grants.get(key);
    if (!grant || correlationId !== grant.correlationId || principal !== grant.principal) return false;
    this.#grants.delete(key);
    return grant.until > (now ?? Date.now());
  }

  /**
   * For a protocol whose answer cannot carry a correlation id (MQTT 3.1.1): the grant's own,
   * when the same principal holds one for `key`; the inbox key is as unguessable as the id.
   * Used once, like `take`.
   */
  claim(key: string, principal: string | undefined, now = Date.now()): string | undefined {
    const grant = this.#grants.get(key);
    if (!grant || principal !== grant.principal) return undefined;
    this.#grants.delete(key);
    return grant.until > now ? grant.correlationId : undefined;
  }

  clear(): void {
    this.#grants.clear();
  }
}
