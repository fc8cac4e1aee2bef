import { spawn } from 'node:child_process';
import { expect, it } from 'vitest';
import { verifyPassword } from '../../src/auth/password.js';
import { BIN } from '../helpers/cli.js';

function hashPasswordCli(input: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'hash-password'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
    child.stderr.on('data', (chunk: Buffer) => { stderr += chunk.toString(); });
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

it('junction hash-password prints a hash of the line on standard input that verifies', async () => {
  const { code, stdout } = await hashPasswordCli('correct horse\n');
  expect(code).toBe(0);
  const hash = stdout.trim();
  expect(hash).toMatch(/^scrypt:16384:8:1:/);
  expect(await verifyPassword(hash, 'correct horse')).toBe(true);

  const empty = await hashPasswordCli('');
  expect(empty.code).toBe(1);
  expect(empty.stderr).toMatch(/no password on standard input/);
});
