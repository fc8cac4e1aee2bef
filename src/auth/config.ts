import { patternProblem } from '../topic/rules.js';
import { PRINCIPAL_PLACEHOLDER } from './acl.js';
import { passwordHashProblem } from './password.js';

/** ACL rule principals with a meaning of their own. */
export const ANY_PRINCIPAL = '*';
export const ANONYMOUS = 'anonymous';

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
 * What the schema cannot say about `auth:`: hashes that are not hashes, duplicate users,
 * unusable principals and ACL patterns. Runs on raw data, so every access is guarded.
 */
export function authConfigIssues(auth: unknown): AuthIssue[] {
  if (!isRecord(auth)) return [];
  const issues: AuthIssue[] = [];
  const principals = new Set<string>();
  const usernames = new Map<string, number>();
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
  });
  const rules = Array.isArray(auth.acl) ? auth.acl : [];
  rules.forEach((rule: unknown, i) => {
    if (!isRecord(rule)) return;
    const at = ['auth', 'acl', i];
    const principal = rule.principal;
    if (typeof principal === 'string' && principal !== ANY_PRINCIPAL && !principals.has(principal)) {
      if (principal === ANONYMOUS) {
        if (auth.anonymous !== true) issues.push({ path: [...at, 'principal'], message: 'this rule is for anonymous clients, but auth.anonymous is not true: it never applies', warning: true });
      } else {
        issues.push({ path: [...at, 'principal'], message: `no user has the principal "${principal}": this rule never applies`, warning: true });
      }
    }
    for (const list of ['publish', 'subscribe'] as const) {
      const patterns: unknown = rule[list];
      if (!Array.isArray(patterns)) continue;
      patterns.forEach((pattern: unknown, j) => {
        if (typeof pattern !== 'string' || pattern === '') return;
        const unknownPlaceholder = /\{[^}]*\}/.exec(pattern.replaceAll(PRINCIPAL_PLACEHOLDER, ''));
        const problem = unknownPlaceholder
          ? `unknown placeholder ${unknownPlaceholder[0]}; only ${PRINCIPAL_PLACEHOLDER} is replaced`
          : patternProblem(pattern.replaceAll(PRINCIPAL_PLACEHOLDER, 'x'));
        if (problem) issues.push({ path: [...at, list, j], message: problem });
        else if (pattern.includes(PRINCIPAL_PLACEHOLDER) && principal === ANONYMOUS) {
          issues.push({ path: [...at, list, j], message: `anonymous clients have no principal: a pattern with ${PRINCIPAL_PLACEHOLDER} never applies to them`, warning: true });
        }
      });
    }
  });
  return issues;
}
