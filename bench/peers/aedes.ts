/**
 * Bare aedes: the MQTT broker library Junction embeds, on plain TCP with its defaults (in-memory
 * persistence and mqemitter, no authenticate/authorize hooks, no routing, no metrics).
 *
 * A fair peer for the MQTT scenarios: the same library, the same wire protocol (MQTT 3.1.1/5 on
 * TCP), so the same mqtt.js clients drive both; what is left is what the gateway adds on top
 * (auth, ACL, router, limits, metrics). Run: `node dist/bench/peers/aedes.js --host 127.0.0.1 --port 1883`.
 */
import { createServer } from 'node:net';
import { Aedes } from 'aedes';
import { listen, serve } from './serve.js';

await serve('aedes', async (host, port) => {
  const broker = await Aedes.createBroker();
  const server = createServer(broker.handle);
  await listen(server, host, port);
  // broker.close() disconnects every client, so server.close() has no connection left to wait for.
  return () => new Promise<void>((resolve) => broker.close(() => server.close(() => resolve())));
});
