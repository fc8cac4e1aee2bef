/**
 * `junction bench` end to end, with small bounded runs: the load generator starts the server
 * (Junction, a bare library from bench/peers, Mosquitto, NATS), drives it over real sockets and
 * reports counts that must add up. This file: Junction; bench-peers.test.ts: the peers and
 * the load generator's own errors.
 */
import { describe, expect, it } from 'vitest';
import { bench, expectComplete } from '../helpers/bench.js';

describe('junction bench against Junction', { timeout: 120_000 }, () => {
  it('http-publish: every POST is acknowledged with 202, latency per request, server footprint', async () => {
    const result = await bench(['http-publish', '--count', '400', '--connections', '4']);
    expectComplete(result, 400, 1);
    expect(result.latencyKind).toBe('ack');
    expect(result.server).toBe('junction');
    expect(result.serverProcess!.peakRssBytes).toBeGreaterThan(10 * 2 ** 20);
    expect(result.serverProcess!.cpuSeconds).toBeGreaterThan(0);
    expect(result.cpuUsPerMessage).toBeCloseTo((result.serverProcess!.cpuSeconds / 400) * 1e6, 0);
    expect(result.command).toContain('bench http-publish');
  });

  it('mqtt-pubsub QoS 1: 2 publishers → 6 subscribers of 2 topics, every delivery counted once', async () => {
    const result = await bench(['mqtt-pubsub', '--count', '600', '--publishers', '2', '--subscribers', '6', '--qos', '1', '--workers', '2']);
    expectComplete(result, 600, 3);
    expect(result.latencyKind).toBe('delivery');
    expect(result.loadGenerator.workers).toBe(2);
  });

  it('ws-fanout at a fixed rate with a priority mix: every subscriber gets every broadcast', async () => {
    const result = await bench(['ws-fanout', '--subscribers', '50', '--rate', '100', '--count', '100', '--qos', '1', '--priority', '0:9,9:1']);
    expectComplete(result, 100, 50);
    expect(result.targetRate).toBe(100);
    expect(result.options.priorities).toEqual([0, 0, 0, 0, 0, 9, 0, 0, 0, 0]);
  });

  it('grpc-unary and grpc-stream: every Publish is acknowledged', async () => {
    expectComplete(await bench(['grpc-unary', '--count', '500', '--connections', '2', '--inflight', '8']), 500, 1);
    expectComplete(await bench(['grpc-stream', '--count', '500', '--inflight', '64']), 500, 1);
  });

  it('grpc-fanout: every Subscribe stream gets every published message', async () => {
    expectComplete(await bench(['grpc-fanout', '--count', '200', '--subscribers', '5', '--workers', '1']), 200, 5);
  });

  it('mixed: each protocol publishes, the three others receive', async () => {
    const result = await bench(['mixed', '--count', '400', '--inflight', '4']);
    expectComplete(result, 400, 3);
    expect(Object.keys(result.sentPerSByKey).sort()).toEqual(['bench/mixed/grpc', 'bench/mixed/http', 'bench/mixed/mqtt', 'bench/mixed/ws']);
  });

  it('work-queue: a group of 3 competing MQTT consumers gets each message exactly once', async () => {
    const result = await bench(['work-queue', '--count', '600', '--subscribers', '3', '--workers', '2']);
    expectComplete(result, 600, 1);
    expect(result.options.qos).toBe(1);
  });

  it('connections scenarios hold every connection and report memory per connection', async () => {
    for (const scenario of ['mqtt-connections', 'ws-connections']) {
      const result = await bench([scenario, '--connections', '300', '--duration', '2', '--keepalive', '1', '--workers', '2']);
      expect(result.connections).toMatchObject({ wanted: 300, connected: 300, failed: 0, dropped: 0 });
      // The figure is the RSS difference over 300 connections: a collection in between can make it
      // any size, negative too; that it is measured and reported is what this checks.
      expect(Number.isFinite(result.connections!.rssPerConnectionBytes)).toBe(true);
      expect(result.latencyKind).toBe('none');
    }
  });

  it('--tls: HTTP publish, MQTT pub/sub and MQTT connections over TLS, with handshakes per second', async () => {
    expectComplete(await bench(['http-publish', '--tls', '--count', '300', '--connections', '4']), 300, 1);
    expectComplete(await bench(['mqtt-pubsub', '--tls', '--count', '300', '--qos', '1']), 300, 1);
    const connections = await bench(['mqtt-connections', '--tls', '--connections', '100', '--duration', '1']);
    expect(connections.connections).toMatchObject({ wanted: 100, connected: 100, failed: 0, dropped: 0 });
    expect(connections.connections!.openedPerS).toBeGreaterThan(0);
    expect(connections.options.tls).toBe(true);
  });
});
