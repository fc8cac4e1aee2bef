/**
 * Runs every scenario of issues 8 and 13 against Junction and against the peers that speak it the same
 * way, alternating servers run by run, and writes the medians and ratios to
 * bench/results/latest.json, the chart to bench/results/chart.svg and the generated section of
 * BENCHMARKS.md. `npm run bench:all` (about an hour on 2 cores); `--only LABEL` for one comparison,
 * `--runs N` for fewer or more runs (at least 3 for figures worth quoting).
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { machineInfo } from '../../src/bench/machine.js';
import { alternate, comparisonOf } from '../../src/bench/comparison.js';
import { median } from '../../src/bench/medians.js';
import { writeReport } from '../../src/bench/render.js';
import { PACKAGE_ROOT } from '../../src/bench/server.js';
import type { BenchResult, Comparison, ComparisonFile, ScenarioName, ServerKind } from '../../src/bench/types.js';

interface Plan {
  label: string;
  scenario: ScenarioName;
  /** options after the scenario; a function when they depend on comparisons already made */
  args: string[] | ((done: ReadonlyMap<string, Comparison>) => string[]);
  servers: ServerKind[];
  /** runs per server, when fewer than --runs make sense (5-minute holds) */
  runs?: number;
  goal?: (c: Comparison) => Comparison['goal'];
}

const KB = 1024;
const fixed = (n: number, digits = 2) => n.toFixed(digits);

function ratioGoal(text: string, peer: string, threshold: number): Plan['goal'] {
  return (c) => {
    const ratio = c.ratios[peer];
    return ratio === undefined
      ? { text, met: null, detail: `no ${peer} runs` }
      : { text, met: ratio >= threshold, detail: `Junction ÷ ${peer} = ${fixed(ratio)}${Object.entries(c.ratios).filter(([p]) => p !== peer).map(([p, r]) => `; ÷ ${p} = ${fixed(r)}`).join('')}` };
  };
}

/** Issue 13: server CPU per message within `limit` times the peer's, measured in the same comparison. */
function cpuGoal(text: string, peer: string, limit: number): Plan['goal'] {
  return (c) => {
    const ratio = c.cpuRatios[peer];
    const j = c.medians.junction?.cpuUsPerMessage;
    const p = c.medians[peer]?.cpuUsPerMessage;
    if (ratio === undefined || j === undefined || j === null || p === undefined || p === null) return { text, met: null, detail: `no CPU figures for Junction and ${peer}` };
    const rate = c.ratios[peer];
    return {
      text, met: ratio <= limit,
      detail: `server CPU per message ${fixed(j, 1)} µs against ${peer}'s ${fixed(p, 1)} µs: Junction ÷ ${peer} = ${fixed(ratio)}${rate === undefined ? '' : `; rate Junction ÷ ${peer} = ${fixed(rate)}`}`,
    };
  };
}

/** Issue 13: delivery p99 within `limit` times the peer's. */
function p99Goal(text: string, peer: string, limit: number): Plan['goal'] {
  return (c) => {
    const j = c.medians.junction?.p99;
    const p = c.medians[peer]?.p99;
    if (j === undefined || p === undefined || p <= 0) return { text, met: null, detail: `no ${peer} runs` };
    return { text, met: j <= limit * p, detail: `p99 ${fixed(j, 1)} ms against ${peer}'s ${fixed(p, 1)} ms: ${fixed(j / p)}×; ${c.medians.junction!.lost} lost` };
  };
}

function holdGoal(text: string): Plan['goal'] {
  return (c) => {
    const j = c.runs.filter((r) => r.server === 'junction');
    const worst = j.reduce((w, r) => Math.max(w, r.connections?.rssPerConnectionBytes ?? Infinity), 0);
    const allHeld = j.every((r) => r.connections && r.connections.connected === r.connections.wanted && r.connections.dropped === 0);
    return {
      text, met: j.length > 0 && allHeld && worst <= 20 * KB,
      detail: `${j.map((r) => `${r.connections?.connected ?? 0}/${r.connections?.wanted ?? 0} connected, ${r.connections?.dropped ?? 0} dropped over ${r.durationS} s`).join('; ')}; at most ${fixed(worst / KB, 1)} KB RSS per connection`,
    };
  };
}

/** RSS at the end of sending over RSS half-way through it: above this, memory grew with the run. */
const FLAT_RSS = 1.1;

/**
 * Issue 13, overload: a publisher in closed loop is slowed by the protocol rather than buffered,
 * so latency stays near the peer's, memory does not grow with the length of the run, and no
 * message is lost while the subscriber keeps up.
 */
function overloadGoal(text: string, peer: string, p99Limit: number): Plan['goal'] {
  return (c) => {
    const j = c.medians.junction;
    const p = c.medians[peer];
    const runs = c.runs.filter((r) => r.server === 'junction');
    const growths = runs.flatMap((r) => (r.serverProcess?.rssMidBytes && r.serverProcess.rssEndBytes ? [r.serverProcess.rssEndBytes / r.serverProcess.rssMidBytes] : []));
    if (!j || !p || p.p99 <= 0 || growths.length === 0) return { text, met: null, detail: `no ${peer} runs, or no RSS samples` };
    const worstGrowth = Math.max(...growths);
    return {
      text, met: j.p99 <= p99Limit * p.p99 && worstGrowth <= FLAT_RSS && j.lost === 0,
      detail: `p99 ${fixed(j.p99, 1)} ms against ${peer}'s ${fixed(p.p99, 1)} ms (${fixed(j.p99 / p.p99)}×); RSS at the end of sending ÷ half-way, at most ${fixed(worstGrowth)} (flat: ≤ ${FLAT_RSS}); ${j.lost} lost; rate Junction ÷ ${peer} = ${fixed(c.ratios[peer] ?? NaN)}`,
    };
  };
}

const MIXED_MAX = 'Mixed, all four protocols, closed loop (max rate)';

/**
 * Half the mixed scenario's maximum: the rate is split evenly over the four publishing
 * protocols, so the maximum is four times what the slowest of them reached in closed loop.
 */
function mixedHalfRate(done: ReadonlyMap<string, Comparison>): number {
  const runs = done.get(MIXED_MAX)?.runs.filter((r) => r.server === 'junction') ?? [];
  if (runs.length === 0) throw new Error(`"${MIXED_MAX}" has to run before the 50 % comparison`);
  const slowest = median(runs.map((r) => Math.min(...Object.values(r.sentPerSByKey))));
  return Math.max(4, Math.round((4 * slowest) / 2));
}

function plans(): Plan[] {
  const long = ['--duration', '10', '--warmup', '2'];
  return [
    { label: 'MQTT QoS 0, 1 → 1', scenario: 'mqtt-pubsub', args: [...long, '--max', '--inflight', '100'], servers: ['junction', 'aedes', 'mosquitto', 'nats'],
      goal: overloadGoal('Overload, MQTT QoS 0 1 → 1 at --max: the publisher is slowed by TCP, not buffered: p99 ≤ 2× aedes, RSS flat, nothing lost', 'aedes', 2) },
    { label: 'MQTT QoS 0, 1 → 1, 200,000 messages of 100 B', scenario: 'mqtt-pubsub', args: ['--max', '--inflight', '100', '--count', '200000', '--payload', '100', '--duration', '60', '--warmup', '1'], servers: ['junction', 'aedes'],
      goal: cpuGoal('MQTT QoS 0: server CPU per message ≤ 1.25× bare aedes', 'aedes', 1.25) },
    { label: 'MQTT QoS 0, 10 → 10 (10 topics)', scenario: 'mqtt-pubsub', args: [...long, '--max', '--inflight', '100', '--publishers', '10', '--subscribers', '10'], servers: ['junction', 'aedes', 'mosquitto', 'nats'] },
    { label: 'MQTT QoS 1, 1 → 1', scenario: 'mqtt-pubsub', args: [...long, '--max', '--inflight', '100', '--qos', '1'], servers: ['junction', 'aedes', 'mosquitto', 'nats'] },
    { label: 'MQTT QoS 1, 1 → 1, 1,000 in flight, 100 B', scenario: 'mqtt-pubsub', args: [...long, '--max', '--inflight', '1000', '--qos', '1', '--payload', '100'], servers: ['junction', 'aedes'],
      goal: cpuGoal('MQTT QoS 1: server CPU per message ≤ 1.25× bare aedes', 'aedes', 1.25) },
    { label: 'MQTT work queue QoS 1, 1 → group of 4', scenario: 'work-queue', args: [...long, '--max', '--inflight', '100'], servers: ['junction', 'mosquitto'] },
    { label: 'MQTT 19,000 connections, 30 s', scenario: 'mqtt-connections', args: ['--connections', '19000', '--duration', '30', '--keepalive', '10', '--workers', '4'], servers: ['junction', 'aedes', 'mosquitto', 'nats'] },
    { label: 'MQTT 19,000 connections held 5 minutes', scenario: 'mqtt-connections', args: ['--connections', '19000', '--duration', '300', '--keepalive', '30', '--workers', '4'], servers: ['junction'], runs: 1,
      goal: holdGoal('19,000 MQTT connections held with heartbeats for 5 minutes: none dropped, ≤ 20 KB RSS per idle connection') },
    { label: 'WebSocket fan-out 1 → 1,000, closed loop', scenario: 'ws-fanout', args: [...long, '--subscribers', '1000', '--max', '--qos', '1', '--inflight', '1'], servers: ['junction', 'ws', 'nats'],
      goal: cpuGoal('WebSocket fan-out 1 → 1,000: server CPU per delivery ≤ 1.1× bare ws', 'ws', 1.1) },
    { label: 'WebSocket fan-out 1 → 10,000, closed loop', scenario: 'ws-fanout', args: [...long, '--subscribers', '10000', '--max', '--qos', '1', '--inflight', '1', '--workers', '4'], servers: ['junction', 'ws'],
      goal: cpuGoal('WebSocket fan-out 1 → 10,000: server CPU per delivery ≤ 1.1× bare ws', 'ws', 1.1) },
    { label: 'WebSocket fan-out 1 → 10,000 at 2 broadcasts/s', scenario: 'ws-fanout', args: [...long, '--subscribers', '10000', '--rate', '2', '--workers', '4'], servers: ['junction', 'ws', 'nats'],
      goal: (c) => {
        const p99 = c.medians.junction?.p99;
        return { text: 'WS fan-out 1 → 10,000 subscribers: p99 delivery latency under 250 ms per broadcast', met: p99 === undefined ? null : p99 < 250, detail: `Junction p99 ${p99 === undefined ? '—' : fixed(p99, 1)} ms (median of runs), ${c.medians.junction?.lost ?? '—'} lost` };
      } },
    { label: 'WebSocket fan-out 1 → 10,000 at 4 broadcasts/s', scenario: 'ws-fanout', args: [...long, '--subscribers', '10000', '--rate', '4', '--workers', '4'], servers: ['junction', 'ws'],
      goal: p99Goal('WS fan-out 1 → 10,000 at 4 broadcasts/s: p99 ≤ 1.2× bare ws', 'ws', 1.2) },
    { label: 'WebSocket 19,000 connections, 30 s', scenario: 'ws-connections', args: ['--connections', '19000', '--duration', '30', '--keepalive', '10', '--workers', '4'], servers: ['junction', 'ws', 'nats'],
      goal: (c) => {
        // ratios of connections scenarios are the peer's memory per connection over Junction's
        const ratio = c.ratios.ws;
        return { text: 'Idle WebSocket memory per connection ≤ 1.2× bare ws', met: ratio === undefined ? null : 1 / ratio <= 1.2, detail: ratio === undefined ? 'no ws runs' : `Junction ÷ ws = ${fixed(1 / ratio)}` };
      } },
    { label: 'WebSocket 19,000 connections held 5 minutes', scenario: 'ws-connections', args: ['--connections', '19000', '--duration', '300', '--keepalive', '30', '--workers', '4'], servers: ['junction'], runs: 1,
      goal: holdGoal('19,000 WebSocket connections held with heartbeats for 5 minutes: none dropped, ≤ 20 KB RSS per idle connection') },
    { label: 'HTTP publish, 32 connections', scenario: 'http-publish', args: long, servers: ['junction', 'fastify'],
      goal: ratioGoal('HTTP publish ≥ 0.7× a bare fastify route that returns 202', 'fastify', 0.7) },
    { label: 'HTTP publish, 50 connections, 256 B', scenario: 'http-publish', args: [...long, '--connections', '50', '--payload', '256'], servers: ['junction', 'fastify'],
      goal: cpuGoal('HTTP publish: server CPU per message ≤ 1.25× a bare fastify route', 'fastify', 1.25) },
    { label: 'gRPC unary Publish, 4 channels × 32 in flight', scenario: 'grpc-unary', args: long, servers: ['junction', 'grpc'],
      goal: ratioGoal('gRPC unary ≥ 0.7× bare grpc-js', 'grpc', 0.7) },
    { label: 'gRPC PublishStream, 1 stream × 512 in flight', scenario: 'grpc-stream', args: long, servers: ['junction', 'grpc'],
      goal: ratioGoal('gRPC stream ≥ 0.7× bare grpc-js', 'grpc', 0.7) },
    { label: 'gRPC PublishStream, 1 stream, window 1,000, 100 B', scenario: 'grpc-stream', args: [...long, '--inflight', '1000', '--payload', '100'], servers: ['junction', 'grpc'],
      goal: cpuGoal('gRPC PublishStream: server CPU per message ≤ 1.25× bare grpc-js', 'grpc', 1.25) },
    { label: 'gRPC Subscribe fan-out 1 → 100, closed loop', scenario: 'grpc-fanout', args: long, servers: ['junction', 'grpc'] },
    { label: MIXED_MAX, scenario: 'mixed', args: long, servers: ['junction'] },
    { label: 'Mixed at 50 % of its max rate', scenario: 'mixed', args: (done) => [...long, '--rate', String(mixedHalfRate(done))], servers: ['junction'],
      goal: (c) => {
        const p99 = c.medians.junction?.p99;
        return { text: 'Mixed scenario at 50 % of its max rate: p99 end to end < 10 ms', met: p99 === undefined ? null : p99 < 10, detail: `at ${c.runs[0]?.targetRate ?? '—'} msgs/s (half of four times the slowest protocol's closed-loop rate, as the rate is split evenly): p99 ${p99 === undefined ? '—' : fixed(p99, 2)} ms (median of runs)` };
      } },
  ];
}

function benchOnce(scenario: ScenarioName, args: string[], server: ServerKind): Promise<BenchResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(PACKAGE_ROOT, 'bin/junction.js'), 'bench', scenario, ...args, '--server', server, '--json'], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
    child.once('exit', (code) => {
      if (code !== 0) return reject(new Error(`junction bench ${scenario} --server ${server} exited with ${code}`));
      try {
        resolve(JSON.parse(out) as BenchResult);
      } catch (err) {
        reject(new Error(`junction bench ${scenario} --server ${server}: no JSON result (${(err as Error).message})`));
      }
    });
  });
}

async function compare(plan: Plan, runs: number, done: ReadonlyMap<string, Comparison>, log: (line: string) => void): Promise<Comparison> {
  const args = typeof plan.args === 'function' ? plan.args(done) : plan.args;
  const n = plan.runs ?? runs;
  const results = await alternate(plan.servers, n, (server) => benchOnce(plan.scenario, args, server), (result, run) => {
    log(`  ${plan.label} · ${result.server} · run ${run + 1}/${n}: ${Math.round(result.receivedPerS).toLocaleString('en-US')}/s${result.cpuUsPerMessage !== undefined ? ` at ${result.cpuUsPerMessage} µs CPU each` : ''}, p99 ${result.latency.p99.toFixed(2)} ms${result.connections ? `, ${result.connections.connected}/${result.connections.wanted} connected, ${result.connections.dropped} dropped` : ''}${result.errors ? `, ${result.errors} errors` : ''}`);
  });
  const comparison = comparisonOf(plan.label, ['junction bench', plan.scenario, ...args, '--server', 'junction'].join(' '), plan.servers, results);
  const goal = plan.goal?.(comparison);
  return goal ? { ...comparison, goal } : comparison;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '3' }, only: { type: 'string', multiple: true }, out: { type: 'string' } } });
  const runs = Number(values.runs);
  const resultsPath = path.resolve(values.out ?? path.join(PACKAGE_ROOT, 'bench/results/latest.json'));
  await mkdir(path.dirname(resultsPath), { recursive: true });
  const selected = plans().filter((p) => !values.only || values.only.some((o) => p.label.toLowerCase().includes(o.toLowerCase()) || p.scenario === o));
  // A partial run (--only) keeps the other comparisons of the previous file, their ratios
  // recomputed from their runs (a file from before a ratio existed gets it, or no figure).
  const previous = values.only
    ? await readFile(resultsPath, 'utf8').then((text) => (JSON.parse(text) as ComparisonFile).comparisons.map((c) => {
      const again = comparisonOf(c.label, c.command, Object.keys(c.medians) as ServerKind[], c.runs);
      return c.goal ? { ...again, goal: c.goal } : again;
    }), () => [] as Comparison[])
    : [];
  const file: ComparisonFile = {
    generatedAt: new Date().toISOString(), machine: machineInfo(),
    command: 'npm run bench:all', comparisons: [],
  };
  const started = Date.now();
  const log = (line: string) => process.stderr.write(`[${Math.round((Date.now() - started) / 1000)} s] ${line}\n`);
  const done = new Map(previous.map((c) => [c.label, c]));
  const order = plans().map((p) => p.label);
  for (const plan of selected) {
    log(`${plan.label} (${plan.scenario})`);
    done.set(plan.label, await compare(plan, runs, done, log));
    file.comparisons = order.flatMap((label) => (done.has(label) ? [done.get(label)!] : []));
    await writeFile(resultsPath, `${JSON.stringify(file, null, 2)}\n`);
    await writeReport(resultsPath, path.join(PACKAGE_ROOT, 'BENCHMARKS.md'));
  }
  log(`done: ${resultsPath}, bench/results/chart.svg, BENCHMARKS.md`);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
