/**
 * Bare grpc-js: junction.v1.Gateway (proto/junction/v1/gateway.proto) with nothing behind it.
 * Publish and PublishStream ack each message (the client's id, else a counter; stream acks count
 * from 1) and send a Delivery {id, key, payload, qos} to every Subscribe stream of exactly that
 * key; Subscribe registers the call under its `pattern` (no wildcards) until it is cancelled;
 * Request is UNIMPLEMENTED.
 *
 * A fair peer for the gRPC scenarios: the same library, the same .proto loaded with the gateway's
 * loader options (adapters/grpc/proto.ts), the same `junction-subscribed` response headers on
 * Subscribe, so the same client code drives both; no auth, routing, delivery buffers, limits or
 * metrics, and grpc-js's default message size limits. Channelz is off, as in the gateway.
 * Run: `node dist/bench/peers/grpc.js --host 127.0.0.1 --port 50051`.
 */
import { fileURLToPath } from 'node:url';
import { logVerbosity, Metadata, Server, ServerCredentials, status, type sendUnaryData, type ServerDuplexStream, type ServerUnaryCall, type ServerWritableStream, type ServiceDefinition, setLogVerbosity } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { serve } from './serve.js';

interface MessageIn { key: string; payload: Buffer; id: string; qos?: number }
interface Ack { id: string; sequence: number }
interface Delivery { id: string; key: string; payload: Buffer; qos: number }
type Subscriber = ServerWritableStream<{ pattern: string }, Delivery>;

// dist/bench/peers/ is three levels below the package root, which holds proto/.
const PROTO = fileURLToPath(new URL('../../../proto/junction/v1/gateway.proto', import.meta.url));
const definition = loadSync(PROTO, { keepCase: false, longs: Number, enums: String, defaults: true });

const subscribers = new Map<string, Set<Subscriber>>();
let counter = 0;

/** Fans the message out and returns its id. */
function publish(m: MessageIn): string {
  const id = m.id || String(++counter);
  const streams = subscribers.get(m.key);
  if (streams) for (const call of streams) call.write({ id, key: m.key, payload: m.payload, qos: m.qos ?? 1 });
  return id;
}

await serve('grpc', async (host, port) => {
  const server = new Server({ 'grpc.enable_channelz': 0 });
  server.addService(definition['junction.v1.Gateway'] as ServiceDefinition, {
    Publish: (call: ServerUnaryCall<MessageIn, Ack>, callback: sendUnaryData<Ack>) => callback(null, { id: publish(call.request), sequence: 0 }),
    PublishStream: (call: ServerDuplexStream<MessageIn, Ack>) => {
      let sequence = 0;
      call.on('data', (m: MessageIn) => call.write({ id: publish(m), sequence: ++sequence }));
      call.on('end', () => call.end());
    },
    Subscribe: (call: Subscriber) => {
      const key = call.request.pattern;
      let streams = subscribers.get(key);
      if (!streams) subscribers.set(key, (streams = new Set()));
      streams.add(call);
      const remove = (): void => {
        if (streams.delete(call) && streams.size === 0) subscribers.delete(key);
      };
      call.on('cancelled', remove).on('close', remove).on('error', remove);
      const headers = new Metadata();
      headers.set('junction-subscribed', key);
      call.sendMetadata(headers);
    },
    Request: (_call: ServerUnaryCall<MessageIn, unknown>, callback: sendUnaryData<unknown>) => callback({ code: status.UNIMPLEMENTED, details: 'Request is not implemented by the bare grpc peer' }),
  });
  const address = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
  setLogVerbosity(logVerbosity.NONE); // a failed bind is reported once, by serve(), not also by grpc-js
  await new Promise<number>((resolve, reject) => server.bindAsync(address, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  setLogVerbosity(logVerbosity.ERROR);
  // Subscribe streams never end by themselves, so a graceful shutdown would wait forever.
  return () => server.forceShutdown();
});
