/**
 * Router throughput: matches/s of RouteTable.match with 10, 1,000 and 10,000 rules on 5-level keys.
 * Run after `npm run build`: `node dist/bench/router.js [--json]`.
 *
 * The goal: at least 1,000,000 matches/s with 10,000 rules, and 10,000 rules no more than 2x slower
 * than 10, i.e. the cost follows key depth rather than table size. What remains of the difference is
 * memory: 10,000 rules' trie no longer fits in cache, so lookups miss more often.
 */
import os from 'node:os';
import type { RouteConfig } from '../src/config/schema.js';
import { compileRouteTable, type RoutableMessage, type RouteTable } from '../src/router/index.js';
import { median } from '../src/bench/medians.js';

const SIZES = [10, 1_000, 10_000];
const RUNS = 5;
/** Each timed run lasts about this long; the warm-up measures how many matches that is. */
const RUN_SECONDS = 0.5;
const WARMUP_MATCHES = 300_000;
/** Keys cycled through; a power of two so the index is a mask. */
const KEY_POOL = 4096;

/** Deterministic PRNG (mulberry32): every run routes the same keys. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The rules below that set no precedence, mode or continue, as the config loader would give them. */
const PLAIN = { priority: 0, mode: 'deliver', timeout: 5000, continue: false, expired: 'drop' } as const;

interface Workload {
  routes: RouteConfig[];
  messages: RoutableMessage[];
}

/**
 * A realistic mix: 40% `site{i}/+/device{j}/#`, 30% `fleet/{i}/+/status/+`, 30% exact keys, plus an
 * audit rule with `continue` over `+/+/+/status/alarm` and a header-conditioned rule. Keys: ~80%
 * match one rule, ~10% none, ~10% several (audit + fleet).
 */
function workload(size: number): Workload {
  const fixed: RouteConfig[] = [
    { name: 'audit', match: { key: '+/+/+/status/alarm' }, priority: 10, mode: 'deliver', timeout: 5000, continue: true, expired: 'drop', to: ['audit'] },
    { name: 'commands', match: { key: 'site0/+/device0/cmd/+', headers: { 'content-type': 'application/json' } }, priority: 5, mode: 'deliver', timeout: 5000, continue: false, expired: 'drop', to: ['commands'] },
  ];
  const rest = size - fixed.length;
  const sites = Math.max(1, Math.floor(rest * 0.4));
  const fleets = Math.max(1, Math.floor(rest * 0.3));
  const exact = rest - sites - fleets;
  const routes: RouteConfig[] = [...fixed];
  for (let k = 0; k < sites; k++) {
    routes.push({ name: `site-${k}`, match: { key: `site${k % 100}/+/device${Math.floor(k / 100)}/#` }, ...PLAIN, to: ['ingest', { publish: 'dash/{1}/{2}' }] });
  }
  for (let k = 0; k < fleets; k++) {
    routes.push({ name: `fleet-${k}`, match: { key: `fleet/${k}/+/status/+` }, ...PLAIN, to: ['fleet', 'publish'] });
  }
  const exactKey = (k: number): string => `plant${k % 50}/line${Math.floor(k / 50)}/cell${k}/sensor/temp`;
  for (let k = 0; k < exact; k++) routes.push({ name: `exact-${k}`, match: { key: exactKey(k) }, ...PLAIN, to: ['historian'] });

  const random = prng(size);
  const int = (n: number): number => Math.floor(random() * n);
  const messages: RoutableMessage[] = [];
  for (let n = 0; n < KEY_POOL; n++) {
    const r = random();
    let key: string;
    if (r < 0.35) {
      const k = int(sites);
      key = `site${k % 100}/zone${int(8)}/device${Math.floor(k / 100)}/temp/raw`;
    } else if (r < 0.6) key = `fleet/${int(fleets)}/truck${int(500)}/status/gps`;
    else if (r < 0.8) key = exactKey(int(exact));
    else if (r < 0.85) key = `site${int(100)}/zone${int(8)}/nodevice/temp/raw`;
    else if (r < 0.9) key = `other/zone${int(8)}/x/y/z`;
    else key = `fleet/${int(fleets)}/truck${int(500)}/status/alarm`;
    messages.push({ key, protocol: 'mqtt', headers: {} });
  }
  return { routes, messages };
}

/** Matches per second over `count` matches. The sum of match counts keeps the work observable. */
function measure(table: RouteTable, messages: readonly RoutableMessage[], count: number): { rate: number; sink: number } {
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < count; i++) sink += table.match(messages[i & (KEY_POOL - 1)]!).matches.length;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return { rate: count / seconds, sink };
}

interface Result {
  rules: number;
  keyMix: { none: number; one: number; several: number };
  runs: number[];
  matchesPerSecond: number;
  nsPerMatch: number;
}

interface Subject {
  table: RouteTable;
  messages: RoutableMessage[];
  /** matches per timed run, sized by the warm-up */
  count: number;
  runs: number[];
}

function prepare(size: number): Subject {
  const { routes, messages } = workload(size);
  const table = compileRouteTable(routes, 'drop');
  const warm = measure(table, messages, WARMUP_MATCHES);
  if (warm.sink < 0) throw new Error('unreachable: match counts are never negative');
  return { table, messages, count: Math.max(100_000, Math.round(warm.rate * RUN_SECONDS)), runs: [] };
}

function report(subject: Subject): Result {
  const { table, messages, runs } = subject;
  const keyMix = { none: 0, one: 0, several: 0 };
  for (const m of messages) {
    const n = table.match(m).matches.length;
    if (n === 0) keyMix.none++;
    else if (n === 1) keyMix.one++;
    else keyMix.several++;
  }
  const share = (n: number): number => Math.round((n / messages.length) * 1000) / 10;
  const matchesPerSecond = median(runs);
  return {
    rules: table.routes.length,
    keyMix: { none: share(keyMix.none), one: share(keyMix.one), several: share(keyMix.several) },
    runs: runs.map(Math.round),
    matchesPerSecond: Math.round(matchesPerSecond),
    nsPerMatch: Math.round((1e9 / matchesPerSecond) * 10) / 10,
  };
}

/**
 * Runs the sizes in turn, run after run, rather than all runs of one size then the next: a burst of
 * load from elsewhere on the machine then hits every size alike, which keeps the ratio honest.
 */
function benchAll(): Result[] {
  const subjects = SIZES.map(prepare);
  let sink = 0;
  for (let r = 0; r < RUNS; r++) {
    for (const subject of subjects) {
      const run = measure(subject.table, subject.messages, subject.count);
      subject.runs.push(run.rate);
      sink += run.sink;
    }
  }
  if (sink < 0) throw new Error('unreachable: match counts are never negative');
  return subjects.map(report);
}

function main(): void {
  const json = process.argv.includes('--json');
  const cpus = os.cpus();
  const machine = {
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? 'unknown',
    memoryGb: Math.round(os.totalmem() / 1024 ** 3),
  };
  const results = benchAll();
  const first = results[0]!;
  const last = results[results.length - 1]!;
  const slowdown = Math.round((first.matchesPerSecond / last.matchesPerSecond) * 100) / 100;
  if (json) {
    console.log(JSON.stringify({ benchmark: 'router', machine, runsPerSize: RUNS, results, slowdown: { from: first.rules, to: last.rules, factor: slowdown } }, null, 2));
    return;
  }
  console.log(`Router benchmark: node ${machine.node}, ${machine.platform}, ${machine.cpus} x ${machine.cpuModel}, ${machine.memoryGb} GB`);
  console.log(`median of ${RUNS} interleaved runs of ~${RUN_SECONDS}s per size; 5-level keys`);
  console.log('');
  const header = ['rules', 'keys none/one/several %', 'matches/s (median)', 'ns/match', 'runs (M/s)'];
  const rows = results.map((r) => [
    r.rules.toLocaleString('en-US'),
    `${r.keyMix.none}/${r.keyMix.one}/${r.keyMix.several}`,
    r.matchesPerSecond.toLocaleString('en-US'),
    r.nsPerMatch.toFixed(1),
    r.runs.map((x) => (x / 1e6).toFixed(2)).join(' '),
  ]);
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c]!.length)));
  const line = (cells: readonly string[]): string => cells.map((cell, c) => cell.padStart(widths[c]!)).join('  ');
  console.log(line(header));
  for (const row of rows) console.log(line(row));
  console.log('');
  console.log(`${last.rules.toLocaleString('en-US')} rules vs ${first.rules}: ${slowdown}x the time per match`);
}

main();
