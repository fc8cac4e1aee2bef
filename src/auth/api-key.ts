import { randomBytes, timingSafeEqual } from 'node:crypto';
import { parseHash, passwordHashProblem, SCRYPT_DEFAULTS, scryptAsync, scryptOptions } from './password.js';

/**
 * API keys: `jk_<id>.<secret>`, where the id is the base64url of the scrypt salt of the key's
 * hash in the config (`scrypt:N:r:p:SALT:KEY`, as for passwords). The id finds the one entry
 * to check, so a presented key costs at most one scrypt, and a key whose id names no entry
 * costs none; the secret is 32 random bytes, so the slow hash guards a leaked config file, not
 * guessing. `junction api-key` makes a key and its hash.
 */
export const API_KEY_PREFIX = 'jk_';
const ID = /^jk_([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{43})$/;
const SECRET_BYTES = 32;
const SALT_BYTES = 16;
const KEY_BYTES = 32;

export interface NewApiKey {
  /** what the client presents; shown once */
  key: string;
  /** what the config keeps, under auth.apiKeys[].key */
  hash: string;
}

export function isApiKey(token: string): boolean {
  return token.startsWith(API_KEY_PREFIX);
}

export async function newApiKey(): Promise<NewApiKey> {
  const salt = randomBytes(SALT_BYTES);
  const secret = randomBytes(SECRET_BYTES).toString('base64url');
  const { N, r, p } = SCRYPT_DEFAULTS;
  const derived = await scryptAsync(Buffer.from(secret), salt, KEY_BYTES, scryptOptions(N, r, p));
  return {
    key: `${API_KEY_PREFIX}${salt.toString('base64url')}.${secret}`,
    hash: `scrypt:${N}:${r}:${p}:${salt.toString('base64')}:${derived.toString('base64')}`,
  };
}

/** The id an API key's config entry is found by: its hash's salt, base64url. */
export function apiKeyIdOfHash(hash: string): string | undefined {
  const parsed = parseHash(hash);
  return parsed.kind === 'scrypt' ? parsed.salt.toString('base64url') : undefined;
}

/** What is wrong with a configured API key hash, or undefined. */
export function apiKeyHashProblem(hash: string): string | undefined {
  if (!hash.startsWith('scrypt:')) return 'expected an scrypt hash from `junction api-key` (scrypt:N:r:p:SALT:KEY), never the key itself';
  const problem = passwordHashProblem(hash);
  if (problem) return problem;
  return parseHash(hash).kind === 'scrypt' && (parseHash(hash) as { salt: Buffer }).salt.length !== SALT_BYTES
    ? `the salt must be ${SALT_BYTES} bytes: make keys with \`junction api-key\``
    : undefined;
}

/** The id and secret of a presented key, or undefined when it is not shaped like one. */
export function splitApiKey(key: string): { id: string; secret: string } | undefined {
  const m = ID.exec(key);
  return m ? { id: m[1]!, secret: m[2]! } : undefined;
}

/** Constant-time check of a presented secret against a configured hash. */
export async function verifyApiKeySecret(hash: string, secret: string): Promise<boolean> {
  const parsed = parseHash(hash);
  if (parsed.kind !== 'scrypt') return false;
  const derived = await scryptAsync(Buffer.from(secret), parsed.salt, parsed.key.length, scryptOptions(parsed.N, parsed.r, parsed.p));
  return timingSafeEqual(derived, parsed.key);
}
