// A cluster node's queue store in a process of its own, appending and delivering until it is
// killed, printing one line per acknowledged append and per settlement; the parent checks that the
// other nodes take over every record acknowledged and not settled.
// Run from the build: `node test/queue/redis-store-child.mjs URL PREFIX NODE_ID CLAIM_IDLE_MS` after `npm run build`.
import { openRedisStores } from '../../dist/src/cluster/stores.js';
import { createMessage } from '../../dist/src/message.js';

const [url, keyPrefix, nodeId, claimIdleMs] = process.argv.slice(2);

function print(line) {
  // stdout is a pipe, written synchronously on Linux: once written, the parent gets the line even after SIGKILL.
  process.stdout.write(`${line}\n`);
}

const stores = await openRedisStores({
  redis: url, keyPrefix, nodeId, claimIdleMs: Number(claimIdleMs),
  deadletter: { maxBytes: 1024 * 1024, whenFull: 'refuse' },
  onError: (err) => print(`error ${err.message}`),
});
const queues = [stores.queues.queue('a'), stores.queues.queue('b')];
const deadline = Date.now() + 60_000;
// Bounded in turns and time, should the parent fail to kill it.
for (let turn = 0; turn < 100_000 && Date.now() < deadline; turn++) {
  const batch = Array.from({ length: 20 }, (_, i) => {
    const message = createMessage({ key: 'devices/d1/telemetry', payload: Buffer.alloc(100, 7), priority: (turn + i) % 10, qos: 1, source: { protocol: 'mqtt', clientId: 'child' } });
    return { id: message.id, durable: queues[i % 2].append(message).durable };
  });
  await Promise.all(batch.map(({ durable }) => durable));
  print(batch.map(({ id }) => `ack ${id}`).join('\n'));
  // Some delivered, some held (a call under way when the kill comes), the rest left ready.
  for (let i = 0; i < 8; i++) {
    const record = queues[0].take();
    if (!record) break;
    queues[0].recordAttempt(record);
    if (i % 2 === 0) {
      queues[0].settle(record, 'delivered');
      print(`settled ${record.message.id}`);
    }
  }
  await new Promise((resolve) => setImmediate(resolve));
}
process.exit(1);
