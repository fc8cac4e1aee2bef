/** The core's public surface: adapters and targets import from here, never from internals. */
export type {
  Adapter, AdapterContext, AdapterStats, ConfigSection, ConnectionInfo, HttpMount, ProtocolRegistration, SharedSessions, SharedSettings, SlowConsumerCounts,
  WebSocketServerNeeds,
} from './adapter.js';
/** Building blocks of config sections: durations, sizes and defaults as the loader reads them. */
export { Default, Duration, Empty, Size, strict } from './config/schema.js';
export type { ListenerTimeouts } from './config/schema.js';
export { parseDuration, parseSize } from './config/units.js';
export { Registry } from './registry.js';
export { onExpiry, tokenFromAuthorization, type AccessControl, type ClientCertificate, type Credentials, type Identity, type Peer } from './auth/index.js';
export type { AcceptedConnection, BoundListener, ListenOptions } from './listener.js';
export type { BusHandler, BusOrigin, BusSubscription, SubscribeOptions } from './bus/index.js';
export type { GatewayConfig } from './config/types.js';
export type { DispatchOptions, DispatchResult } from './delivery/dispatcher.js';
export { ERRORS, GatewayError, isGatewayError, ListenerError, SetupError, shuttingDown, SHUTTING_DOWN, toGatewayError, type ErrorCode, type ErrorSpec, type GatewayErrorDetails } from './errors.js';
export type { Logger } from './log.js';
export { ThrottledLog } from './throttled-log.js';
export { settledBy, withTimeout } from './timeouts.js';
export { emptied } from './arrays.js';
export { realClock, type Clock, type Timer } from './clock.js';
export {
  createMessage, isExpired, isValidTraceparent, newMessageId, newTraceparent, parsePriority,
  DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY,
  type Message, type MessageInit, type MessageSource, type Protocol, type QoS,
} from './message.js';
export { filterMatches, groupProblem, keyProblem, labelProblem, patternProblem, MAX_KEY_BYTES, REPLY_PREFIX, REQUEST_PREFIX } from './topic/rules.js';
export type { GroupDelivery, GroupMember, GroupMembership, GroupStats } from './groups/group-manager.js';
export type { DeliveryContext, Target, TargetDeps, TargetReply, TargetType } from './targets/target.js';
export { INBOX_PREFIX, ReplyGrants } from './delivery/inbox.js';
export { CONTROL_PRIORITY, SubscriberBuffer, type AddOutcome, type BufferLimits, type Buffered } from './delivery/subscriber-buffer.js';
export { problemOf, sendProblem, writeProblem, type Problem } from './problem.js';
/** The /ws frame protocol, shared with the client library (junction/client). */
export * from './client/protocol.js';
