import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DeadLetterArchive } from '../../src/deadletter/replay.js';
import { withTimeout } from '../../src/timeouts.js';
import { EVERY_LISTENER, type RunningGateway, startCli } from '../helpers/cli.js';
import { startDownstream, type Downstream } from '../helpers/downstream.js';
import { eventually } from '../helpers/eventually.js';
import { connectPublisher, PUBLISH_PROTOCOLS, type Ports, type Publisher } from '../helpers/publishers.js';

/**
 * 20 rounds of 250 QoS 1 messages, 5,000 in all: each round starts the gateway from dist/ on the
 * same storage.dir, four publishers (HTTP, MQTT, WebSocket, gRPC) send their share with a few
 * messages in flight each, and `kill -9` lands at a random moment: once a random share (half to
 * all) of the round is acknowledged, plus a random delay, so some kills strike mid-publish and
 * others while the slow downstream still works through the queue. Many short rounds rather
 * than one long one: every round is a crash with a different mix of queued, in-flight and
 * half-settled records, and each restart recovers the previous crash's records on top of new
 * ones. Process starts dominate the time (about 2 s of CPU each, mostly loading modules and
 * compiling the config schema), which is why a round holds 250 messages rather than 5,000: about
 * a minute in all with a load average of 6, alone; with the rest of the suite and benchmarks on
 * the same two cores (load 13–18) a start alone took 8–37 s, and the whole run several minutes.
 */
const ROUNDS = 20;
const PER_ROUND = 250;
const IN_FLIGHT_PER_PUBLISHER = 8;
const CONCURRENCY = 4;
/** The random delay after the round's kill threshold is drawn from this long. */
const KILL_DELAY_MS = 200;
/**
 * How long one round (a start, its share of traffic, the kill) may take before it counts as
 * hung, and names the round: a round costs about 3 s alone and took up to 50 s at a load
 * average of 15, so only a hang trips this. The test's own timeout is the sum of the bounds of
 * its steps rather than a guess at how fast the machine gets through all of them.
 */
const ROUND_BOUND_MS = 300_000;
/** The final start and the wait for every acknowledged message to arrive. */
const SETTLE_BOUND_MS = ROUND_BOUND_MS + 30_000;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

describe('kill -9 under QoS 1 traffic from every protocol', { timeout: ROUNDS * ROUND_BOUND_MS + SETTLE_BOUND_MS }, () => {
  let dir: string;
  let downstream: Downstream | undefined;
  let running: RunningGateway | undefined;

  afterEach(async () => {
    running?.child.kill('SIGKILL');
    await downstream?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('delivers or dead-letters every acknowledged message, with duplicates bounded by what was in flight at each crash', async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-crash-'));
    /** token → x-junction-id of each delivery */
    const deliveries = new Map<string, string[]>();
    downstream = await startDownstream((request, response) => {
      const token = request.body.toString();
      deliveries.set(token, [...(deliveries.get(token) ?? []), String(request.headers['x-junction-id'])]);
      // A slow downstream: queues build up behind it.
      setTimeout(() => response.writeHead(204).end(), 3);
    });
    const config = join(dir, 'gateway.yaml');
    await writeFile(config, `
${EVERY_LISTENER}storage: { dir: queue, sync: os }
deadletter: { path: dl.jsonl }
targets:
  sink: { type: http, url: "${downstream.url}/in", concurrency: ${CONCURRENCY}, timeout: 5s, retry: { attempts: 5, backoff: 20ms } }
routes:
  - { name: crash, match: { key: "crash/#" }, to: [sink] }
`);
    const acked = new Set<string>();
    const killedAfter: number[] = [];
    const playRound = async (round: number) => {
      const gateway = await startCli(config);
      running = gateway;
      const ports = gateway.ports as unknown as Ports;
      const publishers = await Promise.all(PUBLISH_PROTOCOLS.map((protocol) => connectPublisher(protocol, ports)));
      const threshold = Math.ceil(PER_ROUND * (0.5 + Math.random() / 2));
      let ackedThisRound = 0;
      let reached!: () => void;
      const thresholdReached = new Promise<void>((resolve) => { reached = resolve; });
      const killed = thresholdReached.then(async () => {
        const extra = Math.floor(Math.random() * KILL_DELAY_MS);
        await delay(extra);
        killedAfter.push(ackedThisRound);
        gateway.child.kill('SIGKILL');
        await gateway.exited;
      });
      const send = async (publisher: Publisher, p: number) => {
        let next = p;
        const worker = async () => {
          // Each round takes the next of this publisher's share, so this ends within PER_ROUND rounds.
          for (let i = next; i < PER_ROUND; i = next) {
            next += publishers.length;
            const token = `r${round}-m${i}`;
            try {
              const result = await publisher.publish(`crash/${PUBLISH_PROTOCOLS[p]}`, token);
              if (!result.acked) return;
            } catch {
              return;
            }
            acked.add(token);
            if (++ackedThisRound >= threshold) reached();
          }
        };
        await Promise.all(Array.from({ length: IN_FLIGHT_PER_PUBLISHER }, worker));
      };
      await Promise.all(publishers.map(send));
      // A round whose publishers stopped short of the threshold still ends in a kill.
      reached();
      await killed;
      await Promise.all(publishers.map((publisher) => publisher.close().catch(() => undefined)));
      running = undefined;
    };
    for (let round = 0; round < ROUNDS; round++) {
      await withTimeout(playRound(round), ROUND_BOUND_MS, () => new Error(`round ${round} did not end within ${ROUND_BOUND_MS} ms: hung`));
    }

    // One last start recovers the last crash's records; then everything acknowledged must arrive.
    running = await withTimeout(startCli(config), ROUND_BOUND_MS, () => new Error(`the last start was not ready within ${ROUND_BOUND_MS} ms: hung`));
    const archive = new DeadLetterArchive(join(dir, 'dl.jsonl'));
    const missing = await eventually(async () => {
      const deadLettered = new Set((await archive.list({}, 10_000)).map((record) => Buffer.from(record.message.payload, 'base64').toString()));
      const left = [...acked].filter((token) => !deliveries.has(token) && !deadLettered.has(token));
      expect(left).toEqual([]);
      return left;
    }, 30_000, 100);
    expect(missing).toEqual([]);
    expect(acked.size).toBeGreaterThan(ROUNDS * 10);

    // At-least-once: a message delivered just before a crash, its settlement not yet written,
    // comes again. Each crash can repeat at most the calls running and those settled in the turn
    // it struck: 2 × concurrency. The message id travels with each copy, so the downstream can
    // drop the second.
    const duplicates = [...deliveries.values()].reduce((sum, ids) => sum + ids.length - 1, 0);
    expect(duplicates).toBeLessThanOrEqual(ROUNDS * 2 * CONCURRENCY);
    for (const ids of deliveries.values()) expect(new Set(ids).size).toBe(1);

    const admin = `http://127.0.0.1:${running.ports.admin}`;
    const stats = (await (await fetch(`${admin}/admin/stats`)).json()) as { targets: { sink: { balanced: boolean } } };
    expect(stats.targets.sink.balanced).toBe(true);
    console.info(`crash test: ${acked.size} acknowledged of ${ROUNDS * PER_ROUND}, ${duplicates} duplicate deliveries; acknowledged per round at the kill: ${killedAfter.join(', ')}`);
  });
});
