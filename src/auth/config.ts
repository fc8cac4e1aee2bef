import { existsSync } from 'node:fs';
import path from 'node:path';
import { patternProblem } from '../topic/rules.js';
import { ACL_ACTIONS, ANONYMOUS, ANY_PRINCIPAL, CLAIM_PLACEHOLDER, PRINCIPAL_PLACEHOLDER } from './acl.js';
import { apiKeyHashProblem } from './api-key.js';
import { passwordHashProblem } from './password.js';

export { ANONYMOUS, ANY_PRINCIPAL } from './acl.js';

export interface AuthIssue {
  /** key path under the config root, e.g. ['auth', 'users', 0, 'password'] */
  path: (string | number)[];
  message: string;
  warning?: boolean;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** A principal is substituted into key patterns, so it must be one whole key level. */
function principalProblem(name: string): string | undefined {
  if (name === ANY_PRINCIPAL || name === ANONYMOUS) return `"${name}" is reserved for ACL rules; choose another name`;
  if (/[/+#]/.test(name) || name.includes('\u0000')) return 'must not contain / + # or NUL: it is substituted into key patterns as one level';
  return undefined;
}

/**
 * What the schema cannot say about `auth:` and the listeners' credentials and TLS: hashes that
 * are not hashes, duplicates, unusable principals and ACL patterns, rules that never apply, a
 * JWT section without a key, mutual TLS without a CA. Runs on raw data, so every access is
 * guarded.
 */
export function authConfigIssues(auth: unknown, listeners: unknown = {}, baseDir = process.cwd()): AuthIssue[] {
  const issues: AuthIssue[] = [];
  listenerIssues(listeners, auth, baseDir, issues);
  if (!isRecord(auth)) return issues;
  const principals = new Set<string>();
  const roles = new Set<string>();
  const usernames = new Map<string, number>();
  const addRoles = (entry: Record<string, unknown>) => {
    if (Array.isArray(entry.roles)) for (const role of entry.roles) if (typeof role === 'string') roles.add(role);
  };
  const users = Array.isArray(auth.users) ? auth.users : [];
  users.forEach((user: unknown, i) => {
    if (!isRecord(user)) return;
    const at = ['auth', 'users', i];
    if (typeof user.username === 'string') {
      const first = usernames.get(user.username);
      if (first !== undefined) issues.push({ path: [...at, 'username'], message: `duplicate username "${user.username}"; auth.users[${first}] already has it` });
      else usernames.set(user.username, i);
    }
    if (typeof user.password === 'string') {
      const problem = passwordHashProblem(user.password);
      if (problem) issues.push({ path: [...at, 'password'], message: problem });
    }
    const principal = typeof user.principal === 'string' ? user.principal : user.username;
    if (typeof principal === 'string') {
      const problem = principalProblem(principal);
      if (problem) issues.push({ path: [...at, typeof user.principal === 'string' ? 'principal' : 'username'], message: `principal ${problem}` });
      principals.add(principal);
    }
    addRoles(user);
  });
  const keyIds = new Map<string, number>();
  const apiKeys = Array.isArray(auth.apiKeys) ? auth.apiKeys : [];
  apiKeys.forEach((entry: unknown, i) => {
    if (!isRecord(entry)) return;
    const at = ['auth', 'apiKeys', i];
    if (typeof entry.key === 'string') {
      const problem = apiKeyHashProblem(entry.key);
      if (problem) issues.push({ path: [...at, 'key'], message: problem });
      const first = keyIds.get(entry.key);
      if (first !== undefined) issues.push({ path: [...at, 'key'], message: `duplicate key; auth.apiKeys[${first}] already has it` });
      else keyIds.set(entry.key, i);
    }
    if (typeof entry.principal === 'string') {
      const problem = principalProblem(entry.principal);
      if (problem) issues.push({ path: [...at, 'principal'], message: `principal ${problem}` });
      principals.add(entry.principal);
    }
    addRoles(entry);
  });
  const jwt = auth.jwt;
  if (isRecord(jwt)) {
    const sources = ['secret', 'publicKey', 'jwks'].filter((key) => jwt[key] !== undefined);
    if (sources.length !== 1) issues.push({ path: ['auth', 'jwt'], message: sources.length === 0 ? 'give one of secret, publicKey or jwks' : `give one of secret, publicKey or jwks, not ${sources.join(' and ')}` });
    if (typeof jwt.publicKey === 'string' && !existsSync(path.resolve(baseDir, jwt.publicKey))) {
      issues.push({ path: ['auth', 'jwt', 'publicKey'], message: `file not found: ${path.resolve(baseDir, jwt.publicKey)}`, warning: true });
    }
  }
  const tokensNamePrincipals = isRecord(jwt) || listenerTakesCertificates(listeners);
  const rules = Array.isArray(auth.acl) ? auth.acl : [];
  if (!Array.isArray(auth.acl) && auth.anonymous !== true && (users.length > 0 || apiKeys.length > 0 || isRecord(jwt))) {
    issues.push({ path: ['auth'], message: 'no auth.acl and auth.anonymous is not true: every publish and subscribe is refused until acl rules allow them', warning: true });
  }
  rules.forEach((rule: unknown, i) => {
    if (!isRecord(rule)) return;
    const at = ['auth', 'acl', i];
    const principal = rule.principal;
    if ((principal === undefined) === (rule.role === undefined)) {
      issues.push({ path: at, message: 'a rule names whom it is for with exactly one of principal or role' });
    }
    if (typeof rule.role === 'string' && !roles.has(rule.role) && !isRecord(jwt)) {
      issues.push({ path: [...at, 'role'], message: `no user or API key has the role "${rule.role}" and no JWT can bring it: this rule never applies`, warning: true });
    }
    if (typeof principal === 'string' && principal !== ANY_PRINCIPAL && !principals.has(principal) && !tokensNamePrincipals) {
      if (principal === ANONYMOUS) {
        if (auth.anonymous !== true) issues.push({ path: [...at, 'principal'], message: 'this rule is for anonymous clients, but auth.anonymous is not true: it never applies', warning: true });
      } else {
        issues.push({ path: [...at, 'principal'], message: `no user has the principal "${principal}": this rule never applies`, warning: true });
      }
    }
    for (const list of ACL_ACTIONS) {
      const patterns: unknown = rule[list];
      if (!Array.isArray(patterns)) continue;
      patterns.forEach((pattern: unknown, j) => {
        if (typeof pattern !== 'string' || pattern === '') return;
        const filled = pattern.replaceAll(PRINCIPAL_PLACEHOLDER, 'x').replace(CLAIM_PLACEHOLDER, 'x');
        const unknownPlaceholder = /\{[^}]*\}/.exec(filled);
        const problem = unknownPlaceholder
          ? `unknown placeholder ${unknownPlaceholder[0]}; only ${PRINCIPAL_PLACEHOLDER} and {claim.NAME} are replaced`
          : patternProblem(filled);
        if (problem) issues.push({ path: [...at, list, j], message: problem });
        else if (pattern.includes(PRINCIPAL_PLACEHOLDER) && principal === ANONYMOUS) {
          issues.push({ path: [...at, list, j], message: `anonymous clients have no principal: a pattern with ${PRINCIPAL_PLACEHOLDER} never applies to them`, warning: true });
        }
      });
    }
  });
  return issues;
}

function listenerTakesCertificates(listeners: unknown): boolean {
  if (!isRecord(listeners)) return false;
  return Object.values(listeners).some((l) => isRecord(l) && isRecord(l.tls) && (l.tls.clientCert === 'request' || l.tls.clientCert === 'require'));
}

/** Mutual TLS needs a CA; credentials a listener names must be configured; TLS files should exist. */
function listenerIssues(listeners: unknown, auth: unknown, baseDir: string, issues: AuthIssue[]): void {
  if (!isRecord(listeners)) return;
  const a = isRecord(auth) ? auth : {};
  const configured: Record<string, boolean> = {
    anonymous: a.anonymous === true,
    password: Array.isArray(a.users) && a.users.length > 0,
    apiKey: Array.isArray(a.apiKeys) && a.apiKeys.length > 0,
    jwt: isRecord(a.jwt),
  };
  for (const [name, listener] of Object.entries(listeners)) {
    if (!isRecord(listener)) continue;
    const tls = isRecord(listener.tls) ? listener.tls : undefined;
    if (tls) {
      if ((tls.clientCert === 'request' || tls.clientCert === 'require') && tls.ca === undefined) {
        issues.push({ path: ['listeners', name, 'tls', 'ca'], message: `clientCert: ${String(tls.clientCert)} needs ca: the CA certificate(s) client certificates are checked against` });
      }
      for (const key of ['cert', 'key', 'ca']) {
        const file = tls[key];
        if (typeof file === 'string' && file !== '' && !existsSync(path.resolve(baseDir, file))) {
          issues.push({ path: ['listeners', name, 'tls', key], message: `file not found: ${path.resolve(baseDir, file)}`, warning: true });
        }
      }
    }
    if (!Array.isArray(listener.credentials)) continue;
    listener.credentials.forEach((kind: unknown, i) => {
      if (kind === 'certificate') {
        if (!tls || tls.clientCert === undefined || tls.clientCert === 'none') issues.push({ path: ['listeners', name, 'credentials', i], message: 'certificate needs tls.clientCert: request or require on this listener' });
      } else if (typeof kind === 'string' && configured[kind] === false) {
        issues.push({ path: ['listeners', name, 'credentials', i], message: `${kind} is not configured under auth: this listener lets no one in that way`, warning: true });
      }
    });
  }
}
