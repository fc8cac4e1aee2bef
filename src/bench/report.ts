import type { BenchResult } from './types.js';

const integer = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** The human summary `junction bench` prints when it is not asked for --json. */
export function formatSummary(result: BenchResult): string {
  const rows: [string, string][] = [
    ['scenario', `${result.scenario} against ${result.server}`],
    ['machine', `${result.machine.cpus} × ${result.machine.cpuModel}, ${result.machine.memGiB} GiB, Node ${result.machine.node}, load ${result.machine.loadAverage}`],
  ];
  if (result.connections) {
    const c = result.connections;
    rows.push(['connections', `${integer(c.connected)} of ${integer(c.wanted)} connected, ${integer(c.failed)} failed, ${integer(c.dropped)} dropped`]);
    if (c.rssPerConnectionBytes !== undefined) rows.push(['server RSS per connection', `${(c.rssPerConnectionBytes / 1024).toFixed(1)} KB`]);
  }
  if (result.latencyKind !== 'none') {
    rows.push(
      ['sent', `${integer(result.sent)} (${integer(result.sentPerS)}/s${result.targetRate ? `, asked for ${integer(result.targetRate)}/s` : ''})`],
      [result.latencyKind === 'ack' ? 'acknowledged' : 'delivered', `${integer(result.received)} of ${integer(result.expected)} expected (${integer(result.receivedPerS)}/s over ${result.durationS} s${result.cpuUsPerMessage !== undefined ? `; server CPU ${result.cpuUsPerMessage} µs per message` : ''})`],
      [`${result.latencyKind} latency`, `p50 ${ms(result.latency.p50)} ms · p90 ${ms(result.latency.p90)} · p99 ${ms(result.latency.p99)} · p99.9 ${ms(result.latency.p999)} · max ${ms(result.latency.max)}`],
    );
  }
  rows.push(['errors', `${integer(result.errors)}${result.errorSamples.length ? ` (${result.errorSamples.join('; ')})` : ''}`]);
  if (result.serverProcess) {
    const s = result.serverProcess;
    rows.push(['server process', `peak RSS ${mib(s.peakRssBytes)}, CPU ${s.cpuSeconds} s`]);
    if (s.cpuByProcess) rows.push(['server CPU by process', s.cpuByProcess.map((p) => `${p.role} ${p.cpuSeconds} s`).join(', ')]);
  }
  const lg = result.loadGenerator;
  const lgCpu = lg.cpuUsPerMessage === undefined ? '' : `, ${lg.cpuUsPerMessage} µs CPU per message`;
  rows.push(['load generator', `${lg.workers} worker${lg.workers === 1 ? '' : 's'}, the busiest at ${Math.round(lg.busiestWorkerCpu * 100)} % of a core${lgCpu}`]);
  if (lg.note) rows.push(['saturated', lg.note]);
  const width = Math.max(...rows.map(([name]) => name.length));
  return rows.map(([name, value]) => `${name.padEnd(width)}  ${value}`).join('\n');
}
