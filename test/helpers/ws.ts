import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import WebSocket, { type ClientOptions } from 'ws';
import type { ServerFrame } from '../../src/client/protocol.js';
import { eventually } from './eventually.js';

export interface CloseEvent {
  code: number;
  reason: string;
}

/** A raw `ws` client of /ws that keeps every frame it receives, for tests to wait on. */
export interface WsTestClient {
  socket: WebSocket;
  frames: ServerFrame[];
  send(frame: unknown): void;
  /** the first received frame matching `match` that no earlier `next` returned */
  next<T extends ServerFrame = ServerFrame>(match: (frame: ServerFrame) => boolean, timeoutMs?: number): Promise<T>;
  /** resolves when the socket closes, with what the server said (1006 when it just went away) */
  closed: Promise<CloseEvent>;
  close(): Promise<void>;
}

export function wsUrl(http: string, query = ''): string {
  return `${http.replace(/^http/, 'ws')}/ws${query}`;
}

export async function connectWs(http: string, options: ClientOptions & { query?: string; protocols?: string[] } = {}): Promise<WsTestClient> {
  const { query, protocols, ...rest } = options;
  const socket = new WebSocket(wsUrl(http, query), protocols ?? [], rest);
  const frames: ServerFrame[] = [];
  const taken = new Set<ServerFrame>();
  socket.on('message', (data: Buffer) => frames.push(JSON.parse(data.toString('utf8')) as ServerFrame));
  const closed = new Promise<CloseEvent>((resolve) => socket.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve());
    socket.once('error', reject);
  });
  // A socket the server closes on purpose may also report the write error that follows.
  socket.on('error', () => undefined);
  return {
    socket,
    frames,
    send: (frame) => socket.send(typeof frame === 'string' ? frame : JSON.stringify(frame)),
    next: <T extends ServerFrame>(match: (frame: ServerFrame) => boolean, timeoutMs = 5000) => eventually(() => {
      const found = frames.find((f) => !taken.has(f) && match(f));
      if (!found) throw new Error(`no such frame yet; have ${JSON.stringify(frames.filter((f) => !taken.has(f))).slice(0, 500)}`);
      taken.add(found);
      return found as T;
    }, timeoutMs),
    closed,
    async close() {
      if (socket.readyState === WebSocket.CLOSED) return;
      socket.close();
      await closed;
    },
  };
}

/** A handshake that fails: the HTTP status the server answered with. */
export function refusedStatus(http: string, options: ClientOptions & { query?: string; protocols?: string[] } = {}): Promise<number> {
  const { query, protocols, ...rest } = options;
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsUrl(http, query), protocols ?? [], rest);
    socket.on('unexpected-response', (_request, response) => {
      resolve(response.statusCode ?? 0);
      socket.terminate();
    });
    socket.on('open', () => {
      socket.terminate();
      reject(new Error('the handshake succeeded'));
    });
    socket.on('error', () => undefined);
  });
}

/**
 * A WebSocket upgrade request to `path` on a plain socket: everything the server sent, once it
 * closed the connection (rejects if it has not within `timeoutMs`).
 */
export function upgradeAnswer(http: string, path: string, timeoutMs = 5000): Promise<string> {
  const { hostname, port } = new URL(http);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname);
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept the connection open; it sent ${Buffer.concat(chunks).toString('latin1').slice(0, 300)}`));
    }, timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve(Buffer.concat(chunks).toString('latin1'));
    });
    socket.write(`GET ${path} HTTP/1.1\r\nHost: ${hostname}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\n\r\n`);
  });
}
