/**
 * `junction bench` against the peers it compares Junction with (bare libraries of bench/peers,
 * Mosquitto, NATS), and what it reports when things go wrong: a fake server that loses messages
 * checks that the generator notices loss instead of reporting what it sent.
 */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocketServer } from 'ws';
import { BIN, runCli } from '../helpers/cli.js';
import { eventually } from '../helpers/eventually.js';
import { bench, expectComplete } from '../helpers/bench.js';
import type { Comparison } from '../../src/bench/types.js';

describe('junction bench against peers', { timeout: 120_000 }, () => {
  it('the bare libraries of bench/peers answer the same clients', async () => {
    expectComplete(await bench(['http-publish', '--server', 'fastify', '--count', '300', '--connections', '4']), 300, 1);
    expectComplete(await bench(['mqtt-pubsub', '--server', 'aedes', '--count', '300', '--subscribers', '2', '--qos', '1']), 300, 2);
    expectComplete(await bench(['ws-fanout', '--server', 'ws', '--subscribers', '20', '--rate', '200', '--count', '100', '--qos', '1']), 100, 20);
    expectComplete(await bench(['grpc-stream', '--server', 'grpc', '--count', '300']), 300, 1);
    expectComplete(await bench(['grpc-fanout', '--server', 'grpc', '--count', '200', '--subscribers', '5', '--workers', '1']), 200, 5);
  });

  it('Mosquitto over MQTT and NATS over MQTT and WebSocket', async () => {
    expectComplete(await bench(['mqtt-pubsub', '--server', 'mosquitto', '--count', '300', '--subscribers', '2', '--qos', '1']), 300, 2);
    expectComplete(await bench(['mqtt-pubsub', '--server', 'nats', '--count', '300', '--qos', '1']), 300, 1);
    expectComplete(await bench(['work-queue', '--server', 'mosquitto', '--count', '300', '--subscribers', '3']), 300, 1);
    expectComplete(await bench(['ws-fanout', '--server', 'nats', '--subscribers', '10', '--rate', '200', '--count', '100', '--qos', '1']), 100, 10);
  });

  it('--versus: the same load against Junction and a peer, with ratios of rate and CPU per message', async () => {
    const run = await runCli(['bench', 'grpc-stream', '--versus', 'grpc', '--count', '300', '--json', '--warmup', '0'], { timeoutMs: 60_000 });
    expect(run.code, run.stderr).toBe(0);
    const comparison = JSON.parse(run.stdout) as Comparison;
    expect(comparison.runs.map((r) => r.server)).toEqual(['junction', 'grpc']);
    for (const r of comparison.runs) expectComplete(r, 300, 1);
    expect(comparison.cpuRatios.grpc).toBeCloseTo(comparison.medians.junction!.cpuUsPerMessage! / comparison.medians.grpc!.cpuUsPerMessage!);
    expect(comparison.ratios.grpc).toBeGreaterThan(0);
  });

  it('--tls: Mosquitto and fastify over TLS, and a clear refusal where a server has none', async () => {
    expectComplete(await bench(['mqtt-pubsub', '--server', 'mosquitto', '--tls', '--count', '300', '--qos', '1']), 300, 1);
    expectComplete(await bench(['http-publish', '--server', 'fastify', '--tls', '--count', '300', '--connections', '4']), 300, 1);
    const refused = await runCli(['bench', 'mqtt-pubsub', '--server', 'aedes', '--tls', '--count', '10', '--json']);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('--tls: bench/peers/aedes serves no TLS');
  });
});

describe('junction bench reports what went wrong', { timeout: 120_000 }, () => {
  let fake: WebSocketServer | undefined;
  afterEach(() => new Promise<void>((resolve) => { if (fake) fake.close(() => resolve()); else resolve(); }));

  it('counts deliveries a lossy server never made', async () => {
    // Acks every publish but forwards only every other one.
    fake = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/ws' });
    const subscribers = new Set<import('ws').WebSocket>();
    let publishes = 0;
    fake.on('connection', (socket) => {
      socket.on('message', (data) => {
        const frame = JSON.parse(String(data)) as { op: string; id?: string | number; key: string; payload?: string };
        if (frame.op === 'subscribe') {
          subscribers.add(socket);
          socket.send(JSON.stringify({ op: 'ack', id: frame.id }));
        } else if (frame.op === 'publish') {
          if (publishes++ % 2 === 0) for (const s of subscribers) s.send(JSON.stringify({ op: 'message', sub: 's1', key: frame.key, payload: frame.payload }));
          if (frame.id !== undefined) socket.send(JSON.stringify({ op: 'ack', id: frame.id }));
        }
      });
    });
    await new Promise((resolve) => fake!.once('listening', resolve));
    const port = (fake.address() as { port: number }).port;
    const result = await bench(['ws-fanout', '--server', 'external', '--http-port', String(port), '--subscribers', '3', '--rate', '200', '--count', '40', '--qos', '1', '--drain', '1']);
    expect(result.sent).toBe(40);
    expect(result.expected).toBe(120);
    expect(result.received).toBe(60);
    expect(result.serverProcess).toBeUndefined();
  });

  it('an interrupted run stops the server it started', async () => {
    // The profile directory is unique to this run: the server is the process given it as --cpu-prof-dir.
    const marker = await mkdtemp(path.join(os.tmpdir(), 'junction-bench-interrupt-'));
    const running = () => {
      try {
        return execFileSync('pgrep', ['-f', '--', `--cpu-prof-dir ${marker}`]).toString().trim().split('\n').length;
      } catch {
        return 0;
      }
    };
    const child = spawn(process.execPath, [BIN, 'bench', 'ws-fanout', '--subscribers', '10', '--duration', '60', '--cpu-prof', marker], { stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await eventually(() => expect(running()).toBeGreaterThan(0), 20_000);
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    await eventually(() => expect(running()).toBe(0), 10_000);
    await rm(marker, { recursive: true, force: true });
  });

  it('refuses options it cannot honour, with a message naming them', async () => {
    const cases: [string[], RegExp][] = [
      [['mqtt-pubsub', '--qos', '2'], /--qos: 0 or 1/],
      [['mqtt-pubsub', '--server', 'fastify', '--duration', '1'], /mqtt-pubsub runs against junction, aedes, mosquitto, nats, external/],
      [['teleport'], /unknown scenario "teleport"/],
      [['http-publish', '--priority', '12'], /--priority: expected PRIORITY\[:WEIGHT\]/],
      [['http-publish', '--duration', '-1'], /--duration: expected a number ≥ 0.1/],
      [['http-publish', '--versus', 'fastify', '--server', 'fastify'], /--versus compares Junction with peers/],
      [['http-publish', '--versus', 'nginx'], /--versus: "nginx" is not a peer/],
    ];
    for (const [args, message] of cases) {
      const run = await runCli(['bench', ...args], { timeoutMs: 20_000 });
      expect(run.code, args.join(' ')).toBe(1);
      expect(run.stderr).toMatch(message);
    }
  });
});
