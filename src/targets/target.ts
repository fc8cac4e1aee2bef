import type { TProperties } from '@sinclair/typebox';
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

/**
 * A target type, registered by name (src/registry.ts): its own config keys, beside `type` and
 * the protection keys every target has (src/config/schema.ts, ProtectionFields), and how to
 * create one. A new type is one module and one registration; the router never names types.
 */
export interface TargetType<Config = unknown> {
  readonly type: string;
  /** its own keys, as TypeBox properties with their defaults (src/config/schema.ts helpers) */
  readonly fields: TProperties;
  /** keys holding file paths: resolved against the config file's folder, and a missing file is warned of */
  readonly paths?: readonly string[];
  /**
   * `config` is the target's entry as loaded (every key of `fields` and of the protection keys
   * decoded, defaults applied). Throws SetupError naming the key when it cannot be created.
   */
  create(name: string, config: Config, deps: TargetDeps): Target;
}
