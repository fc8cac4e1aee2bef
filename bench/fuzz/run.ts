/**
 * `npm run fuzz -- [--inputs N] [--seed S] [--only mqtt-tcp,http] [--idle-ms MS] [--json]`: N
 * mutated inputs per protocol (default 1,000,000) against a gateway of its own, beside a
 * well-behaved client; prints what docs/security.md reports (crashes, error lines, RSS, losses).
 * Exits 1 when the gateway crashed, logged an error, or the well-behaved client lost a message.
 */
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { runCampaign, type ProcessMemory } from './campaign.js';
import { FUZZ_PROTOCOLS, type FuzzProtocol } from './inputs.js';

const { values } = parseArgs({
  options: {
    inputs: { type: 'string', default: '1000000' },
    seed: { type: 'string' },
    only: { type: 'string' },
    'idle-ms': { type: 'string', default: '120000' },
    json: { type: 'boolean', default: false },
  },
});
const only = values.only?.split(',') as FuzzProtocol[] | undefined;
for (const protocol of only ?? []) {
  if (!FUZZ_PROTOCOLS.includes(protocol)) throw new Error(`--only: ${protocol} is not one of ${FUZZ_PROTOCOLS.join(', ')}`);
}

const report = await runCampaign({
  bin: fileURLToPath(new URL('../../../bin/junction.js', import.meta.url)),
  inputsPerProtocol: Number(values.inputs),
  ...(only ? { protocols: only } : {}),
  ...(values.seed !== undefined ? { seed: Number(values.seed) } : {}),
  idleMs: Number(values['idle-ms']),
  log: (line) => console.error(line),
});

if (values.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  console.log(`seed ${report.seed}; ${report.cpus} CPUs, load average ${report.loadAverage.join(' / ')} at the end (${os.hostname()}); allocator: ${report.preloaded ?? 'glibc malloc'}`);
  console.log('| protocol | inputs | seconds | inputs/s | connections the gateway closed | RSS after it (MB) |');
  console.log('|---|---|---|---|---|---|');
  for (const r of report.results) {
    console.log(`| ${r.protocol} | ${r.inputs.toLocaleString('en')} | ${(r.ms / 1000).toFixed(0)} | ${Math.round(r.inputs / (r.ms / 1000)).toLocaleString('en')} | ${r.closedByGateway.toLocaleString('en')} | ${r.rssMb} |`);
  }
  console.log(`crashed: ${report.crashed}; error lines: ${report.errorLines.length}`);
  for (const [alert, count] of Object.entries(report.boundAlerts)) console.log(`bound reached (alert, not a failure): "${alert}" × ${count}`);
  console.log(`RSS MB: before ${report.rssMb.before}, peak ${report.rssMb.peak}, after idle ${report.rssMb.afterIdle}`);
  const memory = (m: ProcessMemory | undefined) => (m
    ? `RSS ${m.rss} = code ${m.code} + malloc heap ${m.mallocHeap} + V8 heap and other anonymous ${m.otherAnonymous}; V8 heap committed ${m.heapTotal} (${m.heapUsed} in use), external ${m.external}`
    : 'n/a');
  console.log(`gateway memory MB before: ${memory(report.memoryMb.before)}`);
  console.log(`gateway memory MB after idle: ${memory(report.memoryMb.afterIdle)}`);
  const held = report.heldAfterIdle;
  if (held) console.log(`held after idle: connections ${JSON.stringify(held.connections)}; ${held.groups} groups queueing ${held.groupQueued} messages (${Math.round(held.groupQueuedBytes / 1048576)} MB)`);
  console.log(`well-behaved client: ${report.wellBehaved.sent} acknowledged, ${report.wellBehaved.received} received, ${report.wellBehaved.failed} publishes failed (not acknowledged)`);
  for (const line of report.errorLines.slice(0, 20)) console.log(`  ${line.slice(0, 300)}`);
}
process.exitCode = report.crashed || report.errorLines.length > 0 || report.wellBehaved.received < report.wellBehaved.sent ? 1 : 0;
