import { randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import bcrypt from 'bcryptjs';

/**
 * Password hashes as they appear in the config: never a plain password.
 * - `scrypt:N:r:p:SALT:KEY` (salt and derived key in base64), made by `junction hash-password`;
 * - bcrypt's own `$2a$`/`$2b$`/`$2y$` strings, so hashes from other systems can be reused.
 */
export const PASSWORD_HASH_PATTERN = '^(scrypt:[0-9]+:[0-9]+:[0-9]+:[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+|\\$2[aby]\\$[0-9]{2}\\$[./A-Za-z0-9]{53})$';

/** N = 2^14, r = 8, p = 1: the interactive-login parameters of RFC 7914 §2, about 60 ms here. */
export const SCRYPT_DEFAULTS = { N: 16384, r: 8, p: 1 } as const;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

export interface ScryptHash {
  kind: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: Buffer;
  key: Buffer;
}

export type ParsedHash = ScryptHash | { kind: 'bcrypt'; hash: string };

export function scryptAsync(password: Buffer, salt: Buffer, keylen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keylen, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** node:crypto refuses scrypt above 32 MiB of memory unless told; 128·N·r bytes are needed. */
export function scryptOptions(N: number, r: number, p: number): ScryptOptions {
  return { N, r, p, maxmem: 128 * N * r + 1024 * 1024 };
}

/** What is wrong with a configured hash, or undefined when it can be used. */
export function passwordHashProblem(hash: string): string | undefined {
  if (!new RegExp(PASSWORD_HASH_PATTERN).test(hash)) {
    return 'expected a password hash: scrypt:N:r:p:SALT:KEY (from `junction hash-password`) or a bcrypt $2b$ hash, never a plain password';
  }
  const parsed = parseHash(hash);
  if (parsed.kind === 'scrypt') {
    const { N, r, p } = parsed;
    if (N < 2 || (N & (N - 1)) !== 0) return 'scrypt N must be a power of two greater than 1';
    if (r < 1 || p < 1) return 'scrypt r and p must be at least 1';
    if (N * r > 2 ** 24) return 'scrypt N·r is too large (over 2 GiB of memory per check)';
    if (parsed.key.length < 16) return 'scrypt key must be at least 16 bytes';
  }
  return undefined;
}

export function parseHash(hash: string): ParsedHash {
  if (!hash.startsWith('scrypt:')) return { kind: 'bcrypt', hash };
  const [, N, r, p, salt, key] = hash.split(':');
  return { kind: 'scrypt', N: Number(N), r: Number(r), p: Number(p), salt: Buffer.from(salt!, 'base64'), key: Buffer.from(key!, 'base64') };
}

export async function hashPassword(password: string | Buffer): Promise<string> {
  const { N, r, p } = SCRYPT_DEFAULTS;
  const salt = randomBytes(SALT_BYTES);
  const key = await scryptAsync(Buffer.from(password), salt, KEY_BYTES, scryptOptions(N, r, p));
  return `scrypt:${N}:${r}:${p}:${salt.toString('base64')}:${key.toString('base64')}`;
}

/** Constant-time comparison of the derived key; scrypt runs on libuv's thread pool. */
export async function verifyPassword(hash: string, password: string | Buffer): Promise<boolean> {
  const parsed = parseHash(hash);
  const given = Buffer.from(password);
  if (parsed.kind === 'bcrypt') return bcrypt.compare(given.toString('utf8'), parsed.hash);
  const key = await scryptAsync(given, parsed.salt, parsed.key.length, scryptOptions(parsed.N, parsed.r, parsed.p));
  return timingSafeEqual(key, parsed.key);
}
