import { Client, Pool } from 'undici';
import { readStamp } from '../stamp.js';
import type { Closable, ConnectionContext, ProtocolDriver, PublisherConnection } from './driver.js';

function origin(ctx: ConnectionContext): string {
  if (!ctx.ports.http) throw new Error(`${ctx.server} has no HTTP port`);
  return `${ctx.tlsCa !== undefined ? 'https' : 'http'}://${ctx.host}:${ctx.ports.http}`;
}

/** TLS options of the connections, when the run is over TLS. */
function connectOptions(ctx: ConnectionContext): { connect?: { ca: string; servername: string } } {
  return ctx.tlsCa !== undefined ? { connect: { ca: ctx.tlsCa, servername: 'localhost' } } : {};
}

/**
 * A publisher keeps one keep-alive connection per message in flight (no pipelining): POST
 * /v1/messages/KEY, done on 202. Subscribers are Server-Sent Events streams of GET
 * /v1/subscribe/KEY.
 */
export const httpDriver: ProtocolDriver = {
  protocol: 'http',

  async publisher(ctx): Promise<PublisherConnection> {
    const client = new Pool(origin(ctx), { connections: ctx.inflight, localAddress: ctx.localAddress, keepAliveTimeout: 60_000, ...connectOptions(ctx) });
    return {
      publish(key, payload, priority, done) {
        client.request({
          method: 'POST', path: `/v1/messages/${key}`, body: payload,
          headers: { 'content-type': 'text/plain', 'x-priority': String(priority), 'x-qos': String(ctx.qos) },
        }).then(async (response) => {
          const body = await response.body.text();
          done(response.statusCode === 202 ? undefined : `HTTP ${response.statusCode} ${body.slice(0, 120)}`);
        }, (err: Error) => done(err.message));
      },
      close: () => client.close(),
    };
  },

  async subscriber(ctx, key, onDelivery): Promise<Closable> {
    const client = new Client(origin(ctx), { localAddress: ctx.localAddress, bodyTimeout: 0, ...connectOptions(ctx) });
    const response = await client.request({ method: 'GET', path: `/v1/subscribe/${key}`, headers: { accept: 'text/event-stream' } });
    if (response.statusCode !== 200) throw new Error(`GET /v1/subscribe/${key}: HTTP ${response.statusCode}`);
    let closing = false;
    let buffered = '';
    response.body.setEncoding('utf8');
    response.body.on('data', (chunk: string) => {
      // Events are scanned in place and only the unfinished tail is kept: slicing the buffer per
      // event made a chunk of hundreds of events quadratic.
      const text = buffered + chunk;
      let start = 0;
      let end: number;
      while ((end = text.indexOf('\n\n', start)) >= 0) {
        // Only the stamp is read, not the whole event: the load generator shares the cores.
        const at = text.indexOf('"payload":"', start);
        if (at >= 0 && at < end) onDelivery(readStamp(text, at + 11));
        start = end + 2;
      }
      buffered = text.slice(start);
    });
    response.body.on('error', () => undefined);
    response.body.on('close', () => { if (!closing) ctx.onDrop('event stream closed'); });
    return {
      async close() {
        closing = true;
        response.body.destroy();
        await client.destroy();
      },
    };
  },

  async idle(): Promise<Closable> {
    throw new Error('HTTP has no idle connections scenario');
  },
};
