import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { GatewayError, SetupError } from '../errors.js';

/** `auth.jwt`, as loaded: exactly one of secret, publicKey (an absolute path) or jwks. */
export interface JwtConfig {
  secret?: string | undefined;
  publicKey?: string | undefined;
  jwks?: string | undefined;
  issuer?: string | undefined;
  audience?: string | undefined;
  algorithms?: string[] | undefined;
  /** ms of leeway on exp and nbf */
  clockTolerance: number;
  /** ms a fetched key set is used before it is fetched again */
  jwksCacheMaxAge: number;
  /** ms after a fetch during which an unknown key id does not fetch again */
  jwksCooldown: number;
  principalClaim: string;
  rolesClaim: string;
}

/** What a verified token says about its holder. */
export interface TokenClaims {
  principal: string;
  roles: string[];
  /** string and number claims, as text, for `{claim.NAME}` */
  claims: Record<string, string>;
  /** ms since epoch, from `exp` */
  expiresAt: number | undefined;
}

/** The secret and the key file are read once per loaded config (start and reload). */
type VerificationKey = Uint8Array | KeyObject | JWTVerifyGetKey;

/**
 * Verifies JWTs with jose: HS256/384/512 with a shared secret, RS, PS, ES and EdDSA with a public key from a
 * PEM file (SPKI or a certificate), or keys from a JWKS URL (jose caches the set, and fetches it
 * again for an unknown key id, at most once per cooldown, which is how keys rotate). `alg: none`
 * is never accepted. A refusal says why in words, never with the token.
 */
export class JwtVerifier {
  readonly #config: JwtConfig;
  readonly #key: VerificationKey;

  /** Throws SetupError naming the key to change when the key cannot be used. */
  constructor(config: JwtConfig) {
    this.#config = config;
    this.#key = verificationKey(config);
  }

  async verify(token: string, now = Date.now()): Promise<TokenClaims> {
    const config = this.#config;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.#key as Uint8Array, {
        ...(config.issuer !== undefined ? { issuer: config.issuer } : {}),
        ...(config.audience !== undefined ? { audience: config.audience } : {}),
        ...(config.algorithms !== undefined ? { algorithms: config.algorithms } : {}),
        clockTolerance: Math.round(config.clockTolerance / 1000),
        currentDate: new Date(now),
      }));
    } catch (err) {
      throw new GatewayError('unauthenticated', `JWT refused: ${refusalReason(err)}`);
    }
    const principal = claimText(payload[config.principalClaim]);
    if (principal === undefined) throw new GatewayError('unauthenticated', `JWT refused: no ${config.principalClaim} claim to name the principal`);
    const claims: Record<string, string> = {};
    for (const [name, value] of Object.entries(payload)) {
      const text = claimText(value);
      if (text !== undefined) claims[name] = text;
    }
    return { principal, roles: rolesOf(payload[config.rolesClaim]), claims, expiresAt: typeof payload.exp === 'number' ? payload.exp * 1000 : undefined };
  }
}

function verificationKey(config: JwtConfig): VerificationKey {
  if (config.secret !== undefined) return new TextEncoder().encode(config.secret);
  if (config.publicKey !== undefined) {
    let pem: string;
    try {
      pem = readFileSync(config.publicKey, 'utf8');
    } catch (err) {
      throw new SetupError('auth.jwt.publicKey', `cannot read ${config.publicKey}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    try {
      return createPublicKey(pem);
    } catch (err) {
      throw new SetupError('auth.jwt.publicKey', `${config.publicKey} holds no public key in PEM (SPKI or a certificate): ${(err as Error).message}`);
    }
  }
  if (config.jwks !== undefined) {
    return createRemoteJWKSet(new URL(config.jwks), { cacheMaxAge: config.jwksCacheMaxAge, cooldownDuration: config.jwksCooldown });
  }
  throw new SetupError('auth.jwt', 'give one of secret, publicKey or jwks');
}

/** jose's error, in words for the log and the client; never the token. */
function refusalReason(err: unknown): string {
  if (err instanceof errors.JWTExpired) return 'expired';
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return 'not yet valid (nbf)';
    if (err.claim === 'iat') return 'issued in the future (iat)';
    return `wrong ${err.claim} claim`;
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'bad signature';
  if (err instanceof errors.JWKSNoMatchingKey) return 'unknown key id (kid)';
  if (err instanceof errors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  if (err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid) return 'the key set (jwks) could not be fetched';
  if (err instanceof errors.JOSENotSupported) return 'unsupported algorithm or key';
  if (err instanceof errors.JWTInvalid || err instanceof errors.JWSInvalid) return 'malformed token';
  return 'cannot be verified';
}

function claimText(value: unknown): string | undefined {
  if (typeof value === 'string') return value === '' ? undefined : value;
  if (typeof value === 'number' && Number.isFinite(value)) return String(value);
  return undefined;
}

/** Roles: an array of strings, or a space-separated string (as OAuth's `scope`). */
function rolesOf(value: unknown): string[] {
  if (typeof value === 'string') return value.split(' ').filter((role) => role !== '');
  if (Array.isArray(value)) return value.filter((role): role is string => typeof role === 'string' && role !== '');
  return [];
}

/** A token with three base64url parts separated by dots, whose header is a JSON object. */
export function looksLikeJwt(token: string): boolean {
  return /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*$/.test(token);
}
