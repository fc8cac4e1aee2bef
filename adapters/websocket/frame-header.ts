/** RFC 6455 §5.2's opcodes, a header's low four bits */
export const OPCODE = { continuation: 0, text: 1, close: 8, ping: 9, pong: 10 } as const;
/** A header's first bit: the final (or only) frame of a message. */
export const FIN = 0x80;
/** The second byte's first bit: a masking key follows the length (every frame a client sends). */
const MASKED = 0x80;

/** The bytes of a frame's header before any masking key, for a payload of `length` bytes (RFC 6455 §5.2): 2, 4 or 10. */
export function frameHeaderSize(length: number): number {
  return length < 126 ? 2 : length < 65_536 ? 4 : 10;
}

/**
 * Writes the header of a final frame of `opcode` carrying `length` bytes at the start of `frame`,
 * the length in 7, 16 or 64 bits as it needs; `masked` for a client's frame, whose masking key
 * the caller writes after it. Returns the header's size.
 */
export function writeFrameHeader(frame: Buffer, opcode: number, length: number, masked: boolean): number {
  const size = frameHeaderSize(length);
  const mask = masked ? MASKED : 0;
  frame[0] = FIN | opcode;
  if (size === 2) {
    frame[1] = mask | length;
  } else if (size === 4) {
    frame[1] = mask | 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = mask | 127;
    frame.writeBigUInt64BE(BigInt(length), 2);
  }
  return size;
}
