/** The core's public surface: adapters and targets import from here, never from internals. */
export type { Adapter, AdapterContext, AdapterFactory, ConnectionInfo } from './adapter.js';
export { accessControl, tokenFromAuthorization, type AccessControl, type Identity } from './auth/index.js';
export type { BrokerBus, Bus, BusHandler, BusPacket, BusPublisher, BusSubscription, SubscribeOptions } from './bus.js';
export { filterMatches, isBrokerBus } from './bus.js';
export type { GatewayConfig } from './config/types.js';
export { ListenerError } from './gateway.js';
export type { DispatchOptions, DispatchResult } from './delivery/dispatcher.js';
export { ERRORS, GatewayError, isGatewayError, toGatewayError, type ErrorCode, type ErrorSpec, type GatewayErrorDetails } from './errors.js';
export type { Logger } from './log.js';
export {
  createMessage, isValidTraceparent, keyProblem, newMessageId, newTraceparent, parsePriority, patternProblem,
  DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY, MAX_KEY_BYTES,
  type Message, type MessageInit, type MessageSource, type Protocol, type QoS,
} from './message.js';
export type { DeliveryContext, Target, TargetDeps, TargetFactory, TargetReply } from './targets/target.js';
export { Fifo } from './delivery/fifo.js';
