import { filterCovers, filterMatches, filtersIntersect, reservedKeyProblem } from '../topic/rules.js';

/** In an ACL pattern, replaced by the principal the rule is applied to. */
export const PRINCIPAL_PLACEHOLDER = '{principal}';
/** `{claim.NAME}`: replaced by the client's JWT claim NAME (a string or a number). */
export const CLAIM_PLACEHOLDER = /\{claim\.([A-Za-z0-9_.:-]+)\}/g;

/** ACL rule principals with a meaning of their own. */
export const ANY_PRINCIPAL = '*';
export const ANONYMOUS = 'anonymous';

/** What a client asks to do: publish to a key, subscribe to a filter, answer requests on a filter. */
export type AclAction = 'publish' | 'subscribe' | 'respond';
export const ACL_ACTIONS: readonly AclAction[] = ['publish', 'subscribe', 'respond'];

/** Who the ACL sees: a principal (undefined for anonymous), its roles, its claims. */
export interface Subject {
  principal: string | undefined;
  roles: readonly string[];
  /** claims usable in placeholders: strings, numbers as text */
  claims: Readonly<Record<string, string>>;
}

/** One `auth.acl` entry, as loaded. */
export interface AclRuleConfig {
  principal?: string | undefined;
  role?: string | undefined;
  effect: 'allow' | 'deny';
  publish?: string[] | undefined;
  subscribe?: string[] | undefined;
  respond?: string[] | undefined;
}

/** A decision and the reason for it, which `junction acl check` prints. */
export interface AclDecision {
  allowed: boolean;
  /** index in auth.acl of the rule that decided; undefined for a default or a reserved key */
  rule?: number;
  /** the pattern (placeholders filled in) that decided */
  pattern?: string;
  reason: string;
}

/**
 * A placeholder value must stay one key level: substituted into a pattern, a `/`, a wildcard
 * or NUL would widen or break it. A value that cannot be used makes its pattern not apply.
 */
export function levelProblem(value: string): string | undefined {
  if (value === '') return 'is empty';
  if (/[/+#]/.test(value) || value.includes('\u0000')) return 'contains / + # or NUL';
  return undefined;
}

/**
 * A pattern with its placeholders filled in for `subject`, or undefined when one of them has no
 * usable value (anonymous has no principal; a claim is missing or is not one level): such a
 * pattern does not apply, which for an allow rule grants nothing and for a deny rule refuses
 * nothing. Deny rules that must hold whatever the token says should not depend on claims.
 */
export function substitute(pattern: string, subject: Subject): string | undefined {
  let usable = true;
  let out = pattern;
  if (out.includes(PRINCIPAL_PLACEHOLDER)) {
    if (subject.principal === undefined || levelProblem(subject.principal)) return undefined;
    const principal = subject.principal;
    // A function, not the string: `$&` or `$$` in a name would be read as replacement patterns.
    out = out.replaceAll(PRINCIPAL_PLACEHOLDER, () => principal);
  }
  out = out.replace(CLAIM_PLACEHOLDER, (_whole, name: string) => {
    const value = subject.claims[name];
    if (value === undefined || levelProblem(value)) {
      usable = false;
      return '';
    }
    return value;
  });
  return usable ? out : undefined;
}

/** Whether a rule is about this subject: by principal ("*" = every authenticated one) or by role. */
export function ruleApplies(rule: AclRuleConfig, subject: Subject): boolean {
  if (rule.role !== undefined) return subject.roles.includes(rule.role);
  if (subject.principal === undefined) return rule.principal === ANONYMOUS;
  return rule.principal === ANY_PRINCIPAL || rule.principal === subject.principal;
}

/**
 * Whether a pattern of a rule concerns what is asked. A publish: the pattern matches the key. A
 * subscription or a responder's filter: an allow pattern must cover every key the filter can
 * match; a deny pattern refuses a filter that could match any key it names.
 */
function concerns(action: AclAction, effect: 'allow' | 'deny', pattern: string, target: string): boolean {
  if (action === 'publish') return filterMatches(pattern, target);
  return effect === 'allow' ? filterCovers(pattern, target) : filtersIntersect(pattern, target);
}

/**
 * The ACL: rules in file order, the first one that applies to the subject and whose pattern
 * concerns the key or filter decides (allow or deny); when none does, the answer is no.
 * Reserved keys (`$SYS/`, inboxes) are refused before any rule.
 */
export function decide(rules: readonly AclRuleConfig[], subject: Subject, action: AclAction, target: string): AclDecision {
  if (action === 'publish') {
    const reserved = reservedKeyProblem(target);
    if (reserved) return { allowed: false, reason: `reserved key: ${reserved}` };
  }
  for (let i = 0; i < rules.length; i++) {
    const rule = rules[i]!;
    const patterns = rule[action];
    if (patterns === undefined || !ruleApplies(rule, subject)) continue;
    const effect = rule.effect;
    for (const written of patterns) {
      const pattern = substitute(written, subject);
      if (pattern === undefined || !concerns(action, effect, pattern, target)) continue;
      return { allowed: effect === 'allow', rule: i, pattern, reason: `auth.acl[${i}] ${effect === 'allow' ? 'allows' : 'denies'} ${action} ${pattern}` };
    }
  }
  return { allowed: false, reason: `no rule of auth.acl allows ${action} ${target}` };
}
