/**
 * Send-time stamps carried in the payload, so latency is measured end to end by the receiver,
 * whichever process and protocol it is. process.hrtime is CLOCK_MONOTONIC on Linux: one clock for
 * every process on the machine, unaffected by wall-clock steps.
 */

/** Microseconds on the machine-wide monotonic clock. */
export function nowUs(): number {
  const [seconds, nanoseconds] = process.hrtime();
  return seconds * 1_000_000 + Math.floor(nanoseconds / 1000);
}

/**
 * A payload of `size` ASCII bytes that starts with the stamp and a `|`. ASCII keeps it valid as
 * MQTT bytes, a JSON string in a WebSocket frame, an HTTP body and a gRPC bytes field alike.
 */
export function stampedPayload(stampUs: number, size: number, padding: string): string {
  const head = `${stampUs}|`;
  return size > head.length ? head + padding.slice(0, size - head.length) : head;
}

export function paddingFor(size: number): string {
  return 'x'.repeat(Math.max(0, size));
}

/** The stamp at `from` in a string (a frame, an SSE data line), or -1 when there is none. */
export function readStamp(text: string, from = 0): number {
  let value = 0;
  let i = from;
  for (; i < text.length; i++) {
    const digit = text.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) break;
    value = value * 10 + digit;
  }
  return i > from && text.charCodeAt(i) === 124 ? value : -1;
}

/** The stamp at the start of a byte payload, or -1. */
export function readStampBytes(bytes: Uint8Array): number {
  let value = 0;
  let i = 0;
  for (; i < bytes.length; i++) {
    const digit = bytes[i]! - 48;
    if (digit < 0 || digit > 9) break;
    value = value * 10 + digit;
  }
  return i > 0 && bytes[i] === 124 ? value : -1;
}
