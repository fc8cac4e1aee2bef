/**
 * The comparison chart in BENCHMARKS.md: one group of horizontal bars per comparison, throughput
 * on the left and p99 latency on the right, one bar per server. Plain SVG strings so the chart
 * needs no browser or plotting library to regenerate, and diffs stay readable.
 */
import type { Comparison, ComparisonFile, ScenarioName, ServerMedians } from './types.js';

const rateFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
// Medians over an even number of runs can fall on a half.
const countFormat = new Intl.NumberFormat('en-US', { maximumFractionDigits: 1 });
const sigFormat = new Intl.NumberFormat('en-US', { maximumSignificantDigits: 3 });

export const formatRate = (n: number): string => rateFormat.format(n);
export const formatCount = (n: number): string => countFormat.format(n);
/** Latencies, ratios and sizes: more digits than three would be noise between runs. */
export const formatSig = (n: number): string => sigFormat.format(n);
export const formatRatio = (r: number | undefined): string =>
  r === undefined || !Number.isFinite(r) ? '—' : `${formatSig(r)}×`;

export function isConnectionsScenario(scenario: ScenarioName): boolean {
  return scenario === 'mqtt-connections' || scenario === 'ws-connections';
}

/** Junction first, so every table and bar group reads as "Junction, then what it is measured against". */
export function serverOrder(c: Comparison): Array<[string, ServerMedians]> {
  const entries = Object.entries(c.medians);
  return [...entries.filter(([s]) => s === 'junction'), ...entries.filter(([s]) => s !== 'junction')];
}

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

// One colour per server kind across every group, so a reader can follow a server down the chart.
const COLOURS: Record<string, string> = {
  junction: '#f28e2b', aedes: '#4e79a7', ws: '#59a14f', fastify: '#b07aa1',
  grpc: '#76b7b2', mosquitto: '#9c755f', nats: '#edc948', external: '#bab0ac',
};

const WIDTH = 1200;
const NAME_RIGHT = 120;
const PANEL_X = [140, 680];
const BAR_MAX = 330; // leaves ~190 px after the longest bar for its value label
const BAR_H = 16;
const ROW_H = 22;
const GROUP_HEAD = 46;
const GROUP_GAP = 18;
const TOP = 70;

interface Bar { value: number; label: string }
interface Panel { caption: string; bars: Bar[]; /** fixed scale end; otherwise the largest value */ max?: number }

function panels(c: Comparison): [Panel, Panel] {
  const servers = serverOrder(c);
  if (isConnectionsScenario(c.scenario)) {
    return [
      {
        caption: 'connected / wanted (median)',
        max: 1,
        bars: servers.map(([, m]) => {
          if (m.connected === null || m.wanted === null) return { value: 0, label: '—' };
          return { value: m.wanted > 0 ? m.connected / m.wanted : 0, label: `${formatCount(m.connected)} / ${formatCount(m.wanted)}` };
        }),
      },
      {
        caption: 'RSS per connection, KB (median)',
        bars: servers.map(([, m]) => m.rssPerConnectionBytes === null
          ? { value: 0, label: '—' }
          : { value: m.rssPerConnectionBytes / 1024, label: `${formatSig(m.rssPerConnectionBytes / 1024)} KB` }),
      },
    ];
  }
  return [
    {
      caption: 'received/s (median)',
      bars: servers.map(([server, m]) => ({
        value: m.receivedPerS,
        label: server === 'junction'
          ? `${formatRate(m.receivedPerS)}/s`
          : `${formatRate(m.receivedPerS)}/s · Junction ${formatRatio(c.ratios[server])}`,
      })),
    },
    {
      caption: 'p99 latency, ms (median)',
      bars: servers.map(([, m]) => ({ value: m.p99, label: `${formatSig(m.p99)} ms` })),
    },
  ];
}

function text(x: number, y: number, content: string, attrs = ''): string {
  return `<text x="${x}" y="${y}"${attrs ? ` ${attrs}` : ''}>${escapeXml(content)}</text>`;
}

function group(c: Comparison, top: number): { svg: string[]; height: number } {
  const servers = serverOrder(c).map(([s]) => s);
  const svg = [text(20, top + 16, `${c.label} (${c.scenario})`, 'class="group"')];
  panels(c).forEach((panel, p) => {
    const x0 = PANEL_X[p]!;
    const max = panel.max ?? Math.max(0, ...panel.bars.map((b) => b.value));
    svg.push(text(x0, top + 36, panel.caption, 'class="caption"'));
    const rowsBottom = top + GROUP_HEAD + servers.length * ROW_H;
    svg.push(`<line x1="${x0}" y1="${top + GROUP_HEAD - 3}" x2="${x0}" y2="${rowsBottom - 3}" class="axis"/>`);
    panel.bars.forEach((bar, i) => {
      const server = servers[i]!;
      const y = top + GROUP_HEAD + i * ROW_H;
      // A non-zero value keeps a sliver of bar so it is not mistaken for a missing one.
      const len = max > 0 && bar.value > 0 ? Math.max(1, (bar.value / max) * BAR_MAX) : 0;
      svg.push(
        `<rect class="bar bar-${escapeXml(server)}" x="${x0}" y="${y}" width="${len.toFixed(1)}" height="${BAR_H}" fill="${COLOURS[server] ?? COLOURS.external}"/>`,
        text(x0 + len + 6, y + BAR_H - 4, bar.label),
      );
    });
  });
  servers.forEach((server, i) => {
    svg.push(text(NAME_RIGHT, top + GROUP_HEAD + i * ROW_H + BAR_H - 4, server, 'text-anchor="end"'));
  });
  return { svg, height: GROUP_HEAD + servers.length * ROW_H + GROUP_GAP };
}

export function renderChart(file: ComparisonFile): string {
  const m = file.machine;
  const body: string[] = [
    text(20, 28, `Junction against peers, ${file.generatedAt.slice(0, 10)}`, 'class="title"'),
    text(20, 50, `${m.cpus} CPUs (${m.cpuModel}), ${formatCount(m.memGiB)} GiB RAM, Node ${m.node}`, 'class="caption"'),
  ];
  let y = TOP;
  for (const c of file.comparisons) {
    const g = group(c, y);
    body.push(...g.svg);
    y += g.height;
  }
  const height = y;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">`,
    '<style>.title{font-size:18px;font-weight:600}.group{font-size:14px;font-weight:600}.caption{fill:#555}.axis{stroke:#999}text{fill:#222}</style>',
    `<rect width="${WIDTH}" height="${height}" fill="#fff"/>`,
    ...body,
    '</svg>',
    '',
  ].join('\n');
}
