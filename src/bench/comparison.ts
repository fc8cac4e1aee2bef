import { isConnectionsScenario } from './chart.js';
import { mediansOf } from './medians.js';
import type { BenchResult, Comparison, ServerKind, ServerMedians } from './types.js';

/**
 * Runs the same load against each server `runs` times, alternating servers run by run and
 * reversing the order every other run, so a drift in the machine's load favours none of them.
 */
export async function alternate(servers: readonly ServerKind[], runs: number, once: (server: ServerKind) => Promise<BenchResult>, ran?: (result: BenchResult, run: number) => void): Promise<BenchResult[]> {
  const results: BenchResult[] = [];
  for (let run = 0; run < runs; run++) {
    const order = run % 2 === 0 ? servers : [...servers].reverse();
    for (const server of order) {
      const result = await once(server);
      results.push(result);
      ran?.(result, run);
    }
  }
  return results;
}

/**
 * Runs of one scenario against Junction and its peers, as medians per server and Junction ÷ peer
 * ratios: throughput (higher is better for Junction; for connections scenarios, the peer's memory
 * per connection over Junction's, so higher is better there too) and server CPU per message
 * (lower is better).
 */
export function comparisonOf(label: string, command: string, servers: readonly ServerKind[], runs: BenchResult[]): Comparison {
  const medians: Record<string, ServerMedians> = {};
  for (const server of servers) medians[server] = mediansOf(runs.filter((r) => r.server === server));
  const ratios: Record<string, number> = {};
  const cpuRatios: Record<string, number> = {};
  const j = medians.junction!;
  const connections = isConnectionsScenario(runs[0]!.scenario);
  for (const peer of servers.filter((s) => s !== 'junction')) {
    const p = medians[peer]!;
    const ratio = connections ? (p.rssPerConnectionBytes ?? 0) / (j.rssPerConnectionBytes ?? Infinity) : j.receivedPerS / p.receivedPerS;
    if (Number.isFinite(ratio) && ratio > 0) ratios[peer] = ratio;
    const cpu = (j.cpuUsPerMessage ?? NaN) / (p.cpuUsPerMessage ?? NaN);
    if (Number.isFinite(cpu) && cpu > 0) cpuRatios[peer] = cpu;
  }
  return { label, scenario: runs[0]!.scenario, command, runs, medians, ratios, cpuRatios };
}
