import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually } from '../helpers/eventually.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Every live process whose ancestry reaches `root`, from /proc (what a supervisor's cgroup would hold). */
function descendants(root: number): number[] {
  const parents = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      // The command name may hold spaces and parentheses; the fields after its last ')' do not.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(Number(entry), ppid);
    } catch {
      // gone between readdir and read
    }
  }
  const found: number[] = [];
  const pending = [root];
  while (pending.length > 0) {
    const pid = pending.pop()!;
    for (const [child, parent] of parents) {
      if (parent === pid) {
        found.push(child);
        pending.push(child);
      }
    }
  }
  return found;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether a port on 127.0.0.1 can be bound again. */
async function free(port: number): Promise<boolean> {
  const probe = createServer();
  probe.listen(port, '127.0.0.1');
  try {
    await Promise.race([once(probe, 'listening'), once(probe, 'error').then(([err]) => { throw err; })]);
    return true;
  } catch {
    return false;
  } finally {
    probe.close();
  }
}

describe('under a supervisor', { timeout: 60_000 }, () => {
  let dir: string | undefined;
  const started: number[] = [];

  afterEach(async () => {
    // A failed assertion must not leave a gateway behind: only the processes this test started.
    for (const pid of started.splice(0)) if (alive(pid)) process.kill(pid, 'SIGKILL');
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('npm start stops on one SIGTERM to its pid: the gateway exits and its ports are free', async () => {
    dir = await mkdtemp(join(tmpdir(), 'junction-supervisor-'));
    const config = join(dir, 'gateway.yaml');
    await writeFile(config, `
listeners:
  http: { host: 127.0.0.1, port: 0 }
  admin: { host: 127.0.0.1, port: 0 }
deadletter: { path: dl.jsonl }
auth: { anonymous: true }
`);
    // What systemd, Docker and pm2 do: start the documented command, later signal its pid only.
    const npm = spawn('npm', ['start', '--', '-c', config], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    started.push(npm.pid!);
    const ports: number[] = [];
    let stdout = '';
    let stderr = '';
    let pending = '';
    npm.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    const exited = once(npm, 'exit');
    await new Promise<void>((resolve, reject) => {
      npm.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        pending += chunk.toString();
        const lines = pending.split('\n');
        pending = lines.pop()!;
        // npm prints its own banner lines; the gateway's are JSON.
        for (const line of lines.filter((l) => l.startsWith('{'))) {
          const entry = JSON.parse(line) as { msg: string; address?: string };
          if (entry.msg === 'listener up' && entry.address) {
            const port = Number(entry.address.split(':').pop());
            if (!ports.includes(port)) ports.push(port);
          }
          if (entry.msg === 'gateway ready') resolve();
        }
      });
      void exited.then(() => reject(new Error(`npm start exited before the gateway was ready:\n${stdout}\n${stderr}`)));
    });
    const tree = descendants(npm.pid!);
    started.push(...tree);
    expect(tree.length).toBeGreaterThan(0);
    expect(ports).toHaveLength(2);

    npm.kill('SIGTERM');
    await exited;
    await eventually(() => expect(tree.filter(alive)).toEqual([]), 15_000);
    for (const port of ports) expect(await free(port), `port ${port} still bound`).toBe(true);
    expect(stdout).toContain('"msg":"stopped"');
  });
});
