/** The core's public surface: adapters and targets import from here, never from internals. */
export type { Adapter, AdapterContext, AdapterFactory } from './adapter.js';
export type { Bus, BusHandler, BusSubscription, SubscribeOptions } from './bus.js';
export { filterMatches } from './bus.js';
export type { GatewayConfig } from './config/types.js';
export type { DispatchOptions, DispatchResult } from './delivery/dispatcher.js';
export { ERRORS, GatewayError, isGatewayError, toGatewayError, type ErrorCode, type ErrorSpec } from './errors.js';
export type { Logger } from './log.js';
export {
  createMessage, isValidTraceparent, keyProblem, newMessageId, newTraceparent, parsePriority, patternProblem,
  DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY, MAX_KEY_BYTES,
  type Message, type MessageInit, type MessageSource, type Protocol, type QoS,
} from './message.js';
export type { DeliveryContext, Target, TargetDeps, TargetFactory, TargetReply } from './targets/target.js';
