import { describe, expect, it } from 'vitest';
import { createMessage } from '../../src/message.js';
import { appendFrameBytes, FrameBuffer, scanFrames, writeAppendFrame, writeAttemptFrame, writeSegmentFrame, writeSettleFrame, type Frame } from '../../src/queue/codec.js';
import type { QueueOutcome } from '../../src/queue/store.js';
import { fullMessage, testMessage } from '../queue/messages.js';

/** The frame magic as docs/durability.md gives it. */
const MAGIC = Buffer.from([0xa7, 0x4a, 0x51, 0x0d]);

function scan(data: Buffer): { frames: Frame[]; corrupt: number; torn: number } {
  const frames: Frame[] = [];
  const damage = scanFrames(data, (frame) => frames.push(frame));
  return { frames, ...damage };
}

function appendSeqs(frames: Frame[]): number[] {
  return frames.flatMap((frame) => (frame.type === 'append' ? [frame.seq] : []));
}

/** Five append frames (seq 1..5) after a segment header; returns the bytes and where each append starts. */
function fiveRecords(payload = (seq: number) => Buffer.from(`record ${seq}`)): { data: Buffer; starts: number[] } {
  const out = new FrameBuffer();
  writeSegmentFrame(out);
  const starts: number[] = [];
  for (let seq = 1; seq <= 5; seq++) {
    const message = testMessage({ payload: payload(seq) });
    starts.push(out.length);
    writeAppendFrame(out, seq, 0, 'ingest', message, appendFrameBytes('ingest', message));
  }
  return { data: Buffer.from(out.bytes.subarray(0, out.length)), starts };
}

describe('queue segment frames', () => {
  it('round-trips every message field, the payload byte for byte', () => {
    const message = fullMessage();
    const out = new FrameBuffer();
    const bytes = appendFrameBytes('billing', message);
    writeAppendFrame(out, 2 ** 40 + 3, 7, 'billing', message, bytes);
    expect(out.length).toBe(bytes);
    const { frames, corrupt, torn } = scan(out.bytes.subarray(0, out.length));
    expect([corrupt, torn]).toEqual([0, 0]);
    expect(frames).toEqual([{ type: 'append', seq: 2 ** 40 + 3, attempts: 7, target: 'billing', message, bytes }]);
  });

  it('keeps absent fields absent and present ones present, retain false and a __proto__ header included', () => {
    const bare = createMessage({ key: 'k', payload: Buffer.alloc(0), qos: 1, source: { protocol: 'internal' } });
    const headers = JSON.parse('{"__proto__":"x","a":"b"}') as Record<string, string>;
    const odd = { ...createMessage({ key: 'k', payload: Buffer.from([0]), qos: 1, source: { protocol: 'ws' }, headers }), retain: false, contentType: '' };
    const out = new FrameBuffer();
    for (const message of [bare, odd]) writeAppendFrame(out, 1, 0, 't', message, appendFrameBytes('t', message));
    const [first, second] = scan(out.bytes.subarray(0, out.length)).frames as Extract<Frame, { type: 'append' }>[];
    expect(first!.message).toStrictEqual(bare);
    expect(second!.message).toEqual(odd);
    expect(second!.message.retain).toBe(false);
    expect(Object.keys(second!.message.headers)).toEqual(['__proto__', 'a']);
    expect(second!.message.headers.__proto__).toBe('x');
  });

  it('round-trips the source of every protocol', () => {
    const protocols = ['mqtt', 'ws', 'http', 'grpc', 'internal'] as const;
    const out = new FrameBuffer();
    for (const protocol of protocols) {
      const message = testMessage({ source: { protocol } });
      writeAppendFrame(out, 1, 0, 't', message, appendFrameBytes('t', message));
    }
    const frames = scan(out.bytes.subarray(0, out.length)).frames as Extract<Frame, { type: 'append' }>[];
    expect(frames.map((frame) => frame.message.source.protocol)).toEqual(protocols);
  });

  it('round-trips attempt and settlement frames for every outcome', () => {
    const outcomes: QueueOutcome[] = ['delivered', 'expired', 'deadLettered', 'rerouted', 'returned'];
    const out = new FrameBuffer();
    writeAttemptFrame(out, 9, 3);
    for (const outcome of outcomes) writeSettleFrame(out, 9, outcome);
    expect(scan(out.bytes.subarray(0, out.length)).frames).toEqual([
      { type: 'attempt', seq: 9, attempts: 3 },
      ...outcomes.map((outcome) => ({ type: 'settle', seq: 9, outcome })),
    ]);
  });

  it('grows for a large frame and starts small again once emptied', () => {
    const out = new FrameBuffer();
    const large = testMessage({ payload: Buffer.alloc(4 * 1024 * 1024, 1) });
    writeAppendFrame(out, 1, 0, 't', large, appendFrameBytes('t', large));
    expect(out.bytes.length).toBeGreaterThan(4 * 1024 * 1024);
    out.truncate(0);
    expect(out.bytes.length).toBeLessThan(1024 * 1024);
  });

  for (const [where, offset] of [['magic', 0], ['CRC', 5], ['length', 9], ['body', 30]] as const) {
    it(`skips exactly one record with a damaged ${where} and reads on after it`, () => {
      const { data, starts } = fiveRecords();
      data[starts[2]! + offset]! ^= 0x40;
      const { frames, corrupt, torn } = scan(data);
      expect([corrupt, torn]).toEqual([1, 0]);
      expect(appendSeqs(frames)).toEqual([1, 2, 4, 5]);
    });
  }

  it('is not misled by the magic inside a payload while it resynchronises', () => {
    const { data, starts } = fiveRecords((seq) => Buffer.concat([MAGIC, Buffer.from(`record ${seq}`), MAGIC]));
    data[starts[1]! + 9]! ^= 0x01;
    const { frames, corrupt } = scan(data);
    expect(corrupt).toBe(1);
    expect(appendSeqs(frames)).toEqual([1, 3, 4, 5]);
  });

  it('counts a cut-off last record, or zeros past the last one, as a torn tail', () => {
    const { data, starts } = fiveRecords();
    for (const cut of [data.length - 1, starts[4]! + 6, starts[4]! + 1]) {
      const { frames, corrupt, torn } = scan(data.subarray(0, cut));
      expect([corrupt, torn]).toEqual([0, 1]);
      expect(appendSeqs(frames)).toEqual([1, 2, 3, 4]);
    }
    const zeros = scan(Buffer.concat([data, Buffer.alloc(4096)]));
    expect([zeros.corrupt, zeros.torn]).toEqual([0, 1]);
    expect(appendSeqs(zeros.frames)).toEqual([1, 2, 3, 4, 5]);
  });
});
