/**
 * Bare `ws`: a WebSocketServer at `/ws` speaking the subset of Junction's JSON frames
 * (docs/websocket.md) the benchmarks use. `subscribe` records the socket under that exact key (no
 * wildcards) and is acked; `publish` sends `{"op":"message","sub","key","payload"}` to every socket
 * subscribed to exactly its key, and is acked when it has an `id`; `unsubscribe` and `ping` are
 * answered; anything else is an `error` frame.
 *
 * A fair peer for the WebSocket scenarios: the same library and settings as the gateway's /ws
 * (no per-message deflate, 1 MiB frames), frames the same client code reads, and each delivery
 * built once per publish per subscription id; no auth, patterns, priorities, backpressure queues,
 * limits or metrics. Run: `node dist/bench/peers/ws.js --host 127.0.0.1 --port 8080`, then connect to ws://…/ws.
 */
import { WebSocketServer, type WebSocket } from 'ws';
import { serve } from './serve.js';

type Id = string | number;
interface Frame { op?: unknown; id?: Id; key?: unknown; payload?: unknown }

/** key → socket → the subscription id it used */
const subscriptions = new Map<string, Map<WebSocket, Id>>();

function publish(key: string, payload: unknown): void {
  const frames = new Map<Id, string>();
  for (const [socket, sub] of subscriptions.get(key) ?? []) {
    let frame = frames.get(sub);
    if (frame === undefined) frames.set(sub, (frame = JSON.stringify({ op: 'message', sub, key, payload })));
    socket.send(frame);
  }
}

function drop(key: string, socket: WebSocket): void {
  const subscribers = subscriptions.get(key);
  if (subscribers?.delete(socket) && subscribers.size === 0) subscriptions.delete(key);
}

function answer(socket: WebSocket, frame: Frame, keys: Set<string>): void {
  const reply = (body: object): void => socket.send(JSON.stringify(body));
  const { key } = frame;
  if (frame.op === 'ping') return reply({ op: 'pong', id: frame.id });
  if (typeof key !== 'string' || key === '') return reply({ op: 'error', id: frame.id, code: 'bad_request', message: 'key must be a non-empty string', field: 'key' });
  if (frame.op === 'publish') {
    publish(key, frame.payload);
    if (frame.id !== undefined) reply({ op: 'ack', id: frame.id });
  } else if (frame.op === 'subscribe' && frame.id !== undefined) {
    let subscribers = subscriptions.get(key);
    if (!subscribers) subscriptions.set(key, (subscribers = new Map()));
    subscribers.set(socket, frame.id);
    keys.add(key);
    reply({ op: 'ack', id: frame.id });
  } else if (frame.op === 'unsubscribe' && frame.id !== undefined) {
    drop(key, socket);
    keys.delete(key);
    reply({ op: 'ack', id: frame.id });
  } else {
    reply({ op: 'error', id: frame.id, code: 'bad_request', message: 'unknown op, or no id', field: 'op' });
  }
}

await serve('ws', (host, port) => new Promise((resolve, reject) => {
  const wss = new WebSocketServer({ host, port, path: '/ws', perMessageDeflate: false, maxPayload: 1024 * 1024 });
  wss.on('connection', (socket) => {
    const keys = new Set<string>();
    socket.on('message', (data: Buffer) => {
      let frame: Frame | null;
      try {
        frame = JSON.parse(data.toString()) as Frame | null;
      } catch (err) {
        return socket.send(JSON.stringify({ op: 'error', code: 'bad_request', message: `not JSON: ${(err as Error).message}` }));
      }
      answer(socket, typeof frame === 'object' && frame !== null ? frame : {}, keys);
    });
    socket.on('close', () => keys.forEach((key) => drop(key, socket)));
  });
  wss.once('error', reject);
  wss.once('listening', () => resolve(() => new Promise<void>((done) => {
    for (const socket of wss.clients) socket.terminate();
    wss.close(() => done());
  })));
}));
