/**
 * `junction/client`: Junction's WebSocket client for browsers and Node. It imports nothing from
 * Node, so a page can load these modules as they are compiled (dist/src/client/*.js).
 */
export {
  connect, JunctionClient, JunctionError,
  type ClientOptions, type ClientState, type Delivery, type DeliveryHandler, type PublishOptions, type PublishResult, type ReconnectOptions,
  type Reply, type RequestOptions, type SubscribeOptions, type Subscription, type WebSocketConstructor, type WebSocketLike,
} from './client.js';
export { fromBase64, toBase64, type Payload } from './payload.js';
export {
  CLOSE_CODES, isJsonContentType, SUBPROTOCOL, TOKEN_QUERY_PARAMETER, TOKEN_SUBPROTOCOL_PREFIX,
  type AckFrame, type ClientFrame, type DeliveryAckFrame, type ErrorFrame, type FrameId, type JsonValue, type MessageFrame, type PingFrame,
  type PongFrame, type PublishFrame, type ReplyFrame, type RequestFrame, type ServerFrame, type SubscribeFrame, type UnsubscribeFrame,
} from './protocol.js';
