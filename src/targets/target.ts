import type { Message } from '../message.js';
import type { Logger } from '../log.js';

/** What a downstream answered; used as the reply in `mode: request`. */
export interface TargetReply {
  payload: Buffer;
  contentType?: string;
  headers?: Record<string, string>;
  /** the downstream's own status (HTTP status), when it has one */
  status?: number;
}

export interface DeliveryContext {
  /** aborted when the sender gives up or the gateway stops */
  signal?: AbortSignal;
  /** per-call timeout in ms, already reduced to what the caller can still wait */
  timeoutMs: number;
  /** W3C trace context for this call (the call's own span when tracing is on) */
  traceparent: string;
}

/**
 * A downstream the router can send to. A failure is a GatewayError (upstream_unavailable,
 * upstream_timeout, …) whose `details.retryable` tells the protection layer what to do.
 */
export interface Target {
  readonly name: string;
  readonly type: string;
  deliver(message: Message, ctx: DeliveryContext): Promise<TargetReply>;
  /** let in-flight calls finish, then release connections */
  close(): Promise<void>;
}

export interface TargetDeps {
  logger: Logger;
}

/** A target type, registered by name so new types drop in without touching the router. */
export interface TargetFactory<Config = unknown> {
  readonly type: string;
  create(name: string, config: Config, deps: TargetDeps): Target;
}

export class TargetRegistry {
  readonly #factories = new Map<string, TargetFactory>();

  register<Config>(factory: TargetFactory<Config>): this {
    if (this.#factories.has(factory.type)) throw new Error(`target type ${factory.type} is already registered`);
    this.#factories.set(factory.type, factory as TargetFactory);
    return this;
  }

  get(type: string): TargetFactory | undefined {
    return this.#factories.get(type);
  }

  get types(): string[] {
    return [...this.#factories.keys()];
  }
}
