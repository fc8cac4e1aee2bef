/**
 * Bounded fuzzing in CI (issue 19): a few hundred mutated inputs per protocol over real sockets
 * (MQTT over TCP and WebSocket, raw WebSocket frames, JSON frames, HTTP requests, gRPC over
 * HTTP/2) against a gateway of its own. It must not crash nor log an error, and a well-behaved
 * client beside the fuzzer loses nothing. `npm run fuzz` runs the same campaign at scale.
 */
import { describe, expect, it } from 'vitest';
import { runCampaign } from '../../bench/fuzz/campaign.js';
import { BIN } from '../helpers/cli.js';

const INPUTS_PER_PROTOCOL = 300;

describe('the fuzzer, bounded', () => {
  it(`survives ${INPUTS_PER_PROTOCOL} mutated inputs per protocol without an error line, and a well-behaved client loses nothing`, async () => {
    const report = await runCampaign({ bin: BIN, inputsPerProtocol: INPUTS_PER_PROTOCOL, seed: 19, idleMs: 0 });
    expect(report.crashed).toBe(false);
    expect(report.errorLines).toEqual([]);
    expect(report.results.map((r) => r.protocol)).toEqual(['mqtt-tcp', 'mqtt-ws', 'ws-frames', 'ws-json', 'http', 'grpc']);
    expect(report.wellBehaved.sent).toBeGreaterThan(0);
    expect(report.wellBehaved.received).toBe(report.wellBehaved.sent);
  }, 60_000);
});
