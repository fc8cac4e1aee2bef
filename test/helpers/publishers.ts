import WebSocket from 'ws';
import mqtt from 'mqtt';
import type { ServerFrame } from '../../src/client/protocol.js';
import { GatewayClient } from './grpc.js';

/** Where a gateway spawned from the CLI listens, from its `listener up` log lines. */
export interface Ports {
  http: number;
  mqtt: number;
  grpc: number;
}

export type PublishProtocol = 'http' | 'mqtt' | 'ws' | 'grpc';
export const PUBLISH_PROTOCOLS: readonly PublishProtocol[] = ['http', 'mqtt', 'ws', 'grpc'];

/** What one publish came to: acknowledged, refused with a code, or no answer (the connection went). */
export type PublishResult = { acked: true } | { acked: false; code: string };

/**
 * A QoS 1 publisher over one protocol, one message at a time: `publish` resolves when the
 * gateway acknowledged the message or refused it in that protocol's own terms (HTTP status, WS
 * error frame, gRPC status or ack error), and rejects when the connection is gone.
 */
export interface Publisher {
  publish(key: string, payload: string): Promise<PublishResult>;
  close(): Promise<void>;
}

const GRPC_CODES: Record<number, string> = { 14: 'overloaded', 8: 'rate_limited', 4: 'upstream_timeout' };
const HTTP_CODES: Record<number, string> = { 503: 'overloaded', 429: 'rate_limited', 500: 'internal' };

export async function connectPublisher(protocol: PublishProtocol, ports: Ports): Promise<Publisher> {
  switch (protocol) {
    case 'http': return httpPublisher(ports.http);
    case 'mqtt': return mqttPublisher(ports.mqtt);
    case 'ws': return wsPublisher(ports.http);
    case 'grpc': return grpcPublisher(ports.grpc);
  }
}

function httpPublisher(port: number): Publisher {
  return {
    async publish(key, payload) {
      const response = await fetch(`http://127.0.0.1:${port}/v1/messages/${key}`, { method: 'POST', body: payload, headers: { 'x-qos': '1' } });
      await response.arrayBuffer();
      return response.status === 202 ? { acked: true } : { acked: false, code: HTTP_CODES[response.status] ?? `http ${response.status}` };
    },
    async close() {},
  };
}

/**
 * MQTT 3.1.1 has no refusal for a QoS 1 PUBLISH: the gateway holds the PUBACK while it cannot
 * accept, so a refusal never reaches this publisher; a PUBACK means accepted.
 */
async function mqttPublisher(port: number): Promise<Publisher> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', () => resolve());
    client.once('error', reject);
    client.once('close', () => reject(new Error('the MQTT connection closed before CONNACK')));
  });
  const gone = new Promise<never>((_, reject) => client.once('close', () => reject(new Error('the MQTT connection closed'))));
  gone.catch(() => undefined);
  return {
    async publish(key, payload) {
      await Promise.race([client.publishAsync(key, payload, { qos: 1 }), gone]);
      return { acked: true };
    },
    close: async () => { await client.endAsync(true); },
  };
}

async function wsPublisher(port: number): Promise<Publisher> {
  const socket = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  const waiting = new Map<string, (result: PublishResult) => void>();
  const gone = new Promise<never>((_, reject) => socket.once('close', () => reject(new Error('the WebSocket closed'))));
  gone.catch(() => undefined);
  socket.on('message', (data: Buffer) => {
    const frame = JSON.parse(data.toString('utf8')) as ServerFrame;
    if (frame.op === 'ack') waiting.get(String(frame.id))?.({ acked: true });
    if (frame.op === 'error' && frame.id !== undefined) waiting.get(String(frame.id))?.({ acked: false, code: frame.code });
  });
  let next = 0;
  return {
    async publish(key, payload) {
      const id = `p${next++}`;
      const answered = new Promise<PublishResult>((resolve) => waiting.set(id, resolve));
      socket.send(JSON.stringify({ op: 'publish', id, key, payload, qos: 1 }));
      try {
        return await Promise.race([answered, gone]);
      } finally {
        waiting.delete(id);
      }
    },
    async close() {
      if (socket.readyState === WebSocket.CLOSED) return;
      const closed = new Promise((resolve) => socket.once('close', resolve));
      socket.close();
      await closed;
    },
  };
}

function grpcPublisher(port: number): Publisher {
  const client = new GatewayClient(`127.0.0.1:${port}`);
  return {
    async publish(key, payload) {
      try {
        const ack = await client.publish({ key, payload, qos: 1 });
        return ack.error ? { acked: false, code: ack.error.code } : { acked: true };
      } catch (err) {
        const code = (err as { code?: number }).code;
        // UNAVAILABLE with no connection behind it is the gateway gone, not a refusal.
        if (code === undefined || /No connection established|ECONNREFUSED|Connection dropped|RST_STREAM/i.test((err as Error).message)) throw err;
        return { acked: false, code: GRPC_CODES[code] ?? `grpc ${code}` };
      }
    },
    async close() {
      client.close();
    },
  };
}
