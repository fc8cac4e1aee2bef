import type { JsonValue, PayloadFields } from './protocol.js';

/** What a client may publish: bytes (sent as base64), text, or any other JSON value (sent as JSON). */
export type Payload = Uint8Array | JsonValue;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** btoa/atob take "binary strings" (one char per byte); chunks keep the argument lists short. */
export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return globalThis.btoa(binary);
}

export function fromBase64(text: string): Uint8Array {
  const binary = globalThis.atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

export function toBase64Url(text: string): string {
  return toBase64(utf8.encode(text)).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

/** The payload fields of an outgoing frame. */
export function encodePayload(payload: Payload | undefined): Pick<PayloadFields, 'payload' | 'encoding'> {
  if (payload === undefined) return {};
  if (payload instanceof Uint8Array) return { payload: toBase64(payload), encoding: 'base64' };
  return { payload };
}

/** A received payload as bytes, by the protocol's payload rules. */
export function payloadBytes(fields: PayloadFields): Uint8Array {
  const { payload, encoding } = fields;
  if (payload === undefined) return new Uint8Array(0);
  if (encoding === 'base64') return fromBase64(payload as string);
  return utf8.encode(typeof payload === 'string' ? payload : JSON.stringify(payload));
}

export function payloadText(fields: PayloadFields): string {
  if (typeof fields.payload === 'string' && fields.encoding === undefined) return fields.payload;
  return utf8Decoder.decode(payloadBytes(fields));
}

/** The payload as JSON: a JSON value as it came, text and bytes parsed. */
export function payloadJson<T = JsonValue>(fields: PayloadFields): T {
  if (fields.encoding === undefined && typeof fields.payload !== 'string') return (fields.payload ?? null) as T;
  return JSON.parse(payloadText(fields)) as T;
}
