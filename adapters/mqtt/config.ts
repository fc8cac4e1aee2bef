import { Type, type StaticDecode } from '@sinclair/typebox';
import { Default, Duration, parseSize, Size, strict, type ConfigSection, type SharedSettings } from '../../src/index.js';

/** The `mqtt:` section of gateway.yaml, with its defaults. */
const MqttSchema = Type.Object({
  websocket: Default(Type.Boolean({ description: 'also serve MQTT over WebSocket at /mqtt on the HTTP listener' }), true),
  maxPacketSize: Type.Optional(Size('largest MQTT packet a client may send; its fixed header alone gets the connection closed. Default: limits.maxPayloadSize + 64kb')),
  connectTimeout: Default(Duration('a connection whose CONNECT has not arrived by then is closed'), '10s'),
  keepaliveLimit: Default(Type.Integer({ minimum: 0, maximum: 65535, description: 'largest keepalive, in seconds, a client may ask for; 0 = any. A client asking for more, or for none, is refused with CONNACK return code 6' }), 0),
  maxSubscriptions: Default(Type.Integer({ minimum: 1, description: 'topic filters one client may hold; past it SUBACK answers 0x80' }), 1000),
  maxInflightInbound: Default(Type.Integer({ minimum: 1, description: 'QoS 2 PUBLISHes of one client awaiting its PUBREL; one more closes the connection' }), 1000),
  maxOutboundBuffer: Default(Size('bytes waiting to be written to one client; past it QoS 0 deliveries to that client are dropped and counted'), '1mb'),
  drainTimeout: Default(Duration('a client whose socket stays full this long is disconnected (its QoS 1/2 messages stay queued if its session is persistent)'), '30s'),
  maxPendingRequests: Default(Type.Integer({ minimum: 1, description: 'requests one client may have waiting for their answer (_request/<id>/<key>); one more is answered overloaded on _reply/<id>/error' }), 100),
  maxQueuedPerSession: Default(Type.Integer({ minimum: 1, description: 'cluster mode: QoS 1/2 messages one persistent session keeps queued in Redis (unacknowledged ones included); past it new messages are not queued for it (counted as sessionQueueFull)' }), 1000),
  sessionExpiry: Default(Duration('cluster mode: a persistent session (its subscriptions and queued messages in Redis) is forgotten this long after its client last connected or left'), '168h'),
  maxHold: Default(Duration('a QoS 1/2 PUBLISH refused as rate_limited or overloaded is retried with its acknowledgement withheld, pacing the client, at most this long; then its connection is closed'), '10s'),
}, {
  ...strict,
  description: 'The embedded MQTT broker (listeners.mqtt, and /mqtt on listeners.http); these apply after a restart.',
  retired: {
    maxConnections: 'open connections are limited per listener, before CONNECT: set listeners.mqtt.maxConnections (MQTT over TCP) and listeners.http.maxConnections (the HTTP listener, MQTT over WebSocket included)',
  },
});

/** room for the fixed header, topic (up to 64 KiB) and packet id around a payload of the largest size */
const MQTT_PACKET_OVERHEAD = parseSize('64kb');

/** The section with `maxPacketSize` given its default, which follows limits.maxPayloadSize. */
function resolve(mqtt: StaticDecode<typeof MqttSchema>, { limits }: SharedSettings): MqttSettings {
  return { ...mqtt, maxPacketSize: mqtt.maxPacketSize ?? limits.maxPayloadSize + MQTT_PACKET_OVERHEAD };
}

/** The section as the adapter reads it: every key present. */
export type MqttSettings = StaticDecode<typeof MqttSchema> & { maxPacketSize: number };

export const mqttSection: ConfigSection<MqttSettings> = { key: 'mqtt', schema: MqttSchema, resolve };
