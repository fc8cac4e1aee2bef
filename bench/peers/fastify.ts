/**
 * Bare fastify 5: `POST /v1/messages/*` takes the body as bytes, whatever its content type, and
 * answers 202 `{"id":"<n>"}` (a counter), as Junction's HTTP publish answers a publish it accepted.
 *
 * A fair peer for the HTTP scenarios: the same framework and body handling Junction's HTTP
 * listener uses (a catch-all parser, 1 MiB body limit, logger off) and the same request and
 * response, with nothing in between: no auth, no routing, no limits, no metrics.
 * Run: `node dist/bench/peers/fastify.js --host 127.0.0.1 --port 8080 [--cert server.crt --key server.key]`.
 */
import Fastify from 'fastify';
import { serve } from './serve.js';

await serve('fastify', async (host, port, tls) => {
  // With --cert/--key: HTTPS, TLS 1.2 at least, as Junction's listener.
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024, ...(tls ? { https: { ...tls, minVersion: 'TLSv1.2' as const } } : {}) });
  // No JSON or text parsing: the body of any content type (or none) is a Buffer, as in the gateway.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_request, body, done) => done(null, body));
  let counter = 0;
  app.post('/v1/messages/*', (_request, reply) => {
    counter += 1;
    void reply.code(202).send({ id: String(counter) });
  });
  await app.listen({ host, port });
  return () => app.close();
});
