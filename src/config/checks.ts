import { existsSync } from 'node:fs';
import path from 'node:path';
import { BUILTIN_TARGETS, RouteSchema } from './schema.js';
import { isRecord, type Reporter, type Segment } from './yaml-document.js';
import { keyProblem, patternProblem } from '../topic/rules.js';
import { authConfigIssues } from '../auth/config.js';
import type { Registry } from '../registry.js';

/**
 * Cross-references and rule sanity: what the schema cannot say. Runs on the raw data even when
 * the schema failed, so one run reports everything; every access is guarded for that reason.
 */
export function checkReferences(data: unknown, report: Reporter, baseDir: string, registry: Registry): void {
  if (!isRecord(data)) return;
  const targets = isRecord(data.targets) ? data.targets : {};
  const breakers = isRecord(data.breakers) ? data.breakers : {};
  const builtins: readonly string[] = BUILTIN_TARGETS;

  for (const [name, target] of Object.entries(targets)) {
    if (builtins.includes(name)) {
      report.at(['targets', name], `"${name}" is a built-in target and cannot be redefined; choose another name`, { onKey: true });
    }
    if (!isRecord(target)) continue;
    if (typeof target.breaker === 'string' && !Object.hasOwn(breakers, target.breaker)) {
      const names = Object.keys(breakers);
      report.at(['targets', name, 'breaker'], names.length > 0
        ? `unknown breaker "${target.breaker}"; expected one of: ${names.join(', ')}`
        : `unknown breaker "${target.breaker}"; no breakers are defined under breakers`);
    }
    const type = typeof target.type === 'string' ? registry.targetType(target.type) : undefined;
    for (const key of type?.paths ?? []) {
      const file = target[key];
      if (typeof file === 'string' && file !== '' && !existsSync(path.resolve(baseDir, file))) {
        report.at(['targets', name, key], `file not found: ${path.resolve(baseDir, file)}`, { warning: true });
      }
    }
  }

  const targetNames = [...Object.keys(targets).filter((n) => !builtins.includes(n)), ...builtins];
  const routes = Array.isArray(data.routes) ? data.routes : [];
  const firstByName = new Map<string, number>();
  const rules: Rule[] = [];
  routes.forEach((route: unknown, i) => {
    if (!isRecord(route)) return;
    if (typeof route.name === 'string') {
      const first = firstByName.get(route.name);
      if (first === undefined) firstByName.set(route.name, i);
      else report.at(['routes', i, 'name'], `duplicate route name "${route.name}"; routes[${first}] already uses it`);
    }
    const match = isRecord(route.match) ? route.match : undefined;
    const key = typeof match?.key === 'string' && match.key !== '' ? match.key : undefined;
    const keyIsValid = key !== undefined && patternProblem(key) === undefined;
    if (key !== undefined && !keyIsValid) report.at(['routes', i, 'match', 'key'], patternProblem(key)!);
    const headers = checkHeaders(match?.headers, ['routes', i, 'match', 'headers'], report);

    for (const list of ['to', 'fallback'] as const) {
      const refs: unknown = route[list];
      if (!Array.isArray(refs)) continue;
      refs.forEach((ref: unknown, j) => checkTargetRef(ref, ['routes', i, list, j], targetNames, keyIsValid ? key : undefined, report));
    }
    const to: unknown = route.to;
    if (route.mode === 'request' && Array.isArray(to) && to[0] === 'deadletter') {
      report.at(['routes', i, 'to', 0], 'mode: request answers with the first target\'s reply, but deadletter never replies: every request will time out', { warning: true });
    }
    if (key !== undefined && headers !== undefined) {
      rules.push({
        index: i,
        name: typeof route.name === 'string' ? route.name : `#${i}`,
        precedence: typeof route.priority === 'number' ? route.priority : DEFAULT_PRECEDENCE,
        continues: typeof route.continue === 'boolean' ? route.continue : DEFAULT_CONTINUE,
        match: matchSignature(key, match?.protocols, headers),
      });
    }
  });
  warnShadowed(rules, report);
  for (const issue of authConfigIssues(data.auth, data.listeners, baseDir)) report.at(issue.path, issue.message, { warning: issue.warning ?? false });
}

/** Lower-cased header names, reporting names that only differ by case; undefined if unusable. */
function checkHeaders(headers: unknown, at: Segment[], report: Reporter): Record<string, unknown> | undefined {
  if (headers === undefined) return {};
  if (!isRecord(headers)) return undefined;
  const lower: Record<string, unknown> = {};
  const original = new Map<string, string>();
  for (const [name, value] of Object.entries(headers)) {
    const folded = name.toLowerCase();
    const earlier = original.get(folded);
    if (earlier !== undefined) {
      report.at([...at, name], `header "${name}" repeats "${earlier}" (header names are case-insensitive)`, { onKey: true });
      continue;
    }
    original.set(folded, name);
    lower[folded] = value;
  }
  return lower;
}

const PLACEHOLDER = /\{(\d+)\}/g;

function checkTargetRef(ref: unknown, at: Segment[], targetNames: readonly string[], key: string | undefined, report: Reporter): void {
  if (typeof ref === 'string') {
    if (ref !== '' && !targetNames.includes(ref)) report.at(at, `unknown target "${ref}"; expected one of: ${targetNames.join(', ')}`);
    return;
  }
  if (!isRecord(ref) || typeof ref.publish !== 'string' || ref.publish === '') return;
  const template = ref.publish;
  if (key !== undefined) {
    const wildcards = key.split('/').filter((level) => level === '+' || level === '#').length;
    for (const m of template.matchAll(PLACEHOLDER)) {
      const n = Number(m[1]);
      if (n >= 1 && n <= wildcards) continue;
      report.at([...at, 'publish'], wildcards === 0
        ? `${m[0]} has nothing to refer to: match.key "${key}" has no wildcards`
        : `${m[0]} is out of range: match.key "${key}" has ${wildcards} wildcard${wildcards > 1 ? 's' : ''}, so use {1}${wildcards > 1 ? ` to {${wildcards}}` : ''}`);
    }
  }
  const literal = template.replace(PLACEHOLDER, 'x');
  if (/[+#]/.test(literal)) {
    report.at([...at, 'publish'], 'a publish key must not contain the wildcards + or #; use {1}, {2}… to insert the levels the match captured');
  } else {
    const problem = keyProblem(literal);
    if (problem) report.at([...at, 'publish'], problem);
  }
}

// The raw data has no defaults in it yet: a rule that leaves these out has the schema's.
const DEFAULT_PRECEDENCE: number = RouteSchema.properties.priority.default;
const DEFAULT_CONTINUE: boolean = RouteSchema.properties.continue.default;

interface Rule {
  index: number;
  name: string;
  precedence: number;
  continues: boolean;
  match: string;
}

function matchSignature(key: string, protocols: unknown, headers: Record<string, unknown>): string {
  const protocolList = Array.isArray(protocols) ? [...protocols].map(String).sort() : ['*'];
  const headerList = Object.entries(headers).map(([name, value]) => [name, String(value)]).sort();
  return JSON.stringify([key, protocolList, headerList]);
}

/** A rule whose exact match is taken first by a rule that stops matching can never run. */
function warnShadowed(rules: Rule[], report: Reporter): void {
  const order = [...rules].sort((a, b) => b.precedence - a.precedence || a.index - b.index);
  order.forEach((rule, position) => {
    const winner = order.slice(0, position).find((earlier) => !earlier.continues && earlier.match === rule.match);
    if (!winner) return;
    report.at(['routes', rule.index, 'match'],
      `rule "${rule.name}" is shadowed by rule "${winner.name}" (routes[${winner.index}]): same match, higher or equal precedence, and no continue: true`,
      { warning: true });
  });
}
