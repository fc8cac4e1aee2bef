import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AccessControl } from '../../src/auth/index.js';
import { loadConfigText } from '../../src/config/load.js';
import { runCli } from '../helpers/cli.js';

describe('junction api-key and junction acl check', () => {
  let dir = '';

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-cli-security-'));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('api-key prints a key and the config entry holding only its hash, which lets the key in', async () => {
    const result = await runCli(['api-key', '--principal', 'backend-1']);
    expect(result.code).toBe(0);
    const key = /^key: {3}(jk_\S+)$/m.exec(result.stdout)?.[1];
    const entry = /^entry: (- \{ key: "scrypt:[^"]+", principal: "backend-1" \})$/m.exec(result.stdout)?.[1];
    expect(key).toBeDefined();
    expect(entry).toBeDefined();
    expect(entry).not.toContain(key!.slice(3));
    const { config } = loadConfigText(`auth:\n  apiKeys:\n    ${entry!}\n`, '', {});
    const identity = await new AccessControl(config).authenticate({ token: key }, { listener: 'http' });
    expect(identity.principal).toBe('backend-1');
  });

  it('acl check explains the decision and the rule behind it, exit 2 when refused', async () => {
    const file = join(dir, 'gateway.yaml');
    await writeFile(file, `auth:
  jwt: { secret: "\${JWT_SECRET:-a secret of thirty-two characters!!}" }
  acl:
    - { principal: "*", effect: deny, publish: ["config/#"] }
    - { role: ops, subscribe: ["#"] }
    - { principal: "*", publish: ["tenants/{claim.tenant}/{principal}/#"] }
`);
    const allowed = await runCli(['acl', 'check', '-c', file, '--principal', 'dev-1', '--claim', 'tenant=acme', '--publish', 'tenants/acme/dev-1/t']);
    expect(allowed.code).toBe(0);
    expect(allowed.stdout).toContain('allow: dev-1 publish tenants/acme/dev-1/t');
    expect(allowed.stdout).toContain('auth.acl[2] allows publish tenants/acme/dev-1/#');
    const denied = await runCli(['acl', 'check', '-c', file, '--principal', 'dev-1', '--role', 'ops', '--publish', 'config/x']);
    expect(denied.code).toBe(2);
    expect(denied.stdout).toContain('deny: dev-1 (roles ops) publish config/x');
    expect(denied.stdout).toContain('auth.acl[0] denies publish config/#');
    const none = await runCli(['acl', 'check', '-c', file, '--principal', 'anonymous', '--subscribe', 'a/#']);
    expect(none.code).toBe(2);
    expect(none.stdout).toContain('no rule of auth.acl allows subscribe a/#');
  });
});
