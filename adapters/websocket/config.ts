import { Type, type StaticDecode } from '@sinclair/typebox';
import { Default, Duration, parseSize, Size, strict, type ConfigSection, type SharedSettings } from '../../src/index.js';

/** The `websocket:` section of gateway.yaml, with its defaults. */
const WebSocketSchema = Type.Object({
  enabled: Default(Type.Boolean({ description: 'serve the JSON frame protocol at /ws on the HTTP listener (docs/websocket.md)' }), true),
  maxSubscriptions: Default(Type.Integer({ minimum: 1, description: 'patterns one socket may hold; past it `subscribe` is answered with error overloaded' }), 1000),
  maxInflight: Default(Type.Integer({ minimum: 1, description: 'frames of one socket being processed at once (publishes awaiting acceptance, requests awaiting replies); past it the gateway stops reading that socket until one completes' }), 64),
  maxFrameSize: Type.Optional(Size('largest frame a client may send; a larger one closes the socket with 1009. Default: limits.maxPayloadSize in base64 (4/3) + 64kb. The WebSocket server behind /ws and /mqtt takes the larger of this and mqtt.maxPacketSize at start')),
  maxOutboundBuffer: Default(Size('bytes waiting to be sent to one socket; past it QoS 0 deliveries are dropped, lowest priority first, and a socket that cannot take a QoS 1 delivery or a response is closed with 1013'), '1mb'),
  drainTimeout: Default(Duration('a socket with data waiting that accepts none of it for this long is closed with 1013'), '30s'),
  pingInterval: Default(Duration('the server pings sockets it has not heard from this often; one that has not answered the previous ping is terminated. 0s = no pings'), '30s'),
  idleTimeout: Default(Duration('a socket holding no subscription that sends no frame for this long is closed with 4408; 0s = never'), '5m'),
  handshakeTimeout: Default(Duration('an upgrade request whose credentials are not verified by then is refused with 503'), '10s'),
  perMessageDeflate: Default(Type.Boolean({ description: 'permessage-deflate compression; it costs memory and CPU per socket. Applies after a restart, to /mqtt too' }), false),
}, {
  ...strict,
  description: 'The WebSocket JSON frame protocol at /ws on listeners.http. Limits apply to new sockets and frames at once after a reload unless noted.',
  retired: {
    maxConnections: 'open connections are limited per listener, at accept: set listeners.http.maxConnections (a WebSocket is one connection of the HTTP listener)',
    maxConnectionsPerIp: 'open connections are limited per listener, at accept: set listeners.http.maxConnectionsPerIp (a WebSocket is one connection of the HTTP listener)',
  },
});

/** room for the op, key, headers and JSON escaping around a payload of the largest size */
const WEBSOCKET_FRAME_OVERHEAD = parseSize('64kb');

/** The section with `maxFrameSize` given its default, which follows limits.maxPayloadSize. */
function resolve(websocket: StaticDecode<typeof WebSocketSchema>, { limits }: SharedSettings): WebSocketSettings {
  // A binary payload travels as base64, 4/3 of its size: the largest accepted payload must fit.
  return { ...websocket, maxFrameSize: websocket.maxFrameSize ?? Math.ceil(limits.maxPayloadSize / 3) * 4 + WEBSOCKET_FRAME_OVERHEAD };
}

/** The section as the adapter reads it: every key present. */
export type WebSocketSettings = StaticDecode<typeof WebSocketSchema> & { maxFrameSize: number };

export const webSocketSection: ConfigSection<WebSocketSettings> = { key: 'websocket', schema: WebSocketSchema, resolve };
