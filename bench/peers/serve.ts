/**
 * The contract every bare peer in bench/peers/ keeps with the load generator, in one place:
 * `node dist/bench/peers/NAME.js --host H --port N`; one line `READY` on stdout once listening;
 * SIGTERM or SIGINT closes the server and exits 0; a startup error is one line on stderr, exit 1.
 */
import type { Server } from 'node:net';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

export type Close = () => Promise<void> | void;

/** `--cert FILE --key FILE`: serve TLS with them (`junction bench --tls`). */
export interface PeerTls {
  cert: Buffer;
  key: Buffer;
}

/** Parses --host/--port (and --cert/--key), starts the peer, prints READY and waits for a signal. */
export async function serve(name: string, start: (host: string, port: number, tls: PeerTls | undefined) => Promise<Close>): Promise<void> {
  let close: Close;
  try {
    const { values } = parseArgs({ options: { host: { type: 'string', default: '127.0.0.1' }, port: { type: 'string' }, cert: { type: 'string' }, key: { type: 'string' } } });
    const port = Number(values.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`--port must be 1..65535, got ${values.port ?? 'nothing'}`);
    if ((values.cert === undefined) !== (values.key === undefined)) throw new Error('--cert and --key go together');
    close = await start(values.host, port, values.cert !== undefined ? { cert: readFileSync(values.cert), key: readFileSync(values.key!) } : undefined);
  } catch (err) {
    process.stderr.write(`${name} peer: ${String(err instanceof Error ? err.message : err).replace(/\s+/g, ' ')}\n`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (): void => {
    if (stopping) process.exit(0); // a second signal: do not wait any longer
    stopping = true;
    void Promise.resolve().then(close).then(() => process.exit(0), (err: unknown) => {
      process.stderr.write(`${name} peer: close failed: ${String(err)}\n`);
      process.exit(1);
    });
  };
  process.on('SIGTERM', stop).on('SIGINT', stop);
  process.stdout.write('READY\n');
}

/** server.listen(port, host) as a promise that rejects on EADDRINUSE and the like. */
export function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}
