import net from 'node:net';
import tls from 'node:tls';
import { MqttClient, type IClientPublishOptions, type IClientSubscribeOptions } from 'mqtt';
import { readStampBytes } from '../stamp.js';
import type { Closable, ConnectionContext, ProtocolDriver, PublisherConnection } from './driver.js';

interface Connection {
  client: MqttClient;
  /** the server closed the connection: publishes fail at once instead of waiting for a reconnect */
  dropped: boolean;
  close(): Promise<void>;
}

/** Opens one MQTT 3.1.1 connection from ctx.localAddress; resolves on CONNACK. */
function connect(ctx: ConnectionContext, clean = true): Promise<Connection> {
  const port = ctx.ports.mqtt;
  if (!port) throw new Error(`${ctx.server} has no MQTT port`);
  const { host, localAddress } = ctx;
  // Without noDelay, Nagle holds small publishes back until the server's delayed ACK, and the run
  // would measure TCP timers rather than the server.
  // mqtt.js adds a 'drain' listener per write that meets a full socket: an open-loop publisher
  // ahead of a slow server has thousands at once, which is expected, not a leak.
  const tlsCa = ctx.tlsCa;
  const connect = () => (tlsCa !== undefined
    ? tls.connect({ socket: net.connect({ host, port, localAddress, noDelay: true }), ca: tlsCa, servername: 'localhost' })
    : net.connect({ host, port, localAddress, noDelay: true })).setMaxListeners(0);
  const client = new MqttClient(connect, {
    protocolVersion: 4, clientId: ctx.clientId, clean, keepalive: ctx.keepaliveS,
    // A drop must be counted, not hidden by a reconnect.
    reconnectPeriod: 0, connectTimeout: 30_000,
  });
  return new Promise((resolve, reject) => {
    let connected = false;
    let closing = false;
    let lastError: string | undefined;
    const connection: Connection = {
      client,
      dropped: false,
      close() {
        closing = true;
        return new Promise((done) => { client.end(true, () => done()); });
      },
    };
    // mqtt.js emits errors without a listener of its own: an unheard one would end the worker.
    client.on('error', (err) => {
      lastError = err.message;
      if (!connected) {
        client.end(true);
        reject(err);
      }
    });
    client.once('connect', () => {
      connected = true;
      resolve(connection);
    });
    client.on('close', () => {
      if (!connected) {
        client.end(true);
        reject(new Error(lastError ?? 'connection closed before CONNACK'));
      } else if (!closing && !connection.dropped) {
        connection.dropped = true;
        ctx.onDrop(lastError ?? 'closed by the server');
        // A forced end fails the QoS 1 publishes still waiting for PUBACK; they would wait forever.
        client.end(true);
      }
    });
  });
}

/**
 * One TCP connection per client, MQTT 3.1.1 with a clean session (subscribers: persistent with
 * --persistent), from the worker's loopback
 * source address. The same code drives Junction, aedes, Mosquitto and NATS's MQTT listener.
 */
export const mqttDriver: ProtocolDriver = {
  protocol: 'mqtt',

  async publisher(ctx): Promise<PublisherConnection> {
    const connection = await connect(ctx);
    const options: IClientPublishOptions = { qos: ctx.qos };
    return {
      // MQTT 3.1.1 has no priority.
      publish(key, payload, _priority, done) {
        // Deferred so a closed-loop sender on a dead connection does not recurse into itself.
        if (connection.dropped) setImmediate(done, 'connection closed');
        else connection.client.publish(key, payload, options, (err) => done(err?.message));
      },
      close: () => connection.close(),
    };
  },

  async subscriber(ctx, key, onDelivery): Promise<Closable> {
    let subscribed = false;
    // A server that closes the connection instead of refusing the subscription (aedes does when
    // its authorizeSubscribe fails) has failed this connection, not dropped it.
    const connection = await connect({ ...ctx, onDrop: (reason) => { if (subscribed) ctx.onDrop(reason); } }, !ctx.persistent);
    const options: IClientSubscribeOptions = { qos: ctx.qos };
    connection.client.on('message', (_topic, payload) => onDelivery(readStampBytes(payload)));
    try {
      await new Promise<void>((resolve, reject) => {
        connection.client.subscribe(key, options, (err, _granted, suback) => {
          if (suback?.granted[0] === 128) reject(new Error(`${ctx.server} refused SUBSCRIBE ${key} at QoS ${ctx.qos} (SUBACK 128)`));
          else if (connection.dropped) reject(new Error(`${ctx.server} closed the connection on SUBSCRIBE ${key}`));
          else if (err) reject(err);
          else resolve();
        });
      });
    } catch (err) {
      await connection.close();
      throw err;
    }
    subscribed = true;
    return connection;
  },

  async idle(ctx): Promise<Closable> {
    // mqtt.js sends PINGREQ every keepalive on its own.
    return connect(ctx);
  },
};
