import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ReceivedRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

export type DownstreamHandler = (request: ReceivedRequest, response: ServerResponse) => void;

/** A real HTTP server standing in for a downstream service; it records every request. */
export interface Downstream {
  url: string;
  received: ReceivedRequest[];
  handler: DownstreamHandler;
  /** stop listening, so connections are refused, until `resume` */
  pause(): Promise<void>;
  /** listen again on the same port */
  resume(): Promise<void>;
  close(): Promise<void>;
}

export async function startDownstream(handler?: DownstreamHandler): Promise<Downstream> {
  const downstream: Downstream = {
    url: '',
    received: [],
    handler: handler ?? ((_req, res) => res.writeHead(204).end()),
    pause: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
    resume: () => new Promise((resolve) => server.listen(port, '127.0.0.1', resolve)),
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      if (!server.listening) return resolve();
      server.close(() => resolve());
    }),
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const request = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
      downstream.received.push(request);
      downstream.handler(request, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  downstream.url = `http://127.0.0.1:${port}`;
  return downstream;
}
