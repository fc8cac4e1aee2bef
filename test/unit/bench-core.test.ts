import { describe, expect, it } from 'vitest';
import { LatencyHistogram } from '../../src/bench/histogram.js';
import { expandPriorityMix, SCENARIO_SPECS } from '../../src/bench/scenarios.js';
import { resolveOptions } from '../../src/bench/command.js';
import { alternate, comparisonOf } from '../../src/bench/comparison.js';
import type { BenchResult, ServerKind } from '../../src/bench/types.js';
import { paddingFor, readStamp, readStampBytes, stampedPayload } from '../../src/bench/stamp.js';

describe('send stamps', () => {
  it('round-trip through text, JSON frames and bytes at the requested size', () => {
    const payload = stampedPayload(123456789012, 64, paddingFor(64));
    expect(payload).toHaveLength(64);
    expect(readStamp(payload)).toBe(123456789012);
    const frame = JSON.stringify({ op: 'message', payload });
    expect(readStamp(frame, frame.indexOf('"payload":"') + 11)).toBe(123456789012);
    expect(readStampBytes(Buffer.from(payload))).toBe(123456789012);
  });

  it('a payload smaller than the stamp keeps the whole stamp', () => {
    expect(readStamp(stampedPayload(987654321, 4, paddingFor(4)))).toBe(987654321);
  });

  it('anything without a stamp reads as -1', () => {
    expect(readStamp('hello')).toBe(-1);
    expect(readStamp('12345')).toBe(-1);
    expect(readStampBytes(Buffer.from('|x'))).toBe(-1);
  });
});

describe('latency histograms', () => {
  it('survive encoding and merge across workers', () => {
    const a = new LatencyHistogram();
    const b = new LatencyHistogram();
    for (let i = 1; i <= 990; i++) a.record(1000);
    for (let i = 1; i <= 10; i++) b.record(50_000);
    const merged = LatencyHistogram.decode(a.encode());
    merged.add(LatencyHistogram.decode(b.encode()));
    const summary = merged.summary();
    expect(summary.count).toBe(1000);
    expect(summary.p50).toBeCloseTo(1, 1);
    expect(summary.p999).toBeCloseTo(50, 0);
    expect(summary.max).toBeCloseTo(50, 0);
  });

  it('an empty histogram summarises to zeros, not NaN', () => {
    expect(new LatencyHistogram().summary()).toEqual({ count: 0, mean: 0, p50: 0, p90: 0, p99: 0, p999: 0, max: 0 });
  });
});

describe('priority mixes', () => {
  it('spread each priority over the cycle by its weight', () => {
    const cycle = expandPriorityMix('0:3,9:1');
    expect(cycle).toHaveLength(4);
    expect(cycle.filter((p) => p === 9)).toHaveLength(1);
    expect(expandPriorityMix('5')).toEqual([5]);
  });

  it('refuse priorities outside 0-9 and bad weights', () => {
    expect(() => expandPriorityMix('10')).toThrow(/--priority/);
    expect(() => expandPriorityMix('1:0')).toThrow(/--priority/);
  });
});

describe('scenario topologies', () => {
  const base = { publishers: '1', warmup: '1', drain: '5', payload: '64', priority: '0', keepalive: '30', wsPath: '/ws', server: 'junction' as const, host: '127.0.0.1' };

  it('mqtt-pubsub pairs publishers and subscribers by topic and splits rate and count', () => {
    const options = resolveOptions('mqtt-pubsub', { ...base, publishers: '4', subscribers: '8', topics: '2', rate: '1000', count: '10' });
    const topology = SCENARIO_SPECS['mqtt-pubsub'].topology(options);
    expect(topology.publishers.map((p) => p.key)).toEqual(['bench/0', 'bench/1', 'bench/0', 'bench/1']);
    expect(topology.publishers.map((p) => p.rate)).toEqual([250, 250, 250, 250]);
    expect(topology.publishers.map((p) => p.count)).toEqual([3, 3, 2, 2]);
    expect(topology.subscribers.filter((s) => s.key === 'bench/0')).toHaveLength(4);
  });

  it('mixed subscribes every key on the three other protocols', () => {
    const topology = SCENARIO_SPECS.mixed.topology(resolveOptions('mixed', base));
    expect(topology.publishers.map((p) => p.protocol)).toEqual(['mqtt', 'ws', 'http', 'grpc']);
    for (const p of topology.publishers) {
      const receivers = topology.subscribers.filter((s) => s.key === p.key).map((s) => s.protocol);
      expect(receivers.sort()).toEqual(['grpc', 'http', 'mqtt', 'ws'].filter((x) => x !== p.protocol).sort());
    }
  });

  it('many connections get one worker per 5,000 clients', () => {
    expect(resolveOptions('ws-connections', { ...base, connections: '19000' }).workers).toBe(4);
    expect(resolveOptions('mqtt-pubsub', base).workers).toBe(1);
    expect(resolveOptions('http-publish', base).workers).toBe(2);
  });
});

describe('comparisons', () => {
  const result = (server: ServerKind, receivedPerS: number, cpuUsPerMessage?: number): BenchResult => ({
    scenario: 'mqtt-pubsub', server, options: {}, command: '', startedAt: '', durationS: 1, sent: 1, received: 1, expected: 1, errors: 0, errorSamples: [],
    machine: { cpus: 2, cpuModel: 'x', memGiB: 1, node: 'v20', os: 'linux', loadAverage: 1 },
    sentPerS: receivedPerS, sentPerSByKey: {}, receivedPerS, latencyKind: 'delivery', latency: { count: 1, mean: 1, p50: 1, p90: 1, p99: 1, p999: 1, max: 1 },
    loadGenerator: { workers: 1, busiestWorkerCpu: 0.5, saturated: false }, ...(cpuUsPerMessage !== undefined ? { cpuUsPerMessage } : {}),
  });

  it('alternate servers run by run, reversing the order every other run', async () => {
    const order: ServerKind[] = [];
    await alternate(['junction', 'aedes'], 3, (server) => {
      order.push(server);
      return Promise.resolve(result(server, 1));
    });
    expect(order).toEqual(['junction', 'aedes', 'aedes', 'junction', 'junction', 'aedes']);
  });

  it('give Junction ÷ peer ratios of median rate and of median CPU per message', () => {
    const c = comparisonOf('QoS 0', 'junction bench mqtt-pubsub', ['junction', 'aedes', 'mosquitto'], [
      result('junction', 40_000, 30), result('junction', 50_000, 20), result('junction', 45_000, 25),
      result('aedes', 90_000, 10), result('aedes', 100_000, 12),
      result('mosquitto', 80_000),
    ]);
    expect(c.medians.junction).toMatchObject({ runs: 3, receivedPerS: 45_000, cpuUsPerMessage: 25 });
    expect(c.ratios.aedes).toBeCloseTo(45_000 / 95_000);
    expect(c.cpuRatios.aedes).toBeCloseTo(25 / 11);
    // No CPU figure for a server (an external one): no CPU ratio rather than NaN.
    expect(c.ratios.mosquitto).toBeCloseTo(45_000 / 80_000);
    expect(c.cpuRatios).not.toHaveProperty('mosquitto');
  });
});
