/**
 * The fuzzer's inputs: per protocol a corpus of valid messages, and seeded mutations of them
 * (fast-check generates the mutations, so a run is reproducible from its seed).
 */
import fc from 'fast-check';
import mqttPacket from 'mqtt-packet';

export const FUZZ_PROTOCOLS = ['mqtt-tcp', 'mqtt-ws', 'ws-frames', 'ws-json', 'http', 'grpc'] as const;
export type FuzzProtocol = (typeof FUZZ_PROTOCOLS)[number];

const mqtt = (packet: object): Buffer => mqttPacket.generate(packet as mqttPacket.Packet);
const CONNECT = mqtt({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'fuzz', keepalive: 30 });
const MQTT_SEEDS = [
  CONNECT,
  Buffer.concat([CONNECT, mqtt({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'fuzz/#', qos: 1 }] })]),
  Buffer.concat([CONNECT, mqtt({ cmd: 'publish', topic: 'fuzz/a', payload: Buffer.from('{"t":21.5}'), qos: 0, retain: false, dup: false })]),
  Buffer.concat([CONNECT, mqtt({ cmd: 'publish', topic: 'fuzz/b', payload: Buffer.from('x'.repeat(40)), qos: 1, messageId: 7, retain: false, dup: false })]),
  Buffer.concat([CONNECT, mqtt({ cmd: 'publish', topic: 'fuzz/c', payload: Buffer.from('q2'), qos: 2, messageId: 9, retain: true, dup: false })]),
  Buffer.concat([CONNECT, mqtt({ cmd: 'pingreq' }), mqtt({ cmd: 'unsubscribe', messageId: 3, unsubscriptions: ['fuzz/#'] }), mqtt({ cmd: 'disconnect' })]),
  mqtt({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clean: true, clientId: 'fuzz5', keepalive: 30, properties: { sessionExpiryInterval: 10, receiveMaximum: 5 } }),
  Buffer.concat([CONNECT, mqtt({ cmd: 'subscribe', messageId: 2, subscriptions: [{ topic: '$share/g/fuzz/+', qos: 1 }, { topic: '_inbox/+/fuzz/#', qos: 0 }] })]),
];

const JSON_SEEDS = [
  '{"op":"publish","id":1,"key":"fuzz/a","payload":{"t":21.5},"qos":1,"priority":5}',
  '{"op":"publish","key":"fuzz/b","payload":"aGVsbG8=","encoding":"base64","headers":{"x":"y"},"ttl":1000}',
  '{"op":"subscribe","id":"s","key":"fuzz/#"}',
  '{"op":"subscribe","id":"g","key":"fuzz/+","group":"workers"}',
  '{"op":"unsubscribe","id":"u","key":"fuzz/#"}',
  '{"op":"request","id":2,"key":"fuzz/rpc","payload":[1,2,{"a":null}],"timeoutMs":50}',
  '{"op":"ack","sub":"g","id":"01J"}',
].map((s) => Buffer.from(s));

/** A masked client frame (RFC 6455): opcode, payload. */
function wsFrame(opcode: number, payload: Buffer, fin = true): Buffer {
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const length = payload.length;
  const head = length < 126 ? Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | length])
    : Buffer.from([(fin ? 0x80 : 0) | opcode, 0x80 | 126, length >> 8, length & 0xff]);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]!));
  return Buffer.concat([head, mask, masked]);
}

const WS_FRAME_SEEDS = [
  wsFrame(0x1, JSON_SEEDS[0]!),
  wsFrame(0x1, JSON_SEEDS[2]!),
  Buffer.concat([wsFrame(0x1, JSON_SEEDS[0]!.subarray(0, 20), false), wsFrame(0x0, JSON_SEEDS[0]!.subarray(20))]),
  wsFrame(0x9, Buffer.from('ping')),
  wsFrame(0xa, Buffer.from('pong')),
  wsFrame(0x2, Buffer.from([0, 1, 2, 3])),
  wsFrame(0x8, Buffer.from([0x03, 0xe8])),
];

const HTTP_SEEDS = [
  'POST /v1/messages/fuzz/a HTTP/1.1\r\nHost: j\r\nContent-Type: application/json\r\nContent-Length: 10\r\nx-qos: 1\r\nx-priority: 5\r\n\r\n{"t":21.5}',
  'POST /v1/messages/fuzz/%C3%A9t%C3%A9 HTTP/1.1\r\nHost: j\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n',
  'POST /v1/requests/fuzz/rpc HTTP/1.1\r\nHost: j\r\nx-timeout-ms: 50\r\nContent-Length: 2\r\n\r\nhi',
  'GET /v1/subscribe/fuzz/%23 HTTP/1.1\r\nHost: j\r\n\r\n',
  'GET /v1/subscribe/fuzz/+?group=workers HTTP/1.1\r\nHost: j\r\n\r\n',
  'GET /ws HTTP/1.1\r\nHost: j\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n',
  'POST /v1/messages/fuzz/b HTTP/1.1\r\nHost: j\r\nx-expires-in: 10\r\nx-reply-to: fuzz/r\r\nContent-Length: 0\r\n\r\n',
].map((s) => Buffer.from(s));

/** protobuf: a length-delimited field */
function field(number: number, value: Buffer | string): Buffer {
  const bytes = Buffer.from(value);
  return Buffer.concat([Buffer.from([(number << 3) | 2, bytes.length]), bytes]);
}

/** gRPC methods of junction.v1.Gateway and valid request bodies for each (protobuf, before framing). */
export const GRPC_METHODS = ['Publish', 'PublishStream', 'Subscribe', 'Request', 'Ack'] as const;
const GRPC_SEEDS = [
  Buffer.concat([field(1, 'fuzz/a'), field(2, '{"t":21.5}'), field(3, 'application/json'), Buffer.from([0x28, 5, 0x30, 1])]),
  Buffer.concat([field(1, 'fuzz/#'), Buffer.from([0x10, 0]), field(3, 'workers')]),
  Buffer.concat([field(1, 'capteurs/température/#')]),
  Buffer.concat([field(1, 'sub'), field(2, '01J'), field(2, '01K')]),
  Buffer.concat([field(1, 'fuzz/rpc'), field(2, 'hi'), Buffer.from([0x68, 50])]),
];

/** length-prefixed gRPC message framing */
export function grpcFrame(message: Buffer, compressed = false): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

const SEEDS: Record<FuzzProtocol, Buffer[]> = {
  'mqtt-tcp': MQTT_SEEDS,
  'mqtt-ws': MQTT_SEEDS,
  'ws-frames': WS_FRAME_SEEDS,
  'ws-json': JSON_SEEDS,
  http: HTTP_SEEDS,
  grpc: GRPC_SEEDS.map((m) => grpcFrame(m)),
};

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'set'; at: number; value: number }
  | { kind: 'insert'; at: number; bytes: Uint8Array }
  | { kind: 'delete'; at: number; length: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'repeat'; at: number; length: number; times: number }
  | { kind: 'splice'; at: number; seed: number };

const mutationArb = (seeds: number): fc.Arbitrary<Mutation> => fc.oneof(
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.constantFrom(0x00, 0x01, 0x7f, 0x80, 0xff, 0x22, 0x7b, 0x5b, 0x0d, 0x0a) }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 32 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('repeat' as const), at: fc.nat(), length: fc.integer({ min: 1, max: 16 }), times: fc.integer({ min: 2, max: 200 }) }),
  fc.record({ kind: fc.constant('splice' as const), at: fc.nat(), seed: fc.nat({ max: seeds - 1 }) }),
);

function apply(input: Buffer, mutation: Mutation, seeds: Buffer[]): Buffer {
  if (input.length === 0) return Buffer.from([mutation.at & 0xff]);
  const at = mutation.at % input.length;
  switch (mutation.kind) {
    case 'flip': {
      const out = Buffer.from(input);
      out[at] = out[at]! ^ (1 << mutation.bit);
      return out;
    }
    case 'set': {
      const out = Buffer.from(input);
      out[at] = mutation.value;
      return out;
    }
    case 'insert':
      return Buffer.concat([input.subarray(0, at), mutation.bytes, input.subarray(at)]);
    case 'delete':
      return Buffer.concat([input.subarray(0, at), input.subarray(at + mutation.length)]);
    case 'truncate':
      return input.subarray(0, at);
    case 'repeat': {
      const piece = input.subarray(at, at + mutation.length);
      return Buffer.concat([input.subarray(0, at), ...Array.from({ length: mutation.times }, () => piece), input.subarray(at)]);
    }
    case 'splice': {
      const other = seeds[mutation.seed]!;
      return Buffer.concat([input.subarray(0, at), other.subarray(mutation.at % Math.max(1, other.length))]);
    }
  }
}

/** A JSON frame the parser must refuse cleanly: deep nesting, huge numbers, odd types. */
const hostileJson = fc.oneof(
  fc.integer({ min: 100, max: 5000 }).map((depth) => `{"op":"publish","key":"fuzz/d","payload":${'['.repeat(depth)}${']'.repeat(depth)}}`),
  fc.jsonValue().map((value) => JSON.stringify(value)),
  fc.record({ op: fc.constantFrom('publish', 'subscribe', 'request', 'ack', 'unsubscribe', 'x'), key: fc.string(), id: fc.jsonValue(), payload: fc.jsonValue(), qos: fc.jsonValue(), priority: fc.jsonValue() })
    .map((frame) => JSON.stringify(frame)),
).map((text) => Buffer.from(text));

/** Inputs of one protocol: mutated seeds, and for JSON frames some hostile ones too. */
export function inputArbitrary(protocol: FuzzProtocol): fc.Arbitrary<Buffer> {
  const seeds = SEEDS[protocol];
  const mutated = fc.tuple(fc.nat({ max: seeds.length - 1 }), fc.array(mutationArb(seeds.length), { minLength: 1, maxLength: 4 }))
    .map(([seed, mutations]) => mutations.reduce((input, mutation) => apply(input, mutation, seeds), seeds[seed]!));
  return protocol === 'ws-json' ? fc.oneof({ arbitrary: mutated, weight: 3 }, { arbitrary: hostileJson, weight: 1 }) : mutated;
}

/** `count` inputs from `seed`, generated a batch at a time (a million never sit in memory at once). */
export function* inputs(protocol: FuzzProtocol, count: number, seed: number): Generator<Buffer> {
  const arbitrary = inputArbitrary(protocol);
  const BATCH = 1000;
  for (let done = 0, batch = 0; done < count; batch++) {
    const n = Math.min(BATCH, count - done);
    for (const input of fc.sample(arbitrary, { numRuns: n, seed: seed + batch })) yield input;
    done += n;
  }
}
