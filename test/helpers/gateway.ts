import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { builtins } from '../../src/builtins.js';
import type { Registry } from '../../src/registry.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';
import { silentLogger } from '../../src/log.js';
import type { Protocol } from '../../src/message.js';

export interface TestGateway {
  gateway: Gateway;
  dir: string;
  configPath: string;
  /** e.g. http://127.0.0.1:34567 */
  http: string;
  admin: string;
  /** host:port of the gRPC listener, e.g. 127.0.0.1:34568; '' unless asked for */
  grpc: string;
  /** the MQTT listener, e.g. mqtt://127.0.0.1:34569; '' unless asked for */
  mqtt: string;
  mqttPort: number;
  /** MQTT over WebSocket on the HTTP listener, e.g. ws://127.0.0.1:34567/mqtt; '' unless mqtt was asked for */
  mqttWs: string;
  writeConfig(yaml: string): Promise<void>;
  stop(): Promise<void>;
}

/** Listeners a test can ask for beyond http and admin, each on an ephemeral loopback port. */
export type ExtraListener = 'grpc' | 'mqtt';

export interface TestGatewayOptions {
  listeners?: readonly ExtraListener[];
  /** more keys of a listener's flow mapping, e.g. `tls: { cert: …, key: … }` */
  listenerKeys?: Partial<Record<ExtraListener | 'http' | 'admin', string>>;
  /** a fixed HTTP port instead of an ephemeral one, e.g. to restart a gateway where clients reconnect */
  httpPort?: number;
}

export async function startGateway(yaml: string, registry: Registry = builtins, options: TestGatewayOptions = {}): Promise<TestGateway> {
  const keys = (name: ExtraListener | 'http' | 'admin') => (options.listenerKeys?.[name] ? `, ${options.listenerKeys[name]}` : '');
  const listeners = [
    'listeners:',
    `  http: { host: 127.0.0.1, port: ${options.httpPort ?? 0}${keys('http')} }`,
    `  admin: { host: 127.0.0.1, port: 0${keys('admin')} }`,
    ...(options.listeners ?? []).map((name) => `  ${name}: { host: 127.0.0.1, port: 0${keys(name)} }`),
    '',
  ].join('\n');
  const dir = await mkdtemp(join(tmpdir(), 'junction-test-'));
  const configPath = join(dir, 'gateway.yaml');
  const withDeadletter = /^deadletter:/m.test(yaml) ? yaml : `${yaml}\ndeadletter: { path: deadletter.jsonl }\n`;
  const withDefaults = withAnonymous(withDeadletter);
  await writeFile(configPath, `${listeners}\n${withDefaults}`);
  const { config } = await loadConfigFile(configPath, process.env, registry);
  const gateway = await Gateway.start(config, { logger: silentLogger(), registry });
  const http = gateway.address('http');
  const admin = gateway.address('admin');
  const scheme = (name: 'http' | 'admin') => (options.listenerKeys?.[name]?.includes('tls:') ? 'https' : 'http');
  const grpc = gateway.address('grpc');
  const mqtt = gateway.address('mqtt');
  return {
    gateway,
    dir,
    configPath,
    http: http ? `${scheme('http')}://127.0.0.1:${http.port}` : '',
    admin: admin ? `${scheme('admin')}://127.0.0.1:${admin.port}` : '',
    grpc: grpc ? `127.0.0.1:${grpc.port}` : '',
    mqtt: mqtt ? `mqtt://127.0.0.1:${mqtt.port}` : '',
    mqttPort: mqtt?.port ?? 0,
    mqttWs: mqtt && http ? `${scheme('http') === 'https' ? 'wss' : 'ws'}://127.0.0.1:${http.port}/mqtt` : '',
    writeConfig: (text) => writeFile(configPath, `${listeners}\n${withAnonymous(text)}`),
    async stop() {
      await gateway.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Test gateways let clients in without credentials unless the YAML has its own `auth:`
 * (the product's default is closed: auth.anonymous is false).
 */
function withAnonymous(yaml: string): string {
  return /^auth:/m.test(yaml) ? yaml : `${yaml}\nauth: { anonymous: true }\n`;
}

/** A protocol adapter's counters, levels and slow-consumer counts (`shed`, `disconnected`), as /admin/stats and /metrics report them. */
export function adapterStats(gateway: Gateway, protocol: Protocol): Record<string, number> {
  const stats = gateway.adapterStats().get(protocol);
  if (!stats) throw new Error(`no ${protocol} adapter runs`);
  return { ...stats.counters, ...stats.gauges, ...stats.slowConsumers };
}

/** Named counters and levels of a protocol adapter; a name the adapter does not report is an error. */
export function adapterCounts<K extends string>(gateway: Gateway, protocol: Protocol, names: readonly K[]): Record<K, number> {
  const stats = adapterStats(gateway, protocol);
  const out = {} as Record<K, number>;
  for (const name of names) {
    const value = stats[name];
    if (value === undefined) throw new Error(`the ${protocol} adapter reports no ${name}`);
    out[name] = value;
  }
  return out;
}

/** Refusals of one protocol by error code, as junction_rejections_total counts them. */
export function refusals(gateway: Gateway, protocol: Protocol): Record<string, number> {
  return gateway.metrics.rejections()[protocol] ?? {};
}
