import { spawn } from 'node:child_process';
import { createConnection, type Socket } from 'node:net';
import mqtt, { ErrorWithSubackPacket, type IClientOptions, type MqttClient } from 'mqtt';
import type { Gateway } from '../../src/gateway.js';
import { adapterCounts, refusals } from './gateway.js';

export interface Received {
  topic: string;
  payload: Buffer;
  qos: number;
  retain: boolean;
}

/** An mqtt.js client that records every message it receives. */
export interface TestClient {
  client: MqttClient;
  messages: Received[];
  /** payloads as text, in arrival order */
  texts(): string[];
  /**
   * payloads of the PUBLISH packets as text, in the order the server wrote them: mqtt.js hands a
   * QoS 2 message over only once its PUBREL came back, so `texts` of mixed QoS follow round trips
   */
  wire(): string[];
}

/**
 * Clients made here speak MQTT 3.1.1 and never reconnect by themselves: a test that wants a
 * reconnect makes a new client. `closeClients` ends them all.
 */
const open = new Set<MqttClient>();

export async function connectMqtt(url: string, options: IClientOptions = {}): Promise<TestClient & { sessionPresent: boolean }> {
  const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000, ...options });
  open.add(client);
  client.on('close', () => open.delete(client));
  // Listening before CONNACK: a persistent session's queued messages follow it in the same read.
  const messages: Received[] = [];
  client.on('message', (topic, payload, packet) => messages.push({ topic, payload, qos: packet.qos, retain: packet.retain }));
  const wire: string[] = [];
  client.on('packetreceive', (packet) => {
    if (packet.cmd === 'publish') wire.push(packet.payload.toString());
  });
  const connack = await new Promise<{ sessionPresent: boolean }>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
    client.once('close', () => reject(new Error('the connection closed before CONNACK')));
  });
  return { client, messages, texts: () => messages.map((m) => m.payload.toString()), wire: () => [...wire], sessionPresent: connack.sessionPresent };
}

export async function closeClients(): Promise<void> {
  await Promise.all([...open].map((client) => client.endAsync(true)));
  open.clear();
}

/** The SUBACK return codes of one SUBSCRIBE, refusals (0x80) included; mqtt.js rejects those. */
export async function subscribeCodes(client: MqttClient, topics: Record<string, { qos: 0 | 1 | 2 }>): Promise<number[]> {
  try {
    return (await client.subscribeAsync(topics)).map((grant) => grant.qos);
  } catch (err) {
    // 3.1.1 SUBACKs carry plain return codes (mqtt-packet types allow objects for MQTT 5)
    if (err instanceof ErrorWithSubackPacket) return err.packet.granted as number[];
    throw err;
  }
}

/** The CONNACK return code a CONNECT gets: 0 when accepted. */
export async function connackCode(url: string, options: IClientOptions = {}): Promise<number | undefined> {
  try {
    const { client } = await connectMqtt(url, options);
    await client.endAsync(true);
    return 0;
  } catch (err) {
    return (err as { code?: number }).code;
  }
}

/** A plain TCP connection for sending bytes no MQTT library would. */
export interface RawConnection {
  socket: Socket;
  received: Buffer[];
  /** resolves when the server has closed the connection */
  closed: Promise<void>;
}

export async function rawConnection(port: number): Promise<RawConnection> {
  const socket = createConnection(port, '127.0.0.1');
  const received: Buffer[] = [];
  socket.on('data', (chunk: Buffer) => received.push(chunk));
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return { socket, received, closed };
}

/** CONNECT, MQTT 3.1.1, no will, no credentials [MQTT-3.1]. */
export function connectPacket(clientId: string, options: { clean?: boolean; keepalive?: number } = {}): Buffer {
  const id = Buffer.from(clientId, 'utf8');
  const variable = Buffer.from([0, 4, 0x4d, 0x51, 0x54, 0x54, 4, options.clean === false ? 0 : 0x02, 0, options.keepalive ?? 60]);
  const body = Buffer.concat([variable, Buffer.from([id.length >> 8, id.length & 0xff]), id]);
  return Buffer.concat([Buffer.from([0x10, body.length]), body]);
}

/** What the MQTT adapter counts (docs/mqtt.md, Counters). */
const MQTT_COUNTERS = [
  'oversizePackets', 'malformedPackets', 'clientErrors', 'connectsRefused',
  'subscriptionsRefused', 'routed', 'held', 'holdTimeouts', 'paced', 'pacingBehind', 'shed', 'disconnected', 'forwardFailed',
  'requestsSent', 'requestsHanded', 'answers',
] as const;

/** The MQTT adapter's counters now, with its refusals by code. */
export function mqttStats(gateway: Gateway): Record<(typeof MQTT_COUNTERS)[number], number> & { refused: Record<string, number> } {
  return { ...adapterCounts(gateway, 'mqtt', MQTT_COUNTERS), refused: refusals(gateway, 'mqtt') };
}

export interface ProcessResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** mosquitto_sub running in the background, its output collected line by line. */
export interface MosquittoSub {
  /** what -v prints per message: `topic payload` */
  lines: string[];
  /** QoS and retain flag of each PUBLISH received, from -d */
  publishes: { topic: string; qos: number; retain: boolean }[];
  exited: Promise<ProcessResult>;
}

/** Starts mosquitto_sub with -d and resolves once its SUBACK arrived, so nothing published later is missed. */
export async function startMosquittoSub(args: string[]): Promise<MosquittoSub> {
  // mosquitto_sub block-buffers stdout into a pipe; stdbuf (coreutils) makes it line-buffered.
  const child = spawn('stdbuf', ['-oL', 'mosquitto_sub', '-d', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const publishes: MosquittoSub['publishes'] = [];
  let stdout = '';
  let stderr = '';
  let subscribed!: () => void;
  const ready = new Promise<void>((resolve) => { subscribed = resolve; });
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
    const parts = stdout.split('\n');
    stdout = parts.pop()!;
    for (const line of parts) {
      const publish = /^Client \S+ received PUBLISH \(d\d, q(\d), r(\d), m\d+, '([^']*)'/.exec(line);
      if (publish) publishes.push({ topic: publish[3]!, qos: Number(publish[1]), retain: publish[2] === '1' });
      else if (/^Client \S+ received SUBACK/.test(line)) subscribed();
      else if (!/^Client \S+ /.test(line) && !line.startsWith('Subscribed (mid')) lines.push(line);
    }
  });
  child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
  // 'close', not 'exit': only then has everything the process wrote been read.
  const exited = new Promise<ProcessResult>((resolve) => child.on('close', (code) => resolve({ code, stdout: lines.join('\n'), stderr })));
  await Promise.race([ready, exited.then((r) => { throw new Error(`mosquitto_sub exited before subscribing: ${r.code} ${r.stderr}`); })]);
  return { lines, publishes, exited };
}

/** Runs a Debian mosquitto client (mosquitto-clients) to completion. */
export function runMosquitto(command: 'mosquitto_pub' | 'mosquitto_sub', args: string[], timeoutMs = 10_000): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${command} ${args.join(' ')} did not exit within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    // 'close', not 'exit': only then has everything the process wrote been read.
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** SUBSCRIBE with packet id 1 and one topic filter [MQTT-3.8]. */
export function subscribePacket(filter: string, qos: 0 | 1 | 2): Buffer {
  const topic = Buffer.from(filter, 'utf8');
  const body = Buffer.concat([Buffer.from([0, 1, topic.length >> 8, topic.length & 0xff]), topic, Buffer.from([qos])]);
  return Buffer.concat([Buffer.from([0x82, body.length]), body]);
}
