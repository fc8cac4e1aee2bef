import type { Protocol } from '../message.js';
import type { DefaultRoute } from '../config/types.js';
import type { RouteRateLimitConfig } from '../config/schema.js';

/** Where a matched rule sends a message, with `{N}` already substituted. */
export type TargetBinding =
  | { kind: 'publish'; key: string }
  | { kind: 'deadletter' }
  | { kind: 'target'; name: string };

/** A rule from `routes:` compiled once per table. */
export interface CompiledRoute {
  name: string;
  /** position in the file, 0-based: the tie-breaker after `priority` */
  index: number;
  pattern: string;
  priority: number;
  protocols?: readonly Protocol[];
  /** lower-cased header names */
  headers?: Readonly<Record<string, string>>;
  setPriority?: number;
  mode: 'deliver' | 'request';
  /** how long a request this rule answers waits for the reply, in ms (requests.timeout unless the rule sets one) */
  timeout: number;
  continue: boolean;
  rateLimit?: RouteRateLimitConfig;
  /** what becomes of a message that expires in the queue of one of this rule's targets */
  expired: ExpiredPolicy;
}

export type ExpiredPolicy = 'drop' | 'deadletter';

/** Shared by the messages of the same key (frozen), as are the decisions holding it. */
export interface RouteMatch {
  readonly route: CompiledRoute;
  /** levels captured by `+` and `#`, in pattern order; `#` captures the rest joined by `/` */
  readonly captures: readonly string[];
  readonly targets: readonly TargetBinding[];
  readonly fallback: readonly TargetBinding[];
}

/** What routing a message needs to know about it. */
export interface RoutableMessage {
  key: string;
  protocol: Protocol;
  headers: Readonly<Record<string, string>>;
}

export interface RouteDecision {
  /** winning rules in precedence order: one, or several chained by `continue: true`; empty = no rule matched */
  readonly matches: readonly RouteMatch[];
  /** set when no rule matched: what defaultRoute says */
  default?: DefaultRoute;
}

export type LossReason =
  | { kind: 'protocol'; expected: readonly Protocol[] }
  | { kind: 'header'; name: string; expected: string; actual?: string }
  | { kind: 'precedence'; winner: string };

/** For `junction route`: every rule whose key pattern matched, and why the losers lost. */
export interface RouteExplanation {
  decision: RouteDecision;
  losers: { route: CompiledRoute; reason: LossReason }[];
}

export interface RouteTable {
  readonly version: number;
  readonly loadedAt: Date;
  readonly routes: readonly CompiledRoute[];
  readonly defaultRoute: DefaultRoute;
  match(message: RoutableMessage): RouteDecision;
  explain(message: RoutableMessage): RouteExplanation;
}
