import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { builtinAdapters } from '../../adapters/index.js';
import type { AdapterFactory } from '../../src/adapter.js';
import { loadConfigFile } from '../../src/config/load.js';
import { Gateway } from '../../src/gateway.js';
import { silentLogger } from '../../src/log.js';

export interface TestGateway {
  gateway: Gateway;
  dir: string;
  configPath: string;
  /** e.g. http://127.0.0.1:34567 */
  http: string;
  admin: string;
  writeConfig(yaml: string): Promise<void>;
  stop(): Promise<void>;
}

/** Listeners on ephemeral loopback ports; a test's YAML gives routes, targets and limits. */
export const LISTENERS = `
listeners:
  http: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
`;

export async function startGateway(yaml: string, adapters: AdapterFactory[] = builtinAdapters): Promise<TestGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'junction-test-'));
  const configPath = join(dir, 'gateway.yaml');
  const withDeadletter = /^deadletter:/m.test(yaml) ? yaml : `${yaml}\ndeadletter: { path: deadletter.jsonl }\n`;
  await writeFile(configPath, `${LISTENERS}\n${withDeadletter}`);
  const { config } = await loadConfigFile(configPath);
  const gateway = await Gateway.start(config, { logger: silentLogger(), adapters });
  const http = gateway.address('http');
  const admin = gateway.address('admin');
  return {
    gateway,
    dir,
    configPath,
    http: http ? `http://127.0.0.1:${http.port}` : '',
    admin: admin ? `http://127.0.0.1:${admin.port}` : '',
    writeConfig: (text) => writeFile(configPath, `${LISTENERS}\n${text}`),
    async stop() {
      await gateway.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
