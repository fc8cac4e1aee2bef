import type { Message } from '../message.js';

/**
 * A message as it crosses Redis between nodes: a 4-byte length, the fields other than the payload
 * as JSON, then the payload bytes untouched (never re-encoded, as everywhere in the gateway).
 */
export function encodeMessage(message: Message): Buffer {
  const { payload, ...fields } = message;
  const head = Buffer.from(JSON.stringify(fields));
  const out = Buffer.allocUnsafe(4 + head.length + payload.length);
  out.writeUInt32LE(head.length, 0);
  head.copy(out, 4);
  payload.copy(out, 4 + head.length);
  return out;
}

export function decodeMessage(bytes: Buffer): Message {
  const headLength = bytes.readUInt32LE(0);
  const fields = JSON.parse(bytes.toString('utf8', 4, 4 + headLength)) as Omit<Message, 'payload'>;
  return { ...fields, payload: bytes.subarray(4 + headLength) };
}

/**
 * A frame on a Redis channel: what it is (one byte), who sent it (a node id), then its body.
 * Node ids are ASCII without spaces (schema.ts, cluster.nodeId), so a space ends the sender.
 */
export interface Frame {
  kind: string;
  from: string;
  body: Buffer;
}

export function encodeFrame(kind: string, from: string, body: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`${kind}${from} `), body]);
}

export function decodeFrame(bytes: Buffer): Frame {
  const space = bytes.indexOf(0x20);
  return { kind: bytes.toString('latin1', 0, 1), from: bytes.toString('latin1', 1, space), body: bytes.subarray(space + 1) };
}
