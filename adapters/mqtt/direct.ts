import type { Client } from 'aedes';
import mqttPacket from 'mqtt-packet';
import type { GuardedConnection } from './guard.js';

/** aedes 1.2 client state read here (lib/client.js): its packet parser and packet id counter. */
interface ClientInternals {
  _parser: { on(event: 'packet', listener: (packet: { cmd: string; messageId?: number }) => void): void };
  _nextId: number;
}

/** What the adapter writes to one client itself, beside aedes: a group delivery, a request, an answer. */
export interface DirectPublish {
  topic: string;
  payload: Buffer;
  qos: 0 | 1;
}

/**
 * Writes a PUBLISH to the client outside aedes's delivery: packet ids come from the client's own
 * counter, so they never collide with aedes's. Returns the packet id of a QoS 1 PUBLISH (its
 * PUBACK is the caller's to hear, with `onPuback`; aedes ignores acks of ids it did not send),
 * 0 for QoS 0, or undefined when the client is gone.
 */
export function writePublish(client: Client, publish: DirectPublish): number | undefined {
  if (client.closed) return undefined;
  const internals = client as Client & ClientInternals;
  const packet: mqttPacket.IPublishPacket = { cmd: 'publish', topic: publish.topic, payload: publish.payload, qos: publish.qos, retain: false, dup: false };
  if (publish.qos === 1) {
    packet.messageId = internals._nextId;
    internals._nextId = internals._nextId >= 65535 ? 1 : internals._nextId + 1;
  }
  connectionOf(client).write(mqttPacket.generate(packet));
  return packet.messageId ?? 0;
}

/** Hears every PUBACK the client sends, for packet ids `writePublish` gave. */
export function onPuback(client: Client, listener: (messageId: number) => void): void {
  (client as Client & ClientInternals)._parser.on('packet', (packet) => {
    if (packet.cmd === 'puback' && packet.messageId !== undefined) listener(packet.messageId);
  });
}

export function connectionOf(client: Client): GuardedConnection {
  return client.conn as GuardedConnection;
}
