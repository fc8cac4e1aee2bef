/**
 * Property tests (fast-check) for the WebSocket frame parser and the message model behind it:
 * whatever JSON a client sends, the answer is a Message or a GatewayError with the documented
 * code (bad_request, too_large), never another exception (which would be answered `internal`).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseFrame, toMessage } from '../../adapters/websocket/frames.js';
import { GatewayError } from '../../src/errors.js';

const SOURCE = { protocol: 'ws' as const, clientId: 'ws-1', remoteAddress: '127.0.0.1' };
const MAX_PAYLOAD = 1024;

/** Frames of the right shape with values of any type, and plain arbitrary JSON. */
const frames = fc.oneof(
  fc.record({
    op: fc.constantFrom('publish', 'request', 'subscribe', 'unsubscribe', 'ack', 'other'),
    id: fc.jsonValue(), key: fc.oneof(fc.string(), fc.jsonValue()), payload: fc.jsonValue(),
    encoding: fc.oneof(fc.constant('base64'), fc.jsonValue()), qos: fc.jsonValue(), priority: fc.jsonValue(),
    headers: fc.oneof(fc.dictionary(fc.string(), fc.string()), fc.jsonValue()), ttl: fc.jsonValue(), contentType: fc.jsonValue(),
  }, { requiredKeys: ['op'] }),
  fc.jsonValue(),
);

function answer(frame: unknown): 'message' | 'frame' | string {
  try {
    const parsed = parseFrame(frame);
    if (parsed.op !== 'publish' && parsed.op !== 'request') return 'frame';
    const message = toMessage(parsed, SOURCE, MAX_PAYLOAD);
    expect(message.payload.length).toBeLessThanOrEqual(MAX_PAYLOAD);
    return 'message';
  } catch (err) {
    if (!(err instanceof GatewayError)) throw err;
    return err.code;
  }
}

describe('a WebSocket frame, whatever its JSON', () => {
  it('becomes a Message within the payload limit, or a bad_request / too_large refusal', () => {
    fc.assert(fc.property(frames, (frame) => {
      expect(['message', 'frame', 'bad_request', 'too_large']).toContain(answer(frame));
    }), { numRuns: 2000, seed: 19 });
  });
});
