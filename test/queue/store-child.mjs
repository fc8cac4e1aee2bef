// A process that uses a disk queue store until it is killed or the disk refuses it, printing one
// line per acknowledged append; the parent test checks the store against those lines.
// Run from the build: `node test/queue/store-child.mjs MODE DIR ...` after `npm run build`.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { DiskQueueStore } from '../../dist/src/queue/index.js';
import { appendFrameBytes } from '../../dist/src/queue/codec.js';
import { createMessage } from '../../dist/src/message.js';

const [mode, dir, ...rest] = process.argv.slice(2);

function print(line) {
  // stdout is a pipe, written synchronously on Linux: once written, the parent gets the line even after SIGKILL.
  process.stdout.write(`${line}\n`);
}

function message(payloadBytes, priority = 4) {
  return createMessage({ key: 'devices/d1/telemetry', payload: Buffer.alloc(payloadBytes, 7), priority, qos: 1, source: { protocol: 'mqtt', clientId: 'child' } });
}

function tryAppend(queue, msg) {
  try {
    queue.append(msg);
    print(`ack ${msg.id}`);
  } catch (err) {
    print(`refused ${JSON.stringify({ code: err.code, message: err.message })}`);
  }
}

/**
 * Appends to two targets and delivers some of target `a` every turn of the event loop, until
 * killed (or a bound of time and count, should the parent fail to kill it).
 */
async function appendUntilKilled(sync, segmentBytes) {
  const store = await DiskQueueStore.open({ dir, sync, segmentBytes, onError: (err) => print(`error ${err.message}`) });
  const queues = [store.queue('a'), store.queue('b')];
  const deadline = Date.now() + 60_000;
  for (let turn = 0; turn < 100_000 && Date.now() < deadline; turn++) {
    const batch = Array.from({ length: 20 }, (_, i) => {
      const msg = message(50 + ((turn * 20 + i) % 200), (turn + i) % 10);
      const { durable } = queues[i % 2].append(msg);
      return { id: msg.id, durable };
    });
    await Promise.all(batch.map(({ durable }) => durable));
    print(batch.map(({ id }) => `ack ${id}`).join('\n'));
    for (let i = 0; i < 8; i++) {
      const record = queues[0].take();
      if (!record) break;
      queues[0].recordAttempt(record);
      queues[0].settle(record, 'delivered');
      print(`settled ${record.message.id}`);
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  process.exit(1);
}

/** The size of the segment being written: the newest file. */
function activeSegmentBytes() {
  const newest = readdirSync(dir).filter((name) => name.endsWith('.log')).sort().at(-1);
  return statSync(join(dir, newest)).size;
}

/**
 * Runs under a file-size limit: a few small appends, one the limit cuts short (the next append
 * starts a new segment), one that fills that segment exactly to the limit, one record too many
 * (refused; the next starts a segment again).
 */
async function fillToLimit(limit) {
  const store = await DiskQueueStore.open({ dir, sync: 'os', segmentBytes: 1 << 20, onError: (err) => print(`error ${err.message}`) });
  const queue = store.queue('ingest');
  for (let i = 0; i < 5; i++) tryAppend(queue, message(100));
  tryAppend(queue, message(limit));
  tryAppend(queue, message(100));
  const exact = message(0);
  const room = limit - activeSegmentBytes() - appendFrameBytes('ingest', exact);
  tryAppend(queue, { ...exact, payload: Buffer.alloc(room, 7) });
  print(`filled ${activeSegmentBytes()}`);
  tryAppend(queue, message(0));
  tryAppend(queue, message(0));
  process.exit(0);
}

if (mode === 'append') await appendUntilKilled(rest[0], Number(rest[1]));
else if (mode === 'fill') await fillToLimit(Number(rest[0]));
else throw new Error(`unknown mode ${mode}`);
